"""Signing in: the first-run owner account, sign-in and sign-out.

The session holds the signed-in account's id and a token the hub keeps a
record of (web/sessions.py); the account and the record are checked again on
every request, so a removed account, a signed-out session and every session
before a "sign out everywhere" end at once, copied cookies included.

Failed sign-ins are limited per account name and per address
(web/sign_in_limits.py). With two-factor sign-in on, a right password does not
sign in: the session gets only a token for "password right, second factor
owed" (web/pending.py), and web/two_factor.py asks for the code.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ParamSpec, TypeVar, cast
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from hub.core.accounts import AccountView
from hub.core.origin import Origin
from hub.core.rate_limits import wait_words
from hub.errors import AccountError
from hub.services.activity import ActivityKind
from web.config import WebConfig
from web.password_checks import BUSY_RETRY_AFTER_S, PasswordChecks
from web.pending import Pending
from web.services import services
from web.sign_in_limits import Refused, SignInLimits, Tried

bp = Blueprint("auth", __name__)

SESSION_KEY = "account_id"
SIGNED_IN_AT_KEY = "signed_in_at_s"
# The session's token: the hub's record of it (web/sessions.py) must exist.
SESSION_TOKEN_KEY = "session_token"
# The session's token for a sign-in that is waiting for its second factor.
AWAITING_KEY = "second_factor_token"
WRONG_CREDENTIALS = "The name or password is wrong."
# Long enough to find the phone and open the app, short enough that a session
# left on a shared screen after the password does not stay half signed in.
SECOND_FACTOR_LIFETIME_S = 300.0
# Enough to install an authenticator app and scan the code.
ENROLMENT_LIFETIME_S = 900.0
# New recovery codes stay on their page this long, for Reload and the download.
RECOVERY_CODES_SHOWN_S = 600.0
# Two phones opening /setup at once must not both create an "owner".
_setup_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")
_EXTENSION_KEY = "linkhub.sign_in"


@dataclass(frozen=True, slots=True)
class AwaitingSecondFactor:
    """A right password for an account with two-factor sign-in on."""

    account_id: int
    name: str  # the account's name: wrong second factors count against it


@dataclass(frozen=True, slots=True)
class Enrolment:
    """A TOTP secret shown to a person, not switched on until they confirm it."""

    account_id: int
    secret: str
    uri: str


@dataclass(frozen=True, slots=True)
class SignInState:
    """What signing in keeps between requests: one per app, so tests start afresh."""

    limits: SignInLimits
    password_checks: PasswordChecks
    awaiting_second_factor: Pending[AwaitingSecondFactor]
    enrolments: Pending[Enrolment]
    shown_codes: Pending[Any]  # web/two_factor.py's ShownCodes: new recovery codes on their page


def install_sign_in(app: Flask, config: WebConfig) -> None:
    app.extensions[_EXTENSION_KEY] = SignInState(
        limits=SignInLimits(config.limits, config.limits_clock),
        password_checks=PasswordChecks(config.password_checks_at_once, config.password_check_wait_s),
        awaiting_second_factor=Pending(SECOND_FACTOR_LIFETIME_S, config.clock),
        enrolments=Pending(ENROLMENT_LIFETIME_S, config.clock),
        shown_codes=Pending(RECOVERY_CODES_SHOWN_S, config.clock),
    )


def sign_in_state() -> SignInState:
    return cast(SignInState, current_app.extensions[_EXTENSION_KEY])


def client_address() -> str | None:
    """The peer's address as the server saw it. X-Forwarded-For is not read:
    the hub is served directly (waitress), and anyone can write that header."""
    return request.remote_addr


def throttled_message(retry_after_s: int) -> str:
    return f"Too many sign-in attempts. Try again in {wait_words(retry_after_s)}."


def record(kind: ActivityKind, account_id: int | None, detail: str = "") -> None:
    services().activity.record(kind, account_id, address=client_address(), detail=detail)


def record_failure(typed_name: str, *, limit_reached: bool, detail: str) -> None:
    """SIGN_IN_FAILED for the account named, or for nobody with the typed name
    in the detail; SIGN_IN_THROTTLED once, when this failure used a limit up
    (not for every refusal after it, which would let a flood fill the log).

    Runs after the answer is decided and does the same work whether the name
    exists or not (one look-up, one or two rows), so it tells the client nothing.
    """
    name = typed_name.strip()
    # No account name is empty or longer than 64 characters: nothing to look up.
    account = services().accounts.find(name) if 0 < len(name) <= 64 else None
    account_id = account.id if account else None
    # repr: what was typed may hold control characters, and `linkhub activity` prints it.
    who = detail if account else f"{detail}; no account named {name[:64]!r}"
    record(ActivityKind.SIGN_IN_FAILED, account_id, who)
    if limit_reached:
        record(ActivityKind.SIGN_IN_THROTTLED, account_id, who)


def safe_next(target: str | None) -> str | None:
    """A `next` we may redirect to: a path on this hub, never another site.

    "//evil.example" and "/\\evil.example" are read by browsers as another host.
    """
    if not target or not target.startswith("/") or target.startswith("//"):
        return None
    if "\\" in target or any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in target):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return None
    return target


def current_path() -> str:
    """This request's path and query, to come back to after signing in."""
    query = request.query_string.decode("latin-1")
    return f"{request.path}?{query}" if query else request.path


def after_sign_in() -> BaseResponse:
    return redirect(safe_next(request.args.get("next")) or url_for("link.link_form"))


def sign_in_as(account: AccountView) -> None:
    # A fresh session at sign-in: nothing set before (by anyone) survives it.
    end_this_session()
    session.permanent = True
    session[SESSION_KEY] = account.id
    session[SESSION_TOKEN_KEY] = services().sessions.start(account.id, services().session_lifetime_s)
    stamp_session(account)


def end_this_session() -> None:
    """Sign-out: the hub forgets this session, so a copy of its cookie opens nothing."""
    services().sessions.end(session.get(SESSION_TOKEN_KEY))
    sign_in_state().awaiting_second_factor.discard(session.get(AWAITING_KEY))
    session.clear()


def _sessions_valid_from(account: AccountView) -> float | None:
    """Sessions signed in before this time have ended: two-factor was switched
    on then (the password alone no longer signs in), or "sign out everywhere"
    was asked for. Both come from the account service, so every hub agrees."""
    times = [t for t in (account.two_factor_since_s, account.sessions_ended_at_s) if t is not None]
    return max(times) if times else None


def stamp_session(account: AccountView) -> None:
    """When this session was signed in, as `load_account` compares it with
    `_sessions_valid_from` (never before it: the account service and the web
    may not share a clock)."""
    session[SIGNED_IN_AT_KEY] = max(services().clock(), _sessions_valid_from(account) or 0.0)


def _session_over(account: AccountView) -> bool:
    """Signed out (here or everywhere), expired, or signed in with the password
    alone before two-factor was switched on (a phone left signed in, a session
    someone else took): such a session ends."""
    if not services().sessions.is_live(session.get(SESSION_TOKEN_KEY), account.id):
        return True
    valid_from = _sessions_valid_from(account)
    if valid_from is None:
        return False
    signed_in_at = session.get(SIGNED_IN_AT_KEY)
    return not isinstance(signed_in_at, int | float) or signed_in_at < valid_from


def login_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    """Signed-out visitors go to sign in and come back to the same URL (with its ?code=)."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if g.account is None:
            return redirect(url_for("auth.login", next=current_path()))
        return view(*args, **kwargs)

    return wrapped


def refuse_planted_cookies() -> tuple[str, int] | tuple[BaseResponse, int] | None:
    """More than one session cookie: one of them was set by someone else.

    Cookies are per host, not per port (RFC 6265 §8.5): a page on another port
    of this host can set `linkhub_session` with a narrower Path (`/link`),
    which the browser then sends first (RFC 6265 §5.4), so a person would
    approve a device for the planter's account. This hub only ever sets one,
    on Path=/, so two mean a plant: nothing is read or done with either.
    """
    if len(request.cookies.getlist(current_app.config["SESSION_COOKIE_NAME"])) <= 1:
        return None
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if request.path.startswith("/api/"):
        return jsonify(
            error="two_session_cookies",
            message=f"Two {current_app.config['SESSION_COOKIE_NAME']} cookies were sent; "
            f"one was planted by another page on {host}. Send only the one this hub set.",
        ), 400
    return (
        render_template(
            "error.html",
            title="Clear this site's cookies",
            message=f"Your browser sent this hub two sign-in cookies; this hub sets only one, so the "
            f"other was set by another page on {host}. Nothing was done. Clear the cookies for "
            f"{host} in your browser's settings (site settings, or 'clear browsing data'), "
            "then sign in again.",
        ),
        400,
    )


# What a person whose password the owner set may open before choosing their own.
_WHILE_RESET = frozenset({"account.choose_password_page", "account.choose_password", "auth.logout", "static"})


@bp.before_app_request
def load_account() -> BaseResponse | tuple[BaseResponse, int] | None:
    g.account = None
    if request.endpoint == "static":
        return None
    accounts = services().accounts
    account_id = session.get(SESSION_KEY)
    if isinstance(account_id, int):
        g.account = accounts.get(account_id)
        if g.account is not None and _session_over(g.account):
            g.account = None
            session.clear()
        if g.account is None:
            session.pop(SESSION_KEY, None)
    if g.account is not None and g.account.must_change_password and request.endpoint not in _WHILE_RESET:
        # The owner set this password: the person chooses their own first (web/account.py).
        if request.path.startswith("/api/"):
            return jsonify(
                error="password_must_change",
                message="The owner set this account's password: "
                "sign in on the pages and choose your own first.",
            ), 403
        return redirect(url_for("account.choose_password_page"))
    if g.account is None and request.endpoint != "auth.setup" and not accounts.has_accounts():
        if request.path.startswith("/api/"):
            return None  # JSON clients get their 401 from the API itself
        target = current_path() if request.method in ("GET", "HEAD") else None
        return redirect(url_for("auth.setup", next=target))
    return None


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> BaseResponse | str | tuple[str, int]:
    accounts = services().accounts
    if accounts.has_accounts():
        return redirect(url_for("auth.login"))
    if request.method != "POST":
        return render_template("setup.html", name="")
    name = request.form.get("name", "")
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return render_template("setup.html", name=name, error="The two passwords differ."), 400
    with _setup_lock:
        if accounts.has_accounts():
            return redirect(url_for("auth.login"))
        try:
            # Through the household, so the new account's activity starts with it.
            owner = services().household.create_account(
                name, password, origin=Origin.SETUP, address=request.remote_addr
            )
        except AccountError as exc:
            return render_template("setup.html", name=name, error=str(exc)), 400
    sign_in_as(owner)
    record(ActivityKind.SIGN_IN, owner.id, "created the owner account")
    return after_sign_in()


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str | tuple[str, int] | tuple[str, int, dict[str, str]]:
    if g.account is not None:
        return after_sign_in()
    if request.method != "POST":
        return render_template("login.html", name="")
    name = request.form.get("name", "")
    password = request.form.get("password", "")
    accounts = services().accounts
    state = sign_in_state()
    # Over a limit: refused at once, without waiting for a password-check slot.
    wait_s = state.limits.retry_after_s(name, client_address())
    tried: Refused | Tried[AccountView] = Refused(wait_s)
    if not wait_s:
        with state.password_checks.slot() as free:
            if not free:
                return _busy(name)
            check = functools.partial(accounts.authenticate, name, password)
            tried = state.limits.attempt(name, client_address(), check)
    if isinstance(tried, Refused):
        # Checked before the password, on the name as typed: the same answer
        # for an account that exists and one that does not.
        error = throttled_message(tried.retry_after_s)
        page = render_template("login.html", name=name, error=error, status="throttled")
        return refuse(tried.retry_after_s, page)
    account = tried.result
    if account is None:
        record_failure(name, limit_reached=tried.limit_reached, detail="wrong password")
        # Same words whether the name exists or not.
        return render_template("login.html", name=name, error=WRONG_CREDENTIALS), 400
    if account.two_factor:
        return _await_second_factor(account)
    sign_in_as(account)
    record(ActivityKind.SIGN_IN, account.id, "password")
    return after_sign_in()


def _busy(name: str) -> tuple[str, int, dict[str, str]]:
    """Every password-check slot taken (web/password_checks.py): nothing was
    checked or counted; the same answer whatever the name."""
    error = "The hub is busy checking other sign-ins. Try again in a few seconds."
    page = render_template("login.html", name=name, error=error, status="busy")
    return page, HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": str(BUSY_RETRY_AFTER_S)}


def _await_second_factor(account: AccountView) -> BaseResponse:
    """Password right, second factor owed: the session holds a token, not the account."""
    session.clear()
    session[AWAITING_KEY] = sign_in_state().awaiting_second_factor.put(
        AwaitingSecondFactor(account.id, account.name)
    )
    return redirect(url_for("two_factor.second_factor", next=safe_next(request.args.get("next"))))


def refuse(retry_after_s: int, body: str) -> tuple[str, int, dict[str, str]]:
    """429 with Retry-After (RFC 6585 §4), for a person and a program alike."""
    return body, 429, {"Retry-After": str(retry_after_s)}


@bp.post("/logout")
def logout() -> BaseResponse:
    if g.account is not None:
        record(ActivityKind.SIGN_OUT, g.account.id)
    end_this_session()
    # "Not you?" on the confirm page: sign in as the right person, back to the same code.
    return redirect(url_for("auth.login", next=safe_next(request.form.get("next"))))


@bp.post("/account/sign-out-everywhere")
@login_required
def sign_out_everywhere() -> BaseResponse:
    """Every session of the account ends: this one, the phone left at a friend's,
    a cookie someone copied. On this hub at once; on other hubs that share the
    account service at their next request (the account's `sessions_ended_at_s`)."""
    account_id = g.account.id
    services().accounts.end_sessions(account_id)
    ended = services().sessions.end_all(account_id)
    record(ActivityKind.SIGN_OUT, account_id, f"everywhere ({ended} sessions on this hub)")
    end_this_session()
    flash("You are signed out everywhere: on this device and every other one.")
    return redirect(url_for("auth.login"), HTTPStatus.SEE_OTHER)
