"""/link: a person picks a waiting device or types the code it shows, checks
which device asks, and approves or denies it (RFC 8628 §3.3 and §5.4); then the
page follows the device until it is connected with its settings.

Every approval passes the confirm page, where the person sees the device and
compares the code: a code from a QR code (?code=) only fills the form, and a
device picked from the list of waiting ones shows its code there too, so a
neighbour's device is not approved by mistake.

Each successful post redirects (post/redirect/get): the confirm page, "Done"
and "Denied" are pages that Back and Reload show again without doing anything.

Wrong codes are limited per account and per client address (RFC 8628 §5.1,
web/code_limits.py): over a limit, an entry is answered 429 before the code is
looked up, and the page warns when few tries are left. The control API (the
CLI on the hub itself) is not limited.

/link/qr shows a QR code of this page's own address, so someone at a computer
can open the hub on the phone in their hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus
from ipaddress import ip_address
from typing import Any, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.blueprints import BlueprintSetupState
from werkzeug.wrappers import Response as BaseResponse

from hub.core import codes
from hub.core.oauth import SCOPE_WORDS
from hub.core.origin import Origin
from hub.core.rate_limits import wait_words
from hub.errors import AppRefused, LinkDecisionError, LinkHubError
from hub.services.activity import ActivityKind
from hub.services.apps import APP_DECISION_MESSAGES, AppCodeLookup, AppRequestView
from hub.services.links import DECISION_MESSAGES, CodeLookup, CodeStatus, DeviceView, LinkRequestView
from web.auth import login_required
from web.code_limits import Refused, WrongCodeLimits
from web.qr import qr_svg
from web.services import EXTENSION_KEY, WebServices, services
from web.timefmt import ago, remaining

bp = Blueprint("link", __name__)

# Room for a pasted sentence around the code ("Your code: BCDF-GHJK"); longer is not worth reading.
MAX_TYPED = 64

HTTP_STATUS: dict[str, int] = {
    CodeStatus.MALFORMED: HTTPStatus.BAD_REQUEST,
    CodeStatus.UNKNOWN: HTTPStatus.NOT_FOUND,
    CodeStatus.EXPIRED: HTTPStatus.GONE,
    CodeStatus.USED: HTTPStatus.CONFLICT,
    CodeStatus.USED_BY_OTHER_ACCOUNT: HTTPStatus.CONFLICT,
    CodeStatus.USED_BY_YOU: HTTPStatus.CONFLICT,
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
# From this many tries left, a wrong code's message says how many remain.
WARN_AT_TRIES_LEFT = 3

# After Approve the page follows the device (linked.html). A device that has
# not connected this long after its approval is said to be late, with what to
# try; one connected but not reporting its settings, likewise.
CONNECT_EXPECTED_S = 60.0
SYNC_EXPECTED_S = 60.0

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
    return (
        render_template(
            "link.html",
            code=code,
            status=status,
            message=message,
            waiting=_waiting(),
            waiting_list=services().waiting_list,
        ),
        http,
    )


def _waiting() -> list[dict[str, Any]]:
    """The waiting requests (devices' and apps') as the list shows them; none when the list is off."""
    if not services().waiting_list:
        return []
    apps = services().apps
    waiting = [_waiting_json(req) for req in services().links.waiting()]
    return waiting + [_waiting_app_json(req) for req in (apps.waiting() if apps else [])]


def _waiting_app_json(req: AppRequestView) -> dict[str, Any]:
    now = services().clock()
    return {
        "name": app_label(req),
        "model": "App",
        "address": req.address,
        "asked": ago(req.requested_at_s, now),
        "time_left": remaining(req.expires_at_s, now),
        "confirm_url": url_for("link.confirm_page", code=req.user_code),
    }


def app_label(req: AppRequestView) -> str:
    """An app's registered name, or its client_id marked as not checked by anyone."""
    return req.app_name if req.app_name is not None else f"{req.client_id} (unverified)"


def _look_up(code: str, account_id: int) -> CodeLookup | AppCodeLookup:
    """A code names a device's request or an app's (never both: apps' codes are
    made unlike any waiting device's)."""
    found = services().links.lookup_code(code, account_id)
    apps = services().apps
    if found.status is CodeStatus.UNKNOWN and apps is not None:
        app = apps.lookup_code(code, account_id)
        if app.status is not CodeStatus.UNKNOWN:
            return app
    return found


def _waiting_json(req: LinkRequestView) -> dict[str, Any]:
    """One waiting request as the list shows it; the same for the page and its live refresh."""
    now = services().clock()
    return {
        "name": req.device_name,
        "model": req.device_model,
        "address": req.device_address,
        "asked": ago(req.requested_at_s, now),
        "time_left": remaining(req.expires_at_s, now),
        "confirm_url": url_for("link.confirm_page", code=req.user_code),
    }


@bp.get("/")
def index() -> BaseResponse:
    return redirect(url_for("link.link_form"))


@bp.get("/link")
@login_required
def link_form() -> tuple[str, int]:
    return _form(_typed_code(request.args))


@bp.get("/link/waiting.json")
@login_required
def waiting_json() -> BaseResponse:
    """The live list's refresh (static/link.js polls it): small, so a poll every
    few seconds costs the hub's few web threads little (docs/performance.md)."""
    if not services().waiting_list:
        abort(HTTPStatus.NOT_FOUND)
    return jsonify(waiting=_waiting())


def _entered(typed: str) -> CodeLookup | AppCodeLookup | Page:
    """Look a typed code up, unless this account or address is over its
    wrong-code limit: then the answer is 429 and the code is not looked up."""
    account_id, address = g.account.id, request.remote_addr
    code = codes.find_in(typed) or typed
    checked = code_limits().enter(account_id, address, lambda: _look_up(code, account_id))
    if isinstance(checked, Refused):
        body, status = _form(
            typed,
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


def _refusal(typed: str, found: CodeLookup | AppCodeLookup) -> Page:
    """The form again, saying why this code cannot be decided (and how many tries are left)."""
    if found.status is CodeStatus.MALFORMED:
        message = codes.why_not(typed)
    else:
        messages = APP_DECISION_MESSAGES if isinstance(found, AppCodeLookup) else DECISION_MESSAGES
        message = messages[found.status]
        left = code_limits().tries_left(g.account.id, request.remote_addr)
        if found.status is CodeStatus.USED_BY_YOU or left > WARN_AT_TRIES_LEFT:
            pass
        elif left == 0:
            message += " That was the last try: codes are refused for a while now, even the right one."
        else:
            tries = "1 more wrong code" if left == 1 else f"{left} more wrong codes"
            message += f" After {tries}, codes are refused for a while, even the right one."
    return _form(typed, status=found.status, message=message, http=status_for(found.status))


@bp.post("/link")
@login_required
def lookup() -> BaseResponse | Page:
    typed = _typed_code()
    found = _entered(typed)
    if not isinstance(found, CodeLookup | AppCodeLookup):
        return found
    if found.status is CodeStatus.PENDING and found.request is not None:
        # Post/redirect/get: Back and Reload on the confirm page post nothing.
        return redirect(url_for("link.confirm_page", code=found.request.user_code), HTTPStatus.SEE_OTHER)
    return _to_your_device(found) or _refusal(typed, found)


def _to_your_device(found: CodeLookup | AppCodeLookup) -> BaseResponse | None:
    """A code this account already used (Back or Reload after Approve, or typed
    again) leads to the device or app it linked: not an error, not a wrong code."""
    if found.status is not CodeStatus.USED_BY_YOU or found.request is None:
        return None
    if isinstance(found, AppCodeLookup):
        return redirect(url_for("link.app_linked_page", code=found.request.user_code), HTTPStatus.SEE_OTHER)
    if found.request.device_id:
        return redirect(url_for("link.linked_page", device_id=found.request.device_id), HTTPStatus.SEE_OTHER)
    return None


@bp.get("/link/confirm")
@login_required
def confirm_page() -> BaseResponse | Page:
    """The confirm step, for a typed code, a QR code's or a device picked from the
    list. Looked up and counted like a typed code: a URL is no way around the limit."""
    typed = _typed_code(request.args)
    found = _entered(typed)
    if not isinstance(found, CodeLookup | AppCodeLookup):
        return found
    if found.status is CodeStatus.PENDING and isinstance(found, AppCodeLookup) and found.request is not None:
        req = found.request
        return render_template(
            "confirm_app.html",
            req=req,
            app_name=app_label(req),
            scopes=[SCOPE_WORDS[scope] for scope in req.scopes if scope in SCOPE_WORDS],
            now_s=services().clock(),
        ), 200
    if found.status is CodeStatus.PENDING and found.request is not None:
        return render_template("confirm.html", req=found.request, now_s=services().clock()), 200
    return _to_your_device(found) or _refusal(typed, found)


@bp.post("/link/decide")
@login_required
def decide() -> BaseResponse | Page:
    typed = _typed_code()
    # A decision names a code too: guessing by posting here straight away is
    # counted (and refused over a limit) like guessing on the form.
    entered = _entered(typed)
    if isinstance(entered, AppCodeLookup):
        return _decide_app(typed, entered)
    if not isinstance(entered, CodeLookup):
        return entered
    code = codes.find_in(typed) or typed
    action = request.form.get("action")
    links = services().links
    try:
        if action == "approve":
            device = links.approve(code, g.account.id, origin=Origin.WEB, address=request.remote_addr)
            return redirect(url_for("link.linked_page", device_id=device.device_id), HTTPStatus.SEE_OTHER)
        if action == "deny":
            denied = links.deny(code, g.account.id, origin=Origin.WEB, address=request.remote_addr)
            flash(f"{denied.device_name} ({denied.device_model}) was not linked.")
            return redirect(url_for("link.denied_page"), HTTPStatus.SEE_OTHER)
    except LinkDecisionError as exc:
        if exc.reason == CodeStatus.USED:
            # Two people racing for one code: the loser learns whose it was.
            found = links.lookup_code(code, g.account.id)
            yours = _to_your_device(found)
            if yours is not None:
                return yours
            if found.status is CodeStatus.USED_BY_OTHER_ACCOUNT:
                return _refusal(typed, found)
        return _form(typed, status=exc.reason, message=str(exc), http=status_for(exc.reason))
    except LinkHubError:
        # E.g. the broker did not confirm the device's credentials: nothing was
        # stored, the code is still pending, so trying again is safe.
        return render_template("unavailable.html", code=code), HTTPStatus.SERVICE_UNAVAILABLE
    return _form(typed, status="no_action", message="Choose Approve or Deny.", http=HTTPStatus.BAD_REQUEST)


def _decide_app(typed: str, entered: AppCodeLookup) -> BaseResponse | Page:
    """Approve or deny an app's code: its tokens wait for the app's next poll."""
    apps = services().apps
    assert apps is not None  # an AppCodeLookup came from it
    code = codes.find_in(typed) or typed
    action = request.form.get("action")
    try:
        if action == "approve":
            req = apps.approve(code, g.account.id, address=request.remote_addr)
            return redirect(url_for("link.app_linked_page", code=req.user_code), HTTPStatus.SEE_OTHER)
        if action == "deny":
            req = apps.deny(code, g.account.id, address=request.remote_addr)
            flash(f"{app_label(req)} was not linked.")
            return redirect(url_for("link.denied_page", what="app"), HTTPStatus.SEE_OTHER)
    except AppRefused:
        found = apps.lookup_code(code, g.account.id)
        return _to_your_device(found) or _refusal(typed, found)
    return _form(typed, status="no_action", message="Choose Approve or Deny.", http=HTTPStatus.BAD_REQUEST)


@bp.get("/link/app")
@login_required
def app_linked_page() -> tuple[str, int]:
    """After Approve: the app gets its tokens at its next poll."""
    apps = services().apps
    found = apps.lookup_code(_typed_code(request.args), g.account.id) if apps else None
    if found is None or found.status is not CodeStatus.USED_BY_YOU or found.request is None:
        abort(HTTPStatus.NOT_FOUND)
    return render_template("app_linked.html", app_name=app_label(found.request)), 200


@bp.get("/link/denied")
@login_required
def denied_page() -> tuple[str, int]:
    return render_template("denied.html", app=request.args.get("what") == "app"), 200


# --- after Approve: following the device ----------------------------------------------
@dataclass(frozen=True, slots=True)
class Progress:
    """Where a just-approved device is, as the Done page shows it."""

    step: str  # "connecting", "late", "syncing", "sync_late", "done"
    connected: bool
    synced: bool
    message: str


def progress_of(device: DeviceView) -> Progress:
    """Decided here, on the hub's clock, so the page and its live refresh agree."""
    now = services().clock()
    name = device.name
    if not device.confirmed:
        if now - device.linked_at_s < CONNECT_EXPECTED_S:
            return Progress(
                "connecting", False, False, f"Waiting for {name} to connect with its own credentials…"
            )
        return Progress(
            "late",
            False,
            False,
            f"{name} has not connected yet. Check that it is switched on and in Wi-Fi range, and whether "
            "its screen shows an error. If it gave up, start linking on the device again: it shows a new "
            "code. Approved devices that never connect are unlinked by themselves after a while.",
        )
    view = services().settings.device_view(device.device_id)
    synced = view is None or view.synced or not (view.desired or view.reported)
    if synced:
        return Progress("done", True, True, f"{name} is connected and its settings are up to date. All done.")
    if now - device.linked_at_s < CONNECT_EXPECTED_S + SYNC_EXPECTED_S:
        return Progress("syncing", True, False, f"{name} is connected. Sending it your settings…")
    return Progress(
        "sync_late",
        True,
        False,
        f"{name} is connected but has not confirmed its settings. It keeps working; the hub sends them "
        "again whenever it reconnects. If this stays so, restart the device.",
    )


def _linked_device_or_404(device_id: str) -> DeviceView:
    device = services().links.linked_device(device_id, g.account.id)
    if device is None:
        abort(HTTPStatus.NOT_FOUND)
    return device


@bp.get("/link/linked/<device_id>")
@login_required
def linked_page(device_id: str) -> tuple[str, int]:
    device = _linked_device_or_404(device_id)
    return render_template("linked.html", device=device, progress=progress_of(device)), 200


@bp.get("/link/linked/<device_id>/progress.json")
@login_required
def linked_progress(device_id: str) -> BaseResponse:
    """The Done page's live refresh (static/link.js)."""
    device = _linked_device_or_404(device_id)
    progress = progress_of(device)
    return jsonify(
        step=progress.step, connected=progress.connected, synced=progress.synced, message=progress.message
    )


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
