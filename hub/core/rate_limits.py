"""Limits on guessing: failed sign-ins, wrong codes, link requests.

Limits are written "10 per 15 minutes". The counting is a moving-window log
per key, in memory. (This was the `limits` library at first; its in-memory
storage starts a timer thread every 10 ms while anything is counted and sweeps
every key from it, which at hundreds of link requests a second cost the hub's
request thread a fifth of its time, and importing it cost 1.7 MB of the idle
hub's 80: docs/performance.md.) The hub is one process, so memory is the right
store; a restart forgets the counts, which costs a guesser a restart of
someone else's Pi, not something they can cause.

Each `Throttle` counts events per key ("account:alice", "address:192.168.1.7")
and answers how long a key must wait; the numbers themselves live in
`LimitsPolicy` so docs/security.md can work out what they allow.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from ipaddress import IPv6Address, IPv6Network, ip_address


@dataclass(frozen=True, slots=True)
class LimitsPolicy:
    """Every limit, as rates ("10 per 15 minutes", see `parse_rate`): given as text
    or as a `Rate`, and held as a `Rate`, read once here."""

    sign_in_failures_per_account: Rate | str = "10 per 15 minutes"
    sign_in_failures_per_address: Rate | str = "30 per 15 minutes"
    # Only someone who has the password reaches the second factor, so a tight
    # daily limit there costs the real person nothing (docs/security.md).
    second_factor_failures_per_account: Rate | str = "10 per day"
    code_failures_per_account: Rate | str = "10 per 15 minutes"
    code_failures_per_address: Rate | str = "20 per 15 minutes"
    link_requests_per_client: Rate | str = "5 per minute"
    link_requests_total: Rate | str = "60 per minute"
    max_pending_requests: int = 100
    # What one linked device may send, per kind of message (DeviceLimits). Each
    # accepted settings_set writes a change, an activity entry and an outbox row,
    # so its limit bounds how fast one device can grow the database
    # (docs/protocol.md section 11, docs/performance.md).
    device_settings_sets: Rate | str = "30 per minute"
    device_reports: Rate | str = "60 per minute"
    device_settings_gets: Rate | str = "12 per minute"
    device_status: Rate | str = "12 per minute"
    # A description comes after each connect; a state after each change, and a
    # sensor's every few seconds (docs/protocol.md, "Components, state and commands").
    device_descriptions: Rate | str = "12 per minute"
    device_states: Rate | str = "120 per minute"

    def __post_init__(self) -> None:
        for policy_field in fields(self):
            value = getattr(self, policy_field.name)
            if isinstance(value, str):  # every text field is a rate
                object.__setattr__(self, policy_field.name, parse_rate(value))

    def device_rates(self) -> dict[str, Rate | str]:
        """Rate per kind of device message: the keys are the `type` a device
        sends. A new kind of message (state, commands) adds its field and its
        entry here; DeviceLimits refuses to count a kind it has no limit for."""
        return {
            "settings_set": self.device_settings_sets,
            "reported": self.device_reports,
            "settings_get": self.device_settings_gets,
            "status": self.device_status,
            "description": self.device_descriptions,
            "state": self.device_states,
        }


_UNIT_S = {"second": 1, "minute": 60, "hour": 3600, "day": 86400}
_RATE = re.compile(
    r"\s*(\d{1,9})\s*(?:\s+per\s+|/)\s*(?:(\d{1,6})\s*)?(second|minute|hour|day)s?\s*", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Rate:
    """At most `amount` events in any `window_s` seconds."""

    amount: int
    per: int  # how many units: 15 in "10 per 15 minutes"
    unit: str  # second, minute, hour or day

    @property
    def window_s(self) -> int:
        return self.per * _UNIT_S[self.unit]

    def __str__(self) -> str:
        if self.per == 1:
            return f"{self.amount} per {self.unit}"
        return f"{self.amount} per {self.per} {self.unit}s"


def parse_rate(text: str) -> Rate:
    """ "5 per minute", "10 per 15 minutes" (or "5/minute") as a limit; ValueError if it is not
    one, or allows nothing (a limit of 0 would refuse everything)."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a rate like '5 per minute' or '10 per 15 minutes'")
    amount, per, unit = int(match[1]), int(match[2] or 1), match[3].lower()
    if amount < 1 or per < 1:
        raise ValueError(f"{text!r} is not a rate of at least 1")
    return Rate(amount, per, unit)


class Throttle:
    """Counts events per key in a moving window; a key at its limit waits until
    its oldest counted event is older than the window."""

    # Keys whose events have all left the window are dropped when the table has
    # doubled since the last sweep, so a flood of names or client ids is forgotten.
    _SWEEP_FLOOR = 1024

    def __init__(self, limit: Rate | str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit if isinstance(limit, Rate) else parse_rate(limit)
        self._amount = self.limit.amount
        self._window_s = float(self.limit.window_s)
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

    def remaining(self, key: str) -> int:
        """How many more events `key` may have in the window now."""
        with self._lock:
            return max(0, self._amount - len(self._live(key, self._clock())))

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


class DeviceLimits:
    """Per-device limits on what a linked device sends, one moving window per
    kind of message and device.

    A linked device has its own broker identity, so the device id in the topic
    is who sent it (the broker's ACL keeps it inside its subtree, hub/broker/dynsec.py):
    unlike link requests there is nothing to count in total. An over-limit
    message changes nothing and is not counted; the device is told when to send
    again, as a link request is with slow_down.
    """

    def __init__(
        self, rates: Mapping[str, Rate | str], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock  # also what the caller spaces its answers and log lines by
        self._throttles = {kind: Throttle(rate, clock=clock) for kind, rate in rates.items()}

    def rate(self, kind: str) -> Rate:
        return self._throttles[kind].limit

    def admit(self, device_id: str, kind: str) -> int:
        """0, and the message is counted, if `device_id` may send a `kind` now;
        else whole seconds until it may. KeyError for a kind without a limit:
        a new kind of message must be given one (LimitsPolicy.device_rates)."""
        throttle = self._throttles[kind]
        if throttle.hit(device_id):
            return 0
        return max(1, throttle.retry_after_s(device_id))

    def forget(self, device_id: str) -> None:
        """An unlinked device's counts (its id is never used again)."""
        for throttle in self._throttles.values():
            throttle.clear(device_id)


# One IPv6 host can use any address of its /64 (privacy addresses, RFC 8981),
# so an IPv6 client is counted by its /64, the way an IPv4 client is by its address.
IPV6_PREFIX_LENGTH = 64


def address_key(remote_addr: str | None) -> str:
    """The key a client address is counted under: the IPv4 address, or the
    IPv6 /64 (an IPv4-mapped IPv6 address counts as its IPv4 address)."""
    if not remote_addr:
        return "unknown"
    try:
        address = ip_address(remote_addr.split("%", 1)[0])
    except ValueError:
        # Not an IP (a unix socket, a test client): count the text as it is.
        return remote_addr[:64]
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(IPv6Network((address, IPV6_PREFIX_LENGTH), strict=False))
    return str(address)


def wait_words(seconds: int) -> str:
    """ "about 3 minutes" for messages a person reads."""
    if seconds < 90:
        return f"{seconds} seconds" if seconds != 1 else "1 second"
    if seconds < 2 * 3600:
        return f"about {math.ceil(seconds / 60)} minutes"
    return f"about {math.ceil(seconds / 3600)} hours"
