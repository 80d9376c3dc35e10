"""Limits on guessing: failed sign-ins, wrong codes, link requests.

A thin layer over the `limits` library (moving windows, in memory). The hub is
one process, so memory is the right store; a restart forgets the counts, which
costs a guesser a restart of someone else's Pi, not something they can cause.
Each `Throttle` counts events per key ("account:alice", "address:192.168.1.7")
and answers how long a key must wait; the numbers themselves live in
`LimitsPolicy` so docs/security.md can work out what they allow.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter


@dataclass(frozen=True, slots=True)
class LimitsPolicy:
    """Every limit, as `limits` strings ("10 per 15 minutes")."""

    sign_in_failures_per_account: str = "10 per 15 minutes"
    sign_in_failures_per_address: str = "30 per 15 minutes"
    # Only someone who has the password reaches the second factor, so a tight
    # daily limit there costs the real person nothing (docs/security.md).
    second_factor_failures_per_account: str = "10 per day"
    code_failures_per_account: str = "10 per 15 minutes"
    code_failures_per_address: str = "20 per 15 minutes"
    link_requests_per_client: str = "5 per minute"
    link_requests_total: str = "60 per minute"
    max_pending_requests: int = 100


def parse_rate(text: str) -> RateLimitItem:
    """"5 per minute" as a limit; ValueError if it is not one, or allows nothing
    (a configuration check: a limit of 0 would refuse everything)."""
    try:
        rate = parse(text)
    except ValueError:
        raise
    except Exception as exc:  # the library raises its own errors for some malformed strings
        raise ValueError(str(exc)) from None
    if rate.amount < 1 or ";" in text or "," in text:
        raise ValueError(f"{text!r} is not one rate of at least 1")
    return rate


class Throttle:
    """Counts events per key in a moving window; a key over the limit waits."""

    def __init__(self, limit: str, *, storage: MemoryStorage | None = None) -> None:
        self.limit: RateLimitItem = parse(limit)
        self._storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)

    def retry_after_s(self, key: str) -> int:
        """0 when `key` may try now, else whole seconds until it may."""
        if self._limiter.test(self.limit, key):
            return 0
        reset_at = self._limiter.get_window_stats(self.limit, key).reset_time
        return max(1, math.ceil(reset_at - time.time()))

    def hit(self, key: str) -> bool:
        """Count one event; False if `key` was already at its limit (and is not counted)."""
        return self._limiter.hit(self.limit, key)

    def clear(self, key: str) -> None:
        self._limiter.clear(self.limit, key)


def wait_words(seconds: int) -> str:
    """"about 3 minutes" for messages a person reads."""
    if seconds < 90:
        return f"{seconds} seconds" if seconds != 1 else "1 second"
    if seconds < 2 * 3600:
        return f"about {math.ceil(seconds / 60)} minutes"
    return f"about {math.ceil(seconds / 3600)} hours"
