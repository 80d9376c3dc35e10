"""/settings: the signed-in account's preferences, which every device of the
account receives (a device's own setting of the same name wins on that device).

The preferences the hub knows by name (time zone, temperature unit, locale,
theme: hub/core/preferences.py) have proper controls and are checked against
their choices; anything else is a custom setting, typed as a name and a value
(JSON validated on the spot, web/values.py). The time zone also sets how these
pages show times (web/timefmt.py).
"""

from __future__ import annotations

import functools
import zoneinfo
from http import HTTPStatus

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from hub.core import preferences as known
from hub.core.oauth import SCOPE_WORDS
from hub.core.origin import Origin
from hub.core.settings_merge import JsonObject
from hub.errors import AppRefused, LinkHubError, SettingsRefused
from hub.services.apps import AppView
from hub.services.home_assistant import HomeAssistantLogin
from web.auth import login_required
from web.pending import Pending
from web.services import services
from web.values import readable, show_value, typed_change

bp = Blueprint("preferences", __name__)

# Home Assistant's login, once made, is shown on /settings for this long (a Reload
# shows it again), kept in this process behind a token in the session: never in
# the cookie or a URL (web/pending.py).
HOME_ASSISTANT_LOGIN_SHOWN_S = 600.0
_LOGIN_KEY = "home_assistant_login_token"


@functools.cache
def time_zones() -> tuple[str, ...]:
    """The system's zoneinfo names (the tzdata the hub's OS keeps up to date), sorted."""
    return tuple(sorted(zoneinfo.available_timezones()))


def _page(
    *,
    key: str = "",
    value: str = "",
    error: str | None = None,
    chosen: dict[str, str] | None = None,
    current: JsonObject | None = None,
    app_form: dict[str, str] | None = None,
    http: int = 200,
) -> tuple[str, int]:
    if current is None:
        current = services().settings.preferences(g.account.id).document
    custom = [(name, readable(current[name])) for name in sorted(current) if name not in known.KNOWN_KEYS]
    values = {pref.key: str(current.get(pref.key, "")) for pref in known.KNOWN} | (chosen or {})
    return (
        render_template(
            "settings.html",
            known=known.KNOWN,
            values=values,
            zones=time_zones(),
            rows=custom,
            key=key,
            value=value,
            error=error,
            home_assistant=services().home_assistant_login is not None and g.account.is_owner,
            home_assistant_login=_shown_login(),
            apps=_registered_apps(),
            scope_words=SCOPE_WORDS,
            app_form=app_form or {},
        ),
        http,
    )


def _registered_apps() -> list[AppView] | None:
    """The registered apps, for the owner; None hides the section."""
    apps = services().apps
    return apps.apps() if apps is not None and g.account.is_owner else None


@bp.post("/settings/apps")
@login_required
def register_app() -> BaseResponse | tuple[str, int]:
    """The owner registers an app: the confirm page then shows its name, not "unverified"."""
    apps = services().apps
    if apps is None or not g.account.is_owner:
        abort(HTTPStatus.NOT_FOUND)
    client_id, name = request.form.get("client_id", "").strip(), request.form.get("name", "").strip()
    scopes = tuple(request.form.getlist("scope"))
    try:
        app = apps.register(client_id, name, scopes)
    except AppRefused as exc:
        form = {"client_id": client_id[:128], "name": name[:64], "scopes": " ".join(scopes)}
        return _page(error=f"The app was not registered: {exc}", app_form=form, http=HTTPStatus.BAD_REQUEST)
    flash(f"{app.name} is registered: its requests show its name.")
    return redirect(url_for("preferences.settings_page") + "#apps", HTTPStatus.SEE_OTHER)


@bp.post("/settings/apps/remove")
@login_required
def remove_app() -> BaseResponse:
    apps = services().apps
    if apps is None or not g.account.is_owner:
        abort(HTTPStatus.NOT_FOUND)
    try:
        apps.remove(request.form.get("client_id", ""))
    except AppRefused:
        flash("That app was not registered (any more).")
    else:
        flash("The app is no longer registered. Apps already linked with it stay linked until unlinked.")
    return redirect(url_for("preferences.settings_page") + "#apps", HTTPStatus.SEE_OTHER)


def _logins() -> Pending[tuple[int, HomeAssistantLogin]]:
    found: Pending[tuple[int, HomeAssistantLogin]] | None = current_app.extensions.get(_LOGIN_KEY)
    if found is None:
        found = current_app.extensions[_LOGIN_KEY] = Pending(HOME_ASSISTANT_LOGIN_SHOWN_S, services().clock)
    return found


def _shown_login() -> HomeAssistantLogin | None:
    found = _logins().get(session.get(_LOGIN_KEY))
    return found[1] if found is not None and found[0] == g.account.id else None


@bp.post("/settings/home-assistant")
@login_required
def make_home_assistant_login() -> BaseResponse | tuple[str, int]:
    """The owner makes Home Assistant's broker login (a new password each time:
    the one before stops working), shown after the redirect."""
    make = services().home_assistant_login
    if make is None or not g.account.is_owner:
        abort(HTTPStatus.NOT_FOUND)
    try:
        login = make()
    except LinkHubError as exc:
        return _page(error=f"The login was not made: {exc}", http=HTTPStatus.SERVICE_UNAVAILABLE)
    logins = _logins()
    logins.discard(session.get(_LOGIN_KEY))
    session[_LOGIN_KEY] = logins.put((g.account.id, login))
    flash("Home Assistant's login is made. Type it into Home Assistant's MQTT integration.")
    return redirect(url_for("preferences.settings_page") + "#home-assistant", HTTPStatus.SEE_OTHER)


@bp.get("/settings")
@login_required
def settings_page() -> tuple[str, int]:
    editing = request.args.get("edit", "")
    current = services().settings.preferences(g.account.id).document
    if editing in current and editing not in known.KNOWN_KEYS:
        return _page(key=editing, value=show_value(current[editing]), current=current)
    return _page(current=current)


def _saved(change: JsonObject) -> BaseResponse | tuple[str, int]:
    settings = services().settings
    before = settings.preferences(g.account.id).version
    after = settings.set_preferences(g.account.id, change, origin=Origin.WEB)
    if after.version == before:
        flash("Nothing changed.")
    else:
        flash("Saved. Your devices get the change now, or when they next connect.")
    # Redirect after a post: reloading the page must not send the change again.
    return redirect(url_for("preferences.settings_page"), HTTPStatus.SEE_OTHER)


@bp.post("/settings/preferences")
@login_required
def change_known() -> BaseResponse | tuple[str, int]:
    try:
        return _saved(known.checked_known(request.form, time_zones()))
    except SettingsRefused as exc:
        chosen = {pref.key: request.form.get(pref.key, "")[:64] for pref in known.KNOWN}
        return _page(error=str(exc), chosen=chosen, http=HTTPStatus.BAD_REQUEST)


@bp.post("/settings")
@login_required
def change_preference() -> BaseResponse | tuple[str, int]:
    try:
        change = typed_change(request.form)
        if request.form.get("action") != "remove" and next(iter(change)) in known.KNOWN_KEYS:
            raise SettingsRefused("invalid_request", "Set that one with its own control above.")
        return _saved(change)
    except SettingsRefused as exc:
        # What was typed stays in the form, to be corrected.
        return _page(
            key=request.form.get("key", ""),
            value=request.form.get("value", ""),
            error=str(exc),
            http=HTTPStatus.BAD_REQUEST,
        )
