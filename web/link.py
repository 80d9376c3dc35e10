"""/link: a person types the code a device shows, checks which device asks,
and approves or denies it (RFC 8628 §3.3 and §5.4).

A code from a QR code (?code=) only fills the form: every approval passes the
confirm page, where the person sees the device and compares the code.

Wrong codes are limited per account and per client address (RFC 8628 §5.1,
web/code_limits.py): over a limit, an entry is answered 429 before the code is
looked up. The control API (the CLI on the hub itself) is not limited.

/link/qr shows a QR code of this page's own address, so someone at a computer
can open the hub on the phone in their hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from ipaddress import ip_address
from typing import cast
from urllib.parse import urlsplit

from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from hub.core import codes
from hub.core.origin import Origin
from hub.core.rate_limits import wait_words
from hub.errors import LinkDecisionError, LinkHubError
from hub.services.activity import ActivityKind
from hub.services.links import DECISION_MESSAGES, CodeLookup, CodeStatus
from web.auth import login_required
from web.code_limits import Refused, WrongCodeLimits
from web.qr import qr_svg
from web.services import EXTENSION_KEY, WebServices, services

bp = Blueprint("link", __name__)

# Longer than any code with separators; anything longer is not worth echoing back.
MAX_TYPED = 32

HTTP_STATUS: dict[str, int] = {
    CodeStatus.MALFORMED: HTTPStatus.BAD_REQUEST,
    CodeStatus.UNKNOWN: HTTPStatus.NOT_FOUND,
    CodeStatus.EXPIRED: HTTPStatus.GONE,
    CodeStatus.USED: HTTPStatus.CONFLICT,
    CodeStatus.USED_BY_OTHER_ACCOUNT: HTTPStatus.CONFLICT,
    CodeStatus.DENIED: HTTPStatus.CONFLICT,
}


def status_for(reason: str) -> int:
    """HTTP status for a code that cannot be decided; shared with the control API."""
    return HTTP_STATUS.get(reason, HTTPStatus.CONFLICT)


# Wrong code entries (RFC 8628 §5.1): counted per account and per address by
# web/code_limits.py; docs/security.md works out what they leave a guesser.
CODE_LIMITS_KEY = "linkhub.wrong_codes"
TOO_MANY_WRONG_CODES = "Too many wrong codes. Try again in {wait}."
THROTTLED = "too_many_wrong_codes"

Page = tuple[str, int] | tuple[str, int, dict[str, str]]


@bp.record_once
def _install_code_limits(state: BlueprintSetupState) -> None:
    # The counts live with the app, not in a module global: each app (and each
    # test's app) starts with its own. create_app installs the services first.
    web_services = cast(WebServices, state.app.extensions[EXTENSION_KEY])
    state.app.extensions[CODE_LIMITS_KEY] = WrongCodeLimits(web_services.limits, web_services.limits_clock)


def code_limits() -> WrongCodeLimits:
    """The wrong-code counts of the app handling the current request."""
    return cast(WrongCodeLimits, current_app.extensions[CODE_LIMITS_KEY])


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


def _entered(code: str) -> CodeLookup | Page:
    """Look a typed code up, unless this account or address is over its
    wrong-code limit: then the answer is 429 and the code is not looked up."""
    account_id, address = g.account.id, request.remote_addr
    checked = code_limits().enter(account_id, address, lambda: services().links.lookup_code(code, account_id))
    if isinstance(checked, Refused):
        body, status = _form(
            code,
            status=THROTTLED,
            message=TOO_MANY_WRONG_CODES.format(wait=wait_words(checked.retry_after_s)),
            http=HTTPStatus.TOO_MANY_REQUESTS,
        )
        return body, status, {"Retry-After": str(checked.retry_after_s)}  # RFC 6585 §4
    if checked.wrong:
        # Counted entries are well-formed codes: the canonical form is the detail.
        shown = codes.display(codes.normalise(code) or code)
        detail = f"{shown} ({checked.found.status})"
        activity = services().activity
        activity.record(ActivityKind.CODE_ENTRY_FAILED, account_id, address=address, detail=detail)
        if checked.limit_reached:
            activity.record(ActivityKind.CODE_ENTRY_THROTTLED, account_id, address=address, detail=detail)
    return checked.found


@bp.post("/link")
@login_required
def lookup() -> Page:
    code = _typed_code()
    found = _entered(code)
    if not isinstance(found, CodeLookup):
        return found
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
def decide() -> Page:
    code = _typed_code()
    # A decision names a code too: guessing by posting here straight away is
    # counted (and refused over a limit) like guessing on the form.
    entered = _entered(code)
    if not isinstance(entered, CodeLookup):
        return entered
    action = request.form.get("action")
    links = services().links
    try:
        if action == "approve":
            device = links.approve(code, g.account.id, origin=Origin.WEB, address=request.remote_addr)
            return render_template("linked.html", device=device), 200
        if action == "deny":
            denied = links.deny(code, g.account.id, origin=Origin.WEB, address=request.remote_addr)
            return render_template("denied.html", req=denied), 200
    except LinkDecisionError as exc:
        if exc.reason == CodeStatus.USED:
            # Two people racing for one code: the loser learns it was not their account.
            found = links.lookup_code(code, g.account.id)
            if found.status is CodeStatus.USED_BY_OTHER_ACCOUNT:
                return _form(
                    code,
                    status=found.status,
                    message=DECISION_MESSAGES[found.status],
                    http=status_for(found.status),
                )
        return _form(code, status=exc.reason, message=str(exc), http=status_for(exc.reason))
    except LinkHubError:
        # E.g. the broker did not confirm the device's credentials: nothing was
        # stored, the code is still pending, so trying again is safe.
        return render_template("unavailable.html", code=code), HTTPStatus.SERVICE_UNAVAILABLE
    return _form(code, status="no_action", message="Choose Approve or Deny.", http=HTTPStatus.BAD_REQUEST)


def _is_loopback(url: str) -> bool:
    """Whether the address in the browser's bar names this computer only ("localhost",
    127.x, ::1): a phone that scans it would look for the hub on itself."""
    name = urlsplit(url).hostname or ""
    if name == "localhost":
        return True
    try:
        return ip_address(name).is_loopback
    except ValueError:
        return False


@bp.get("/link/qr")
@login_required
def link_qr() -> tuple[str, int]:
    # The address the person is using now: it is the one that reaches this hub from here.
    url = url_for("link.link_form", _external=True)
    return (
        render_template(
            "qr.html",
            url=url,
            svg=qr_svg(url, label=f"QR code for {url}"),
            loopback=_is_loopback(url),
        ),
        200,
    )
