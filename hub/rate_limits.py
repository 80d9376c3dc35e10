"""Limits on guessing: failed sign-ins, wrong codes, link requests.

Limits are written as the `limits` library reads them ("10 per 15 minutes")
and parsed by it. The counting is a moving-window log per key, here, in
memory: the library's own in-memory storage starts a timer thread every 10 ms
while anything is counted and sweeps every key from it, which at hundreds of
link requests a second cost the hub's request thread a fifth of its time
(docs/performance.md, link). The hub is one process, so memory is the right
store; a restart forgets the counts, which costs a guesser a restart of
someone else's Pi, not something they can cause.

Each `Throttle` counts events per key ("account:alice", "address:192.168.1.7")
and answers how long a key must wait; the numbers themselves live in
`LimitsPolicy` so docs/security.md can work out what they allow.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from limits import RateLimitItem, parse


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
    """Counts events per key in a moving window; a key at its limit waits until
    its oldest counted event is older than the window."""

    # Keys whose events have all left the window are dropped when the table has
    # doubled since the last sweep, so a flood of names or client ids is forgotten.
    _SWEEP_FLOOR = 1024

    def __init__(self, limit: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit: RateLimitItem = parse(limit)
        self._amount = self.limit.amount
        self._window_s = float(self.limit.get_expiry())
        self._clock = clock
        self._events: dict[str, deque[float]] = {}
        self._sweep_at = self._SWEEP_FLOOR
        self._lock = threading.Lock()

    def retry_after_s(self, key: str) -> int:
        """0 when `key` may try now, else whole seconds until it may."""
        with self._lock:
            now = self._clock()
            events = self._live(key, now)
            if len(events) < self._amount:
                return 0
            return max(1, math.ceil(events[-self._amount] + self._window_s - now))

    def hit(self, key: str) -> bool:
        """Count one event; False if `key` was already at its limit (and is not counted)."""
        with self._lock:
            now = self._clock()
            events = self._live(key, now)
            if len(events) >= self._amount:
                return False
            events.append(now)
            self._events[key] = events
            if len(self._events) >= self._sweep_at:
                self._sweep(now)
            return True

    def clear(self, key: str) -> None:
        with self._lock:
            self._events.pop(key, None)

    def _live(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        cutoff = now - self._window_s
        while events and events[0] <= cutoff:
            events.popleft()
        return events

    def _sweep(self, now: float) -> None:
        for key in list(self._events):
            if not self._live(key, now):
                del self._events[key]
        self._sweep_at = max(self._SWEEP_FLOOR, 2 * len(self._events))


def wait_words(seconds: int) -> str:
    """"about 3 minutes" for messages a person reads."""
    if seconds < 90:
        return f"{seconds} seconds" if seconds != 1 else "1 second"
    if seconds < 2 * 3600:
        return f"about {math.ceil(seconds / 60)} minutes"
    return f"about {math.ceil(seconds / 3600)} hours"
