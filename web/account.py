"""/account: who is signed in, changing the password, and signing out everywhere.

A password change needs the current password and ends every other session of
the account (a person changes it because they suspect someone has it); this
session goes on. A password the owner set (`Household.reset_password`) must be
replaced before any other page opens: web/auth.py sends the person to
/account/choose-password.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.errors import AccountError
from hub.services.activity import ActivityKind
from web.auth import (
    client_address,
    login_required,
    record,
    record_failure,
    refuse,
    sign_in_as,
    sign_in_state,
    throttled_message,
)
from web.services import services
from web.sign_in_limits import Refused

bp = Blueprint("account", __name__)

WRONG_CURRENT = "Your current password is not right."


def _page(template: str, *, error: str | None = None, http: int = HTTPStatus.OK) -> tuple[str, int]:
    two_factor = services().accounts.two_factor_status(g.account.id)
    return render_template(template, error=error, two_factor=two_factor), http


@bp.get("/account")
@login_required
def account_page() -> tuple[str, int]:
    return _page("account.html")


@bp.get("/account/choose-password")
@login_required
def choose_password_page() -> BaseResponse | tuple[str, int]:
    if not g.account.must_change_password:
        return redirect(url_for("account.account_page"))
    return _page("choose_password.html")


def _change(template: str) -> BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    """Check the current password (counted like a sign-in: it is one), set the new one,
    end the other sessions and keep this one."""
    current, new = request.form.get("current", ""), request.form.get("new", "")
    if new != request.form.get("new2", ""):
        return _page(template, error="The two new passwords differ.", http=HTTPStatus.BAD_REQUEST)
    account_id, name = g.account.id, g.account.name
    accounts = services().accounts
    try:
        tried = sign_in_state().limits.attempt(
            name, client_address(), lambda: accounts.change_password(account_id, current, new) or None
        )
    except AccountError as exc:
        return _page(template, error=str(exc), http=HTTPStatus.BAD_REQUEST)
    if isinstance(tried, Refused):
        return refuse(tried.retry_after_s, _page(template, error=throttled_message(tried.retry_after_s))[0])
    if tried.result is None:
        record_failure(name, limit_reached=tried.limit_reached, detail="wrong current password to change it")
        return _page(template, error=WRONG_CURRENT, http=HTTPStatus.BAD_REQUEST)
    accounts.end_sessions(account_id)
    ended = services().sessions.end_all(account_id)
    record(
        ActivityKind.PASSWORD_CHANGED,
        account_id,
        f"signed out everywhere else ({ended} sessions on this hub)",
    )
    changed = accounts.get(account_id)
    if changed is None:  # removed from the household meanwhile
        return redirect(url_for("auth.login"), HTTPStatus.SEE_OTHER)
    sign_in_as(changed)  # a fresh session after the others ended
    flash("Your password is changed. Every other phone and computer signed in to your account is signed out.")
    return redirect(url_for("account.account_page"), HTTPStatus.SEE_OTHER)


@bp.post("/account/password")
@login_required
def change_password() -> BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    return _change("account.html")


@bp.post("/account/choose-password")
@login_required
def choose_password() -> BaseResponse | tuple[str, int] | tuple[str, int, dict[str, str]]:
    return _change("choose_password.html")
