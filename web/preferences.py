"""/settings: the signed-in account's preferences, which every device of the
account receives (a device's own setting of the same name wins on that device).

One key per form post: a person changes one thing at a time, and a refusal
then names exactly what was wrong with it.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.core.origin import Origin
from hub.errors import SettingsRefused
from web.auth import login_required
from web.services import services
from web.values import show_value, typed_change

bp = Blueprint("preferences", __name__)


def _page(*, key: str = "", value: str = "", error: str | None = None, http: int = 200) -> tuple[str, int]:
    current = services().settings.preferences(g.account.id)
    rows = [(name, show_value(current.document[name])) for name in sorted(current.document)]
    return (
        render_template(
            "settings.html", rows=rows, version=current.version, key=key, value=value, error=error
        ),
        http,
    )


@bp.get("/settings")
@login_required
def settings_page() -> tuple[str, int]:
    return _page()


@bp.post("/settings")
@login_required
def change_preference() -> BaseResponse | tuple[str, int]:
    settings = services().settings
    before = settings.preferences(g.account.id).version
    try:
        after = settings.set_preferences(g.account.id, typed_change(request.form), origin=Origin.WEB)
    except SettingsRefused as exc:
        # What was typed stays in the form, to be corrected.
        return _page(
            key=request.form.get("key", ""),
            value=request.form.get("value", ""),
            error=str(exc),
            http=HTTPStatus.BAD_REQUEST,
        )
    if after.version == before:
        flash("Nothing changed.")
    else:
        flash(f"Saved as version {after.version}. Your devices get the change when they are online.")
    # Redirect after a post: reloading the page must not send the change again.
    return redirect(url_for("preferences.settings_page"), HTTPStatus.SEE_OTHER)
