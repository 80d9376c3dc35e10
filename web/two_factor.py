"""Two-factor sign-in: the second step of signing in, and turning it on and off.

/login/two-factor asks for the code after a right password (web/auth.py left
only a token in the session). /account/two-factor is where a signed-in person
turns it on: a new secret as a QR code (drawn here, web/qr.py) and as text, a
first code to prove the app has it, then ten recovery codes shown once. Turning
it off needs the password and a code.

The secret and the recovery code hashes live in the account service
(hub.core.accounts); these pages hold a new secret only between showing it
and its confirmation, server-side (web/pending.py), never in the cookie. Wrong
second factors count against the same limits as wrong passwords.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus

from flask import Blueprint, Response, flash, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.core.accounts import SecondFactor, TwoFactorStatus
from hub.errors import AccountError
from hub.services.activity import ActivityKind
from web.auth import (
    AWAITING_KEY,
    Enrolment,
    after_sign_in,
    client_address,
    login_required,
    record,
    record_failure,
    refuse,
    safe_next,
    sign_in_as,
    sign_in_state,
    stamp_session,
    throttled_message,
)
from web.qr import qr_svg
from web.services import services
from web.sign_in_limits import Refused

bp = Blueprint("two_factor", __name__)

ENROLMENT_KEY = "two_factor_enrolment_token"
WRONG_SECOND_FACTOR = "That code is not right, or it was used already."
ALREADY_USED = "That code was used already. Wait for the app to show the next one, and type that."
SHOWN_CODES_KEY = "recovery_codes_token"
WRONG_PASSWORD_OR_CODE = "The password or the code is wrong."

Page = tuple[str, int] | tuple[str, int, dict[str, str]]


# --- the second step of signing in ----------------------------------------------
@bp.route("/login/two-factor", methods=["GET", "POST"])
def second_factor() -> BaseResponse | Page:
    if g.account is not None:
        return after_sign_in()
    state = sign_in_state()
    token = session.get(AWAITING_KEY)
    waiting = state.awaiting_second_factor.get(token)
    if waiting is None:
        # Never had a right password here, took too long, or the hub restarted.
        session.pop(AWAITING_KEY, None)
        return redirect(url_for("auth.login", next=safe_next(request.args.get("next"))))
    recovery = request.args.get("recovery") == "1"
    if request.method != "POST":
        return render_template("login_two_factor.html", name=waiting.name, recovery=recovery), HTTPStatus.OK
    code = request.form.get("code", "")
    accounts = services().accounts
    tried = state.limits.attempt(
        waiting.name,
        client_address(),
        lambda: accounts.check_second_factor(waiting.account_id, code),
        second_factor=True,
    )
    if isinstance(tried, Refused):
        page = render_template(
            "login_two_factor.html",
            name=waiting.name,
            recovery=recovery,
            error=throttled_message(tried.retry_after_s),
            status="throttled",
        )
        return refuse(tried.retry_after_s, page)
    if tried.result is None:
        # Said as it is: a right code typed twice is not a wrong one (RFC 6238 §5.2).
        reused = accounts.code_already_used(waiting.account_id, code)
        detail = (
            "authenticator code already used in its 30-second window" if reused else "wrong second factor"
        )
        record_failure(waiting.name, limit_reached=tried.limit_reached, detail=detail)
        error, status = (ALREADY_USED, "code_used") if reused else (WRONG_SECOND_FACTOR, "wrong_code")
        page = render_template(
            "login_two_factor.html", name=waiting.name, recovery=recovery, error=error, status=status
        )
        return page, HTTPStatus.BAD_REQUEST
    if state.awaiting_second_factor.take(token) is None:
        return redirect(url_for("auth.login"))  # the same sign-in finished in another tab just now
    account = accounts.get(waiting.account_id)
    if account is None:
        return redirect(url_for("auth.login"))  # removed from the household meanwhile
    sign_in_as(account)
    if tried.result is SecondFactor.RECOVERY_CODE:
        record(ActivityKind.SIGN_IN, waiting.account_id, "password and a recovery code")
        record(ActivityKind.RECOVERY_CODE_USED, waiting.account_id)
        left = accounts.two_factor_status(waiting.account_id).recovery_codes_left
        # Most likely the phone is lost: straight to where that is dealt with.
        flash(
            f"You signed in with a recovery code; {_codes_left(left)} left. "
            "If you lost your phone, turn two-factor sign-in off and on again with the new one."
        )
        return redirect(url_for("two_factor.settings_page"), HTTPStatus.SEE_OTHER)
    record(ActivityKind.SIGN_IN, waiting.account_id, "password and authenticator code")
    return after_sign_in()


# --- turning it on and off -------------------------------------------------------
@bp.get("/account/two-factor")
@login_required
def settings_page() -> Page:
    return _page()


@bp.post("/account/two-factor/start")
@login_required
def start() -> BaseResponse | Page:
    state = sign_in_state()
    try:
        new = services().accounts.begin_two_factor(g.account.id)
    except AccountError as exc:
        return _page(error=str(exc), http=HTTPStatus.BAD_REQUEST)
    state.enrolments.discard(session.get(ENROLMENT_KEY))
    session[ENROLMENT_KEY] = state.enrolments.put(Enrolment(g.account.id, new.secret, new.uri))
    return redirect(url_for("two_factor.settings_page"), HTTPStatus.SEE_OTHER)


@bp.post("/account/two-factor/confirm")
@login_required
def confirm() -> BaseResponse | Page:
    enrolment = _enrolment()
    if enrolment is None:
        flash("That setup took too long. Start again, and scan the new code.")
        return redirect(url_for("two_factor.settings_page"), HTTPStatus.SEE_OTHER)
    try:
        codes = services().accounts.confirm_two_factor(
            g.account.id, enrolment.secret, request.form.get("code", "")
        )
    except AccountError as exc:
        return _page(error=str(exc), http=HTTPStatus.BAD_REQUEST)
    sign_in_state().enrolments.discard(session.pop(ENROLMENT_KEY, None))
    # Every other session of this account ends now (web/auth.py); this one goes on.
    now_on = services().accounts.get(g.account.id)
    if now_on is not None:
        stamp_session(now_on)
    record(ActivityKind.TWO_FACTOR_ENABLED, g.account.id)
    return _show_codes(codes, first=True)


@bp.post("/account/two-factor/recovery-codes")
@login_required
def renew_recovery_codes() -> BaseResponse | Page:
    code = request.form.get("code", "")
    accounts = services().accounts
    tried = sign_in_state().limits.attempt(
        g.account.name,
        client_address(),
        lambda: accounts.renew_recovery_codes(g.account.id, code),
        second_factor=True,
    )
    if isinstance(tried, Refused):
        return refuse(tried.retry_after_s, _page(error=throttled_message(tried.retry_after_s))[0])
    if tried.result is None:
        record_failure(
            g.account.name, limit_reached=tried.limit_reached, detail="wrong code for new recovery codes"
        )
        return _page(error=WRONG_SECOND_FACTOR, http=HTTPStatus.BAD_REQUEST)
    record(ActivityKind.RECOVERY_CODES_RENEWED, g.account.id)
    return _show_codes(tried.result, first=False)


@bp.post("/account/two-factor/disable")
@login_required
def disable() -> BaseResponse | Page:
    password, code = request.form.get("password", ""), request.form.get("code", "")
    accounts = services().accounts
    try:
        tried = sign_in_state().limits.attempt(
            g.account.name,
            client_address(),
            lambda: accounts.disable_two_factor(g.account.id, password, code) or None,
            second_factor=True,
        )
    except AccountError as exc:
        return _page(error=str(exc), http=HTTPStatus.BAD_REQUEST)
    if isinstance(tried, Refused):
        return refuse(tried.retry_after_s, _page(error=throttled_message(tried.retry_after_s))[0])
    if tried.result is None:
        record_failure(
            g.account.name, limit_reached=tried.limit_reached, detail="wrong password or code to turn it off"
        )
        return _page(error=WRONG_PASSWORD_OR_CODE, http=HTTPStatus.BAD_REQUEST)
    record(ActivityKind.TWO_FACTOR_DISABLED, g.account.id)
    flash("Two-factor sign-in is off. Signing in needs only your password now.")
    return redirect(url_for("two_factor.settings_page"), HTTPStatus.SEE_OTHER)


# --- new recovery codes: shown after a redirect, for a while -------------------------
@dataclass(frozen=True, slots=True)
class ShownCodes:
    account_id: int
    codes: tuple[str, ...]
    first: bool  # two-factor was just turned on


def _show_codes(codes: list[str], *, first: bool) -> BaseResponse:
    """Post/redirect/get: the codes wait server-side (web/pending.py) under a token
    in the session, so Reload shows them again and the download has them,
    for web.auth.RECOVERY_CODES_SHOWN_S; never in the cookie or a URL."""
    shown = sign_in_state().shown_codes
    shown.discard(session.get(SHOWN_CODES_KEY))
    session[SHOWN_CODES_KEY] = shown.put(ShownCodes(g.account.id, tuple(codes), first))
    return redirect(url_for("two_factor.recovery_codes_page"), HTTPStatus.SEE_OTHER)


def _shown_codes() -> ShownCodes | None:
    found = sign_in_state().shown_codes.get(session.get(SHOWN_CODES_KEY))
    return found if found is not None and found.account_id == g.account.id else None


@bp.get("/account/two-factor/recovery-codes")
@login_required
def recovery_codes_page() -> Page:
    shown = _shown_codes()
    if shown is None:
        # Reloaded later, or opened afresh: said plainly, not as an error or a success.
        return render_template("recovery_codes.html", codes=None, first=False), HTTPStatus.OK
    return render_template("recovery_codes.html", codes=shown.codes, first=shown.first), HTTPStatus.OK


@bp.get("/account/two-factor/recovery-codes.txt")
@login_required
def recovery_codes_file() -> BaseResponse | Page:
    shown = _shown_codes()
    if shown is None:
        return redirect(url_for("two_factor.recovery_codes_page"))
    header = [f"LinkHub recovery codes for {g.account.name}", "Each signs in once instead of the app.", ""]
    text = "\n".join([*header, *shown.codes])
    return Response(
        text + "\n",
        mimetype="text/plain",
        headers={"Content-Disposition": 'attachment; filename="linkhub-recovery-codes.txt"'},
    )


# --- helpers ------------------------------------------------------------------------
def _enrolment() -> Enrolment | None:
    enrolment = sign_in_state().enrolments.get(session.get(ENROLMENT_KEY))
    if enrolment is None or enrolment.account_id != g.account.id:
        return None  # expired, or started by whoever used this browser before
    return enrolment


def _page(*, error: str | None = None, http: int = HTTPStatus.OK) -> tuple[str, int]:
    status: TwoFactorStatus = services().accounts.two_factor_status(g.account.id)
    enrolment = None if status.enabled else _enrolment()
    return (
        render_template(
            "two_factor.html",
            status=status,
            enrolment=enrolment,
            qr=qr_svg(enrolment.uri, label="QR code to add LinkHub to an authenticator app")
            if enrolment
            else None,
            secret_groups=_groups(enrolment.secret) if enrolment else [],
            codes_left=_codes_left(status.recovery_codes_left),
            error=error,
        ),
        http,
    )


def _groups(secret: str) -> list[str]:
    """The secret in fours, to be typed without losing one's place."""
    return [secret[i : i + 4] for i in range(0, len(secret), 4)]


def _codes_left(count: int) -> str:
    return "1 recovery code" if count == 1 else f"{count} recovery codes"
