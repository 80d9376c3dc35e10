"""Settings of the web pages, fixed when the app is made."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.core.rate_limits import LimitsPolicy

# Twelve hours: a day's use of a phone on plain HTTP, then the password again.
DEFAULT_SESSION_LIFETIME_S = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class WebConfig:
    secret_key: str
    testing: bool = False
    # The same clock the hub uses, so "expires in 14 min" agrees with the hub's
    # own idea of expiry (tests pass the hub's FakeClock here).
    clock: Callable[[], float] = time.time
    # Sign-in and code-entry limits (hub/core/rate_limits.py, docs/security.md).
    limits: LimitsPolicy = field(default_factory=LimitsPolicy)
    # Seconds that only go forward, for those limits' moving windows (a wall
    # clock set back would stretch a window); tests pass a FakeClock and move it.
    limits_clock: Callable[[], float] = time.monotonic
    # How long a signed-in session lasts. Short while the pages are plain HTTP:
    # anyone on the LAN who captured the cookie could use it until then (or until
    # its owner signs out, which ends it on the hub; docs/security.md).
    session_lifetime_s: float = DEFAULT_SESSION_LIFETIME_S
    # Password checks (argon2id, 64 MiB each) running at once, and how long a
    # sign-in waits for one before a 503 (web/password_checks.py).
    password_checks_at_once: int = 1
    password_check_wait_s: float = 2.0
    # Names the pages answer to besides loopback and the machine's addresses
    # (web/hosts.py): the mDNS name, public_host, web_hosts.
    host_names: tuple[str, ...] = ()
    # Lets a request from beyond loopback read /metrics and /healthz's detail
    # (`Authorization: Bearer TOKEN`, web/health.py); None: loopback only.
    probe_token: str | None = field(default=None, repr=False)
    # The pages are served over HTTPS (web/https.py): the session cookie is then
    # `__Host-linkhub_session`, Secure (RFC 6265bis §4.1.3.2).
    https: bool = False
    # /link lists the devices waiting to be linked (HubConfig.waiting_list).
    waiting_list: bool = True
