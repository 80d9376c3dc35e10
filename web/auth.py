"""Signing in: the first-run owner account, sign-in and sign-out.

The signed-in account's id is all the session holds; the account itself is
loaded again on every request, so a removed account is signed out at once.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar
from urllib.parse import urlsplit

from flask import Blueprint, g, redirect, render_template, request, session, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.errors import AccountError
from web.services import services

bp = Blueprint("auth", __name__)

SESSION_KEY = "account_id"
WRONG_CREDENTIALS = "The name or password is wrong."
# Two phones opening /setup at once must not both create an "owner".
_setup_lock = threading.Lock()

P = ParamSpec("P")
R = TypeVar("R")


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


def _after_sign_in() -> BaseResponse:
    return redirect(safe_next(request.args.get("next")) or url_for("link.link_form"))


def _sign_in(account_id: int) -> None:
    # A fresh session at sign-in: nothing set before (by anyone) survives it.
    session.clear()
    session.permanent = True
    session[SESSION_KEY] = account_id


def login_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse]:
    """Signed-out visitors go to sign in and come back to the same URL (with its ?code=)."""

    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse:
        if g.account is None:
            return redirect(url_for("auth.login", next=current_path()))
        return view(*args, **kwargs)

    return wrapped


@bp.before_app_request
def load_account() -> BaseResponse | None:
    g.account = None
    if request.endpoint == "static":
        return None
    accounts = services().accounts
    account_id = session.get(SESSION_KEY)
    if isinstance(account_id, int):
        g.account = accounts.get(account_id)
        if g.account is None:
            session.pop(SESSION_KEY, None)
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
            owner = accounts.create(name, password)
        except AccountError as exc:
            return render_template("setup.html", name=name, error=str(exc)), 400
    _sign_in(owner.id)
    return _after_sign_in()


@bp.route("/login", methods=["GET", "POST"])
def login() -> BaseResponse | str | tuple[str, int]:
    if g.account is not None:
        return _after_sign_in()
    if request.method != "POST":
        return render_template("login.html", name="")
    name = request.form.get("name", "")
    account = services().accounts.authenticate(name, request.form.get("password", ""))
    if account is None:
        # Same words whether the name exists or not.
        return render_template("login.html", name=name, error=WRONG_CREDENTIALS), 400
    _sign_in(account.id)
    return _after_sign_in()


@bp.post("/logout")
def logout() -> BaseResponse:
    session.clear()
    return redirect(url_for("auth.login"))
