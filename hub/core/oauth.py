"""The rules of linking an app over HTTP (OAuth 2.0's device authorization
grant, RFC 8628), pure: the scopes and the words a person reads for each,
token lifetimes, which client ids are acceptable, and when a poll is too soon.

The HTTP side (web/oauth/) speaks the protocol through Authlib; the state lives
in hub/services/apps.py. These rules are what both rely on, without I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hub.errors import AppRefused

# RFC 8628 §3.5: slow_down adds 5 s to the interval (the hub's poll_interval_s,
# 5 s by default as §3.2 says) "for this and all subsequent requests".
SLOW_DOWN_STEP_S = 5
# A client that waits the interval is not "too soon" because its request arrived
# a little early after a slow one: the gap is measured on arrival, so a poll is
# too soon only below this share of the interval.
POLL_TOLERANCE = 0.8

# An access token is short-lived: unlinking the app stops it at once anyway
# (every use is checked against the hub's records), so the lifetime only
# bounds what a copied token is worth to someone who also copied nothing else.
ACCESS_TOKEN_LIFETIME_S = 3600
# A refresh token rotates on every use (RFC 9700 §4.14.2); one unused for this
# long ends the link: an app not opened for 90 days asks again.
REFRESH_TOKEN_LIFETIME_S = 90 * 24 * 3600
ID_TOKEN_LIFETIME_S = 3600

# OpenID Connect's own scopes, and the hub's. Each has the words the confirm
# page shows (what the app may do), in the order they are listed there.
OPENID_SCOPES = ("openid", "profile", "offline_access")
DEVICES_READ = "devices:read"
DEVICES_COMMAND = "devices:command"
SETTINGS_READ = "settings:read"
SETTINGS_WRITE = "settings:write"
SCOPE_WORDS: dict[str, str] = {
    "openid": "Know which account on this hub approved it",
    "profile": "See your account's name",
    "offline_access": "Stay linked while you are away (until you unlink it)",
    DEVICES_READ: "See your linked devices and what they report",
    DEVICES_COMMAND: "Switch and set your devices (send them commands)",
    SETTINGS_READ: "See your devices' settings",
    SETTINGS_WRITE: "Change your devices' settings",
}
ALL_SCOPES = tuple(SCOPE_WORDS)
# A scope that carries another: changing settings needs reading them, commands need the devices.
IMPLIED: dict[str, tuple[str, ...]] = {SETTINGS_WRITE: (SETTINGS_READ,), DEVICES_COMMAND: (DEVICES_READ,)}

# RFC 6749 §A.1: client_id is VSCHAR (printable ASCII). Shorter than that is
# enough for any real client id (UUIDs, reverse-DNS names) and fits a page.
MAX_CLIENT_ID = 128
_CLIENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_CLIENT_ID}}}")
MAX_APP_NAME = 64


def client_id_problem(client_id: str) -> str | None:
    """Why `client_id` cannot be an app's id, or None."""
    if not _CLIENT_ID.fullmatch(client_id):
        return f"an app's client_id is 1 to {MAX_CLIENT_ID} printable characters without spaces"
    return None


def app_name_problem(name: str) -> str | None:
    if not name.strip() or len(name) > MAX_APP_NAME or not name.isprintable():
        return f"an app's name is 1 to {MAX_APP_NAME} printable characters"
    return None


def parse_scopes(text: str | None, *, allowed: tuple[str, ...] = ALL_SCOPES) -> tuple[str, ...]:
    """The scopes in a space-separated `scope` parameter (RFC 6749 §3.3), in the
    hub's order, duplicates dropped; refused (`invalid_scope`) naming one the app may not ask."""
    asked = (text or "").split()
    for scope in asked:
        if scope not in SCOPE_WORDS:
            raise AppRefused("invalid_scope", f"this hub offers no scope {scope!r}")
        if scope not in allowed:
            raise AppRefused("invalid_scope", f"this app may not ask for {scope!r}")
    return tuple(scope for scope in ALL_SCOPES if scope in asked)


def grants(scopes: tuple[str, ...] | frozenset[str], needed: str) -> bool:
    """Whether a token with `scopes` may do what `needed` allows."""
    return needed in scopes or any(needed in IMPLIED.get(scope, ()) for scope in scopes)


@dataclass(frozen=True, slots=True)
class PollPace:
    """Whether a poll came too soon (RFC 8628 §3.5), and the interval from now on."""

    too_soon: bool
    interval_s: int


def poll_pace(last_poll_s: float | None, interval_s: int, now_s: float) -> PollPace:
    """slow_down when this poll of a device_code came less than the interval after
    the last one of the same code; never on the first. The interval grows by
    5 s with each slow_down and stays grown."""
    if last_poll_s is not None and now_s - last_poll_s < interval_s * POLL_TOLERANCE:
        return PollPace(True, interval_s + SLOW_DOWN_STEP_S)
    return PollPace(False, interval_s)
