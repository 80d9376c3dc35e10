"""Limits on wrong code entries on /link, per account and per client address
(RFC 8628 §5.1: a user code is short, so guessing must be rate-limited).

Plain objects over `hub.core.rate_limits.Throttle`, no Flask: the page asks
`retry_after_s` before it even looks a code up, and reports each wrong entry
with `failed`. What the limits allow a guesser is worked out in
docs/security.md ("Guessing a code").

Which entries count: every well-formed code that does not lead to a code
waiting for approval (unknown, expired, denied, used). Those are the guesses.
A malformed entry (seven letters, a vowel) is a typo, not a guess at any
code: it looks nothing up, so it does not count, though it is refused like
any other entry while a limit holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from hub.core.rate_limits import LimitsPolicy, Throttle, address_key
from hub.services.links import CodeStatus

# Statuses that are a wrong guess at a live code.
COUNTED: frozenset[str] = frozenset(
    {
        CodeStatus.UNKNOWN,
        CodeStatus.EXPIRED,
        CodeStatus.DENIED,
        CodeStatus.USED,
        CodeStatus.USED_BY_OTHER_ACCOUNT,
    }
)
# Not counted: CodeStatus.USED_BY_YOU, the account's own approval seen again
# (Back or Reload after approving), which tells a guesser nothing.



def counts(status: str) -> bool:
    """Whether an entry that ended with `status` is a wrong guess."""
    return status in COUNTED


class Looked(Protocol):
    """What a code lookup found; only its status matters here."""

    @property
    def status(self) -> str: ...


L = TypeVar("L", bound=Looked)


@dataclass(frozen=True, slots=True)
class Refused:
    """Over a limit: the code was not looked up."""

    retry_after_s: int


@dataclass(frozen=True, slots=True)
class Checked(Generic[L]):
    found: L
    wrong: bool  # a wrong guess, counted against both limits
    limit_reached: bool  # ...and it used a limit up: the next entry waits


class WrongCodeLimits:
    """Wrong code entries per account and per address, each in a moving window.

    One instance per web app (kept with the app, not in a module global), so a
    test's app starts with fresh counts.
    """

    def __init__(self, policy: LimitsPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account = Throttle(policy.code_failures_per_account, clock=clock)
        self.per_address = Throttle(policy.code_failures_per_address, clock=clock)
        # Check, look up and count as one step: otherwise a burst of parallel
        # posts would all pass the check before the first wrong one is counted,
        # and the limit would bound nothing.
        self._lock = threading.Lock()

    def enter(
        self, account_id: int, remote_addr: str | None, look_up: Callable[[], L]
    ) -> Refused | Checked[L]:
        """Look a typed code up through `look_up` unless a limit holds, and count
        the entry if it was a wrong guess."""
        with self._lock:
            wait_s = self.retry_after_s(account_id, remote_addr)
            if wait_s:
                return Refused(wait_s)
            found = look_up()
            if not counts(found.status):
                return Checked(found, wrong=False, limit_reached=False)
            return Checked(found, wrong=True, limit_reached=self.failed(account_id, remote_addr))

    def retry_after_s(self, account_id: int, remote_addr: str | None) -> int:
        """0 if this account at this address may enter a code now, else seconds to wait."""
        return max(
            self.per_account.retry_after_s(str(account_id)),
            self.per_address.retry_after_s(address_key(remote_addr)),
        )

    def tries_left(self, account_id: int, remote_addr: str | None) -> int:
        """Wrong entries this account at this address may still make before even
        a right code waits: the page warns when few are left."""
        return min(
            self.per_account.remaining(str(account_id)),
            self.per_address.remaining(address_key(remote_addr)),
        )

    def failed(self, account_id: int, remote_addr: str | None) -> bool:
        """Count one wrong entry against both; True if it used up a limit (the
        next entry will wait), so the caller can note that once, not per refusal."""
        self.per_account.hit(str(account_id))
        self.per_address.hit(address_key(remote_addr))
        return self.retry_after_s(account_id, remote_addr) > 0
