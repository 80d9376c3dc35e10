"""/activity: what happened to the signed-in account, newest first.

Sign-ins (failed ones too, with the address they came from), devices linked,
denied and unlinked, settings changes, accounts made and removed: what a
person reviews after seeing a device or a sign-in they do not recognise. The
log is per account: nobody sees another account's events here, the owner
included (the hub's operator sees them all with `linkhub activity`).
"""

from __future__ import annotations

from flask import Blueprint, g, render_template

from hub.services.activity import ActivityKind
from web.auth import login_required
from web.services import services

bp = Blueprint("activity", __name__)

# The newest this many: enough to look back over weeks of a household's use.
PAGE_SIZE = 100

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
}


def what(kind: str) -> str:
    """The words for a kind; a kind added later still reads ("code_entry_throttled" ->
    "Code entry throttled") until it gets words of its own."""
    return WHAT.get(kind) or kind.replace("_", " ").capitalize()


@bp.get("/activity")
@login_required
def activity_page() -> str:
    events = services().activity.recent(g.account.id, limit=PAGE_SIZE)
    return render_template("activity.html", events=events, what=what, page_size=PAGE_SIZE)
