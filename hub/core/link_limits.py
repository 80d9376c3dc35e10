"""Limits on new link requests over MQTT: per client, in total, and a cap on
codes waiting for a person.

Every new request costs a database row and takes a user code out of the code
space while it is pending, and the bootstrap identity that sends them is
public. So a flood, by a broken device stuck in a loop or by someone on the
LAN, is stopped here before anything is written:

- per client id (the last level of the request topic): one device cannot use
  the hub's capacity up on its own;
- in total: however many client ids a flood uses, new rows arrive at a bounded
  rate;
- codes per client id: one client id may take no more new requests in a code
  lifetime than in a minute (the per-client rate), so one connection cannot
  fill the pending cap with codes that wait out their lifetime (issue 19);
- pending cap: at most `max_pending_requests` codes wait at once, which bounds
  both the table's growth per code lifetime and a code guesser's odds
  (docs/security.md).

Only new requests count. A repeat of a known request_id (a poll) is answered
from the table as before and is not limited here; the device's poll interval
and RFC 8628's slow_down govern it. A refused request is not counted either:
it is as if it had not arrived, and the device resends the same request later.

Plain logic over hub.core.rate_limits.Throttle: no database and no broker, so it is
tested on its own; LinkService asks it, then writes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from hub.core.rate_limits import LimitsPolicy, Throttle, wait_words
from linkhub_protocol import ErrorCode

_TOTAL_KEY = "all"


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a new request is not taken now, and when to send it again."""

    error: ErrorCode
    description: str
    retry_after_s: int


def _rate(throttle: Throttle) -> str:
    return str(throttle.limit)


class LinkRequestLimits:
    """Admits or refuses new link requests; one instance per hub process.

    The counts are in memory, like every Throttle: several hub processes on
    one broker each count what reaches them (the shared subscription spreads
    requests across them), and a restart forgets. The pending cap is counted
    in the database by the caller, so it holds across processes.
    """

    def __init__(
        self,
        policy: LimitsPolicy,
        *,
        code_lifetime_s: int = 900,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_client = Throttle(policy.link_requests_per_client, clock=clock)
        # The per-client rate alone lets one client id take 5 a minute, 75 in a
        # 15-minute code lifetime: three quarters of the pending cap. Where the
        # broker makes the id the connection's own (mosquitto 2.1+ `%c`), this
        # bounds one connection to the rate's amount of live codes
        # (docs/security.md, "Link requests", for the math).
        self.per_client_codes = Throttle(
            f"{self.per_client.limit.amount} per {math.ceil(code_lifetime_s / 60)} minutes", clock=clock
        )
        self.total = Throttle(policy.link_requests_total, clock=clock)
        self.max_pending = policy.max_pending_requests
        # The shell handles requests on one thread, but the check and the count
        # must be one step for any caller.
        self._lock = threading.Lock()

    def admit(self, client_id: str, *, pending: int, next_expiry_in_s: int | None) -> Refusal | None:
        """None, and the request is counted, if a new request from `client_id` may
        be taken now; else the refusal to send back, counted nowhere.

        `pending` is how many codes wait for a person now; `next_expiry_in_s`
        when the first of them expires (the earliest a slot frees up by itself).
        """
        with self._lock:
            wait = self.per_client.retry_after_s(client_id)
            if wait:
                return Refusal(
                    ErrorCode.SLOW_DOWN,
                    f"Too many new link requests from this client (at most {_rate(self.per_client)}); "
                    f"resend the same request in {wait_words(wait)}.",
                    wait,
                )
            wait = self.per_client_codes.retry_after_s(client_id)
            if wait:
                return Refusal(
                    ErrorCode.TOO_MANY_PENDING,
                    f"This client already took {self.per_client_codes.limit.amount} new link requests "
                    f"in a code's lifetime; resend the same request in {wait_words(wait)}.",
                    wait,
                )
            wait = self.total.retry_after_s(_TOTAL_KEY)
            if wait:
                return Refusal(
                    ErrorCode.SLOW_DOWN,
                    f"Too many new link requests at the hub (at most {_rate(self.total)} from all "
                    f"clients); resend the same request in {wait_words(wait)}.",
                    wait,
                )
            if pending >= self.max_pending:
                wait = max(1, next_expiry_in_s or 0)
                return Refusal(
                    ErrorCode.TOO_MANY_PENDING,
                    f"{pending} codes are already waiting for approval on the hub (at most "
                    f"{self.max_pending}); resend the same request in {wait_words(wait)}.",
                    wait,
                )
            self.per_client.hit(client_id)
            self.per_client_codes.hit(client_id)
            self.total.hit(_TOTAL_KEY)
            return None


class LogEvery:
    """At most one log line per `interval_s` for one kind of event, saying how many
    happened since the last: a flood of refused requests must not become a flood
    of log lines too (on a Pi, the log is on an SD card)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self._last_s: float | None = None
        self._count = 0
        self._lock = threading.Lock()

    def due(self, now_s: float) -> int:
        """Count one event; the number to report (this one included) if a line is
        due now, else 0."""
        with self._lock:
            self._count += 1
            if self._last_s is not None and now_s - self._last_s < self.interval_s:
                return 0
            count, self._count, self._last_s = self._count, 0, now_s
            return count
