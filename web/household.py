"""/household: the owner lists, adds and removes the household's accounts.

Only the owner gets these pages (a member gets 403 on each, GET or POST). The
owner can also turn a member's two-factor sign-in off, for someone who lost both
the phone and the recovery codes, set a new password for a member who forgot
theirs, and give a member's device to someone else or unlink it
(web/devices.py). A member's settings appear on the member's own pages only.
The rules (who may, what is kept, when a removal is refused) are
hub.services.household's; this module only asks and shows.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import ParamSpec, TypeVar

from flask import Blueprint, abort, flash, g, redirect, render_template, request, url_for
from werkzeug.wrappers import Response as BaseResponse

from hub.core.accounts import AccountView
from hub.core.origin import Origin
from hub.errors import AccountError, HouseholdRefused
from hub.services.activity import ActivityKind
from hub.services.household import NOT_OWNER_MESSAGE, Member, Refusal
from web.auth import login_required
from web.services import services

bp = Blueprint("household", __name__)

P = ParamSpec("P")
R = TypeVar("R")


# How each refusal reads as HTTP, for the pages here and the control API (web/control.py).
_REFUSAL_STATUS: dict[str, HTTPStatus] = {  # Refusal is a StrEnum: its members are str keys
    Refusal.UNKNOWN_ACCOUNT: HTTPStatus.NOT_FOUND,
    Refusal.HAS_DEVICES: HTTPStatus.CONFLICT,
    Refusal.OWNER: HTTPStatus.BAD_REQUEST,
    Refusal.NOT_OWNER: HTTPStatus.FORBIDDEN,
    Refusal.TWO_FACTOR_OFF: HTTPStatus.CONFLICT,
}


def status_for_refusal(reason: str) -> int:
    return _REFUSAL_STATUS.get(reason, HTTPStatus.BAD_REQUEST)


def owner_required(view: Callable[P, R]) -> Callable[P, R | BaseResponse | tuple[str, int]]:
    """Signed out: to sign in first. Signed in as a member: 403, for GET and POST alike."""

    @login_required
    @functools.wraps(view)
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R | BaseResponse | tuple[str, int]:
        if not g.account.is_owner:
            page = render_template("error.html", title="Owner only", message=NOT_OWNER_MESSAGE)
            return page, HTTPStatus.FORBIDDEN
        return view(*args, **kwargs)

    return wrapped


# How far back the owner is shown wrong device codes: a week of a household's use.
GUESSING_WINDOW_S = 7 * 86400
_GUESSING = (ActivityKind.CODE_ENTRY_FAILED, ActivityKind.CODE_ENTRY_THROTTLED)


@dataclass(frozen=True, slots=True)
class WrongCodes:
    """Wrong device codes entered with one account in the window: the sign that
    someone who has its password (or its open session) is guessing codes."""

    count: int
    refused: bool  # the account's code limit was used up at least once
    last_at_s: float
    last_address: str | None


def wrong_codes_by_account() -> dict[int, WrongCodes]:
    found: dict[int, WrongCodes] = {}
    since = services().clock() - GUESSING_WINDOW_S
    for event in services().activity.recent_of_kinds(_GUESSING, since_s=since):
        if event.account_id is None:
            continue
        seen = found.get(event.account_id)
        failed = event.kind is ActivityKind.CODE_ENTRY_FAILED
        throttled = event.kind is ActivityKind.CODE_ENTRY_THROTTLED
        if seen is None:  # the newest first: its time and address are the last ones
            found[event.account_id] = WrongCodes(int(failed), throttled, event.at_s, event.address)
        else:
            found[event.account_id] = dataclasses.replace(
                seen, count=seen.count + int(failed), refused=seen.refused or throttled
            )
    return found


def _page(*, name: str = "", error: str | None = None, http: int = HTTPStatus.OK) -> tuple[str, int]:
    members = services().household.members()
    wrong = wrong_codes_by_account()
    guessed_with = [member.account.name for member in members if member.account.id in wrong]
    page = render_template(
        "household.html", members=members, wrong=wrong, guessed_with=guessed_with, name=name, error=error
    )
    return page, http


def _member(account_id: int) -> Member:
    found = [member for member in services().household.members() if member.account.id == account_id]
    if not found:
        abort(HTTPStatus.NOT_FOUND)
    return found[0]


@bp.get("/household")
@owner_required
def household_page() -> tuple[str, int]:
    return _page()


@bp.post("/household/members")
@owner_required
def add_member() -> BaseResponse | tuple[str, int]:
    name = request.form.get("name", "")
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return _page(name=name, error="The two passwords differ.", http=HTTPStatus.BAD_REQUEST)
    try:
        created = services().household.create_account(
            name, password, origin=Origin.WEB, by=g.account, address=request.remote_addr
        )
    except AccountError as exc:
        return _page(name=name, error=str(exc), http=HTTPStatus.BAD_REQUEST)
    flash(f"{created.name} can now sign in with the password you chose. Tell them to keep it to themselves.")
    # Redirect after a post: reloading the page must not post the password again.
    return redirect(url_for("household.household_page"), HTTPStatus.SEE_OTHER)


@bp.get("/household/members/<int:account_id>/remove")
@owner_required
def remove_confirm(account_id: int) -> tuple[str, int]:
    """The confirm step: a removed account cannot sign in again."""
    return render_template("remove_member.html", member=_member(account_id), error=None), HTTPStatus.OK


@bp.post("/household/members/<int:account_id>/remove")
@owner_required
def remove_member(account_id: int) -> BaseResponse | tuple[str, int]:
    """Remove once the owner confirmed (`confirm=yes` from the confirm page's form);
    a post without it shows the confirm step, so no single click removes anyone."""
    return _confirmed(
        "remove_member.html",
        account_id,
        lambda: services().household.remove_member(
            account_id, origin=Origin.WEB, by=g.account, address=request.remote_addr
        ),
        lambda removed: f"{removed.name} was removed from the household. Their settings history is kept.",
    )


@bp.get("/household/members/<int:account_id>/two-factor-off")
@owner_required
def two_factor_off_confirm(account_id: int) -> tuple[str, int]:
    """The confirm step: the member's password alone signs in from then on."""
    return render_template("two_factor_off.html", member=_member(account_id), error=None), HTTPStatus.OK


@bp.post("/household/members/<int:account_id>/two-factor-off")
@owner_required
def two_factor_off(account_id: int) -> BaseResponse | tuple[str, int]:
    """For a member who lost both the phone and the recovery codes; only with
    `confirm=yes` from the confirm page's form, like a removal."""
    return _confirmed(
        "two_factor_off.html",
        account_id,
        lambda: services().household.reset_two_factor(
            account_id, origin=Origin.WEB, by=g.account, address=request.remote_addr
        ),
        lambda account: (
            f"Two-factor sign-in is off for {account.name}: their password alone signs them in now. "
            "They can turn it on again with their new phone on their account page."
        ),
    )


@bp.get("/household/members/<int:account_id>/password")
@owner_required
def reset_password_confirm(account_id: int) -> BaseResponse | tuple[str, int]:
    member = _member(account_id)
    if member.account.id == g.account.id:
        return redirect(url_for("account.account_page"))  # the owner's own: with the current one
    return render_template("reset_password.html", member=member, error=None), HTTPStatus.OK


@bp.post("/household/members/<int:account_id>/password")
@owner_required
def reset_password(account_id: int) -> BaseResponse | tuple[str, int]:
    member = _member(account_id)
    password = request.form.get("password", "")
    if password != request.form.get("password2", ""):
        return render_template(
            "reset_password.html", member=member, error="The two passwords differ."
        ), HTTPStatus.BAD_REQUEST
    try:
        account = services().household.reset_password(
            account_id, password, origin=Origin.WEB, by=g.account, address=request.remote_addr
        )
    except HouseholdRefused as exc:
        if status_for_refusal(exc.reason) == HTTPStatus.NOT_FOUND:
            abort(HTTPStatus.NOT_FOUND)
        return render_template("reset_password.html", member=member, error=str(exc)), HTTPStatus.BAD_REQUEST
    except AccountError as exc:
        return render_template("reset_password.html", member=member, error=str(exc)), HTTPStatus.BAD_REQUEST
    services().sessions.end_all(account.id)
    flash(
        f"{account.name} has a new password and is signed out everywhere. Tell them the password; "
        "they choose their own when they sign in."
    )
    return redirect(url_for("household.household_page"), HTTPStatus.SEE_OTHER)


def _confirmed(
    template: str,
    account_id: int,
    act: Callable[[], AccountView],
    done: Callable[[AccountView], str],
) -> BaseResponse | tuple[str, int]:
    """An owner's action on a member that needs the confirm step: without
    `confirm=yes` the step is shown (again); a refusal is shown on it."""
    member = _member(account_id)
    if request.form.get("confirm") != "yes":
        return render_template(template, member=member, error=None), HTTPStatus.OK
    try:
        account = act()
    except HouseholdRefused as exc:
        status = status_for_refusal(exc.reason)
        if status == HTTPStatus.NOT_FOUND:
            abort(HTTPStatus.NOT_FOUND)
        return render_template(template, member=member, error=str(exc)), status
    flash(done(account))
    return redirect(url_for("household.household_page"), HTTPStatus.SEE_OTHER)
