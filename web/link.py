"""/link: a person types the code a device shows, checks which device asks,
and approves or denies it (RFC 8628 §3.3 and §5.4).

A code from a QR code (?code=) only fills the form: every approval passes the
confirm page, where the person sees the device and compares the code.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus

from flask import Blueprint, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.errors import LinkDecisionError, LinkHubError
from hub.link_service import DECISION_MESSAGES, CodeStatus
from web.auth import login_required
from web.services import services

bp = Blueprint("link", __name__)

# Longer than any code with separators; anything longer is not worth echoing back.
MAX_TYPED = 32

HTTP_STATUS: dict[str, int] = {
    CodeStatus.MALFORMED: HTTPStatus.BAD_REQUEST,
    CodeStatus.UNKNOWN: HTTPStatus.NOT_FOUND,
    CodeStatus.EXPIRED: HTTPStatus.GONE,
    CodeStatus.USED: HTTPStatus.CONFLICT,
    CodeStatus.DENIED: HTTPStatus.CONFLICT,
}


def status_for(reason: str) -> int:
    """HTTP status for a code that cannot be decided; shared with the control API."""
    return HTTP_STATUS.get(reason, HTTPStatus.CONFLICT)


def _typed_code(source: Mapping[str, str] | None = None) -> str:
    return (request.form if source is None else source).get("code", "").strip()[:MAX_TYPED]


def _form(
    code: str = "", *, status: str | None = None, message: str | None = None, http: int = 200
) -> tuple[str, int]:
    return render_template("link.html", code=code, status=status, message=message), http


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("link.link_form"))


@bp.get("/link")
@login_required
def link_form() -> tuple[str, int]:
    return _form(_typed_code(request.args))


@bp.post("/link")
@login_required
def lookup() -> tuple[str, int]:
    code = _typed_code()
    found = services().links.lookup_code(code)
    if found.status is CodeStatus.PENDING and found.request is not None:
        return render_template("confirm.html", req=found.request), 200
    return _form(
        code,
        status=found.status,
        message=DECISION_MESSAGES[found.status],
        http=status_for(found.status),
    )


@bp.post("/link/decide")
@login_required
def decide() -> tuple[str, int]:
    code = _typed_code()
    action = request.form.get("action")
    links = services().links
    try:
        if action == "approve":
            device = links.approve(code, g.account.id)
            return render_template("linked.html", device=device), 200
        if action == "deny":
            denied = links.deny(code, g.account.id)
            return render_template("denied.html", req=denied), 200
    except LinkDecisionError as exc:
        return _form(code, status=exc.reason, message=str(exc), http=status_for(exc.reason))
    except LinkHubError:
        # E.g. the broker did not confirm the device's credentials: nothing was
        # stored, the code is still pending, so trying again is safe.
        return render_template("unavailable.html", code=code), HTTPStatus.SERVICE_UNAVAILABLE
    return _form(code, status="no_action", message="Choose Approve or Deny.", http=HTTPStatus.BAD_REQUEST)
