"""Settings of the web pages, fixed when the app is made."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from hub.rate_limits import LimitsPolicy


@dataclass(frozen=True, slots=True)
class WebConfig:
    secret_key: str
    testing: bool = False
    # The same clock the hub uses, so "expires in 14 min" agrees with the hub's
    # own idea of expiry (tests pass the hub's FakeClock here).
    clock: Callable[[], float] = time.time
    # Sign-in and code-entry limits (hub/rate_limits.py, docs/security.md).
    limits: LimitsPolicy = field(default_factory=LimitsPolicy)
