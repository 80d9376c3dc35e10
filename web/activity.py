"""/activity: what happened to the signed-in account, newest first.

Sign-ins (failed ones too, with the address they came from), devices linked,
denied, given and unlinked, settings changes, passwords, accounts made and
removed: what a person reviews after seeing a device or a sign-in they do not
recognise. The log is per account: nobody sees another account's events here,
the owner included (the hub's operator sees them all with `linkhub activity`).

A page holds PAGE_SIZE events, one compact line each; "Older" pages on (by the
last event shown, so new events arriving meanwhile do not shift the pages), and
a filter narrows to one kind of thing.
"""

from __future__ import annotations

from flask import Blueprint, g, render_template, request

from hub.services.activity import ActivityKind
from web.auth import login_required
from web.services import services

bp = Blueprint("activity", __name__)

# Enough for a screen or two on a phone; "Older" for the rest.
PAGE_SIZE = 25

# What each kind of event is called on the page and in `linkhub activity`.
WHAT: dict[str, str] = {
    ActivityKind.SIGN_IN: "Signed in",
    ActivityKind.SIGN_IN_FAILED: "Sign-in failed",
    ActivityKind.SIGN_IN_THROTTLED: "Sign-in refused: too many attempts",
    ActivityKind.SIGN_OUT: "Signed out",
    ActivityKind.TWO_FACTOR_ENABLED: "Two-factor sign-in turned on",
    ActivityKind.TWO_FACTOR_DISABLED: "Two-factor sign-in turned off",
    ActivityKind.RECOVERY_CODE_USED: "Recovery code used",
    ActivityKind.RECOVERY_CODES_RENEWED: "New recovery codes made",
    ActivityKind.CODE_ENTRY_FAILED: "Wrong device code entered",
    ActivityKind.CODE_ENTRY_THROTTLED: "Device codes refused: too many wrong codes",
    ActivityKind.LINK_APPROVED: "Device linked",
    ActivityKind.LINK_DENIED: "Device denied",
    ActivityKind.DEVICE_UNLINKED: "Device unlinked",
    ActivityKind.SETTINGS_CHANGED: "Settings changed",
    ActivityKind.ACCOUNT_CREATED: "Account created",
    ActivityKind.ACCOUNT_REMOVED: "Account removed",
    ActivityKind.PASSWORD_CHANGED: "Password changed",
    ActivityKind.PASSWORD_RESET: "New password set by the owner",
    ActivityKind.DEVICE_RENAMED: "Device renamed",
    ActivityKind.DEVICE_GIVEN: "Device given to another member",
    ActivityKind.COMMAND_SENT: "Command sent to a device",
    ActivityKind.APP_LINKED: "App linked",
    ActivityKind.APP_DENIED: "App denied",
    ActivityKind.APP_UNLINKED: "App unlinked",
}

# The filter's choices: a few groups a person thinks in, not every kind.
SHOW: dict[str, tuple[str, tuple[ActivityKind, ...] | None]] = {
    "all": ("Everything", None),
    "sign-ins": (
        "Sign-ins and passwords",
        (
            ActivityKind.SIGN_IN,
            ActivityKind.SIGN_IN_FAILED,
            ActivityKind.SIGN_IN_THROTTLED,
            ActivityKind.SIGN_OUT,
            ActivityKind.TWO_FACTOR_ENABLED,
            ActivityKind.TWO_FACTOR_DISABLED,
            ActivityKind.RECOVERY_CODE_USED,
            ActivityKind.RECOVERY_CODES_RENEWED,
            ActivityKind.PASSWORD_CHANGED,
            ActivityKind.PASSWORD_RESET,
        ),
    ),
    "devices": (
        "Devices",
        (
            ActivityKind.CODE_ENTRY_FAILED,
            ActivityKind.CODE_ENTRY_THROTTLED,
            ActivityKind.LINK_APPROVED,
            ActivityKind.LINK_DENIED,
            ActivityKind.DEVICE_UNLINKED,
            ActivityKind.DEVICE_RENAMED,
            ActivityKind.DEVICE_GIVEN,
        ),
    ),
    "apps": ("Apps", (ActivityKind.APP_LINKED, ActivityKind.APP_DENIED, ActivityKind.APP_UNLINKED)),
    "commands": ("Commands to devices", (ActivityKind.COMMAND_SENT,)),
    "settings": ("Settings", (ActivityKind.SETTINGS_CHANGED,)),
    "household": ("Household accounts", (ActivityKind.ACCOUNT_CREATED, ActivityKind.ACCOUNT_REMOVED)),
}


def what(kind: str) -> str:
    """The words for a kind; a kind added later still reads ("code_entry_throttled" ->
    "Code entry throttled") until it gets words of its own."""
    return WHAT.get(kind) or kind.replace("_", " ").capitalize()


@bp.get("/activity")
@login_required
def activity_page() -> str:
    show = request.args.get("show", "all")
    if show not in SHOW:
        show = "all"
    before = request.args.get("before", "")
    before_id = int(before) if before.isdigit() and len(before) < 19 else None
    # One more than a page: whether there is an older page to link to.
    events = services().activity.recent(
        g.account.id, PAGE_SIZE + 1, kinds=SHOW[show][1], before_id=before_id
    )
    older = events[PAGE_SIZE - 1].id if len(events) > PAGE_SIZE else None
    return render_template(
        "activity.html",
        events=events[:PAGE_SIZE],
        what=what,
        show=show,
        choices=SHOW,
        older=older,
        paged=before_id is not None,
    )
