"""Limits on failed sign-ins, per account name and per client address.

Plain objects over `hub.core.rate_limits.Throttle`, no Flask. What counts is a
failure: a wrong password, or a wrong second factor after a right password.
The per-account count is kept for the name as typed (trimmed, case folded),
whether or not an account has that name, and the limits are checked before
the password is: so a refusal, its words and its timing are the same for an
account that exists and one that does not, and a guesser learns nothing from
being stopped.

A successful sign-in resets neither count. If it reset the per-address count,
a household member could clear it between guesses at someone else's account
by signing in to their own; if it reset the per-account count, each time the
real owner signs in a guesser would get a fresh allowance. The windows move,
so old failures drain away on their own.

Wrong second factors count against both of those and, per account, against a
tighter daily limit of their own: only someone who has the password gets that
far, and 10 a day keeps a TOTP guesser (3 live codes in a million) to about 1 %
a year (docs/security.md, "Signing in").

Trade-off, knowingly taken: anyone can keep an account name's limit used up
and so keep that person from signing in for as long as they keep at it. On a
home network the one doing that is found easily (the address is in the
activity log), and a locked-out person is better than a guessed password.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from hub.core.rate_limits import LimitsPolicy, Throttle, address_key

T = TypeVar("T")

# Check, try and count as one step per key, or parallel posts would all pass the
# check before the first failure is counted. Striped, so a slow password check
# for one name does not hold up sign-ins to other names.
_STRIPES = 64
_MAX_NAME_KEY = 128  # no account name is longer than 64; longer input still counts, truncated


def name_key(typed_name: str) -> str:
    """The per-account key: what two spellings of one name have in common."""
    return typed_name.strip().casefold()[:_MAX_NAME_KEY]


@dataclass(frozen=True, slots=True)
class Refused:
    """Over a limit: nothing was checked."""

    retry_after_s: int


@dataclass(frozen=True, slots=True)
class Tried(Generic[T]):
    result: T | None  # None: the check failed, and it was counted
    limit_reached: bool  # this failure used a limit up: the next try waits


class SignInLimits:
    """One per web app (kept with the app, not in a module global), so each test starts afresh."""

    def __init__(self, policy: LimitsPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_account = Throttle(policy.sign_in_failures_per_account, clock=clock)
        self.per_address = Throttle(policy.sign_in_failures_per_address, clock=clock)
        self.second_factor_per_account = Throttle(policy.second_factor_failures_per_account, clock=clock)
        self._account_locks = [threading.Lock() for _ in range(_STRIPES)]
        self._address_locks = [threading.Lock() for _ in range(_STRIPES)]

    def attempt(
        self,
        typed_name: str,
        remote_addr: str | None,
        check: Callable[[], T | None],
        *,
        second_factor: bool = False,
    ) -> Refused | Tried[T]:
        """Run `check` (a password or, with `second_factor`, a code) unless a limit
        holds; count it if it fails."""
        account, address = name_key(typed_name), address_key(remote_addr)
        # Always the account's lock first, then the address's: no two requests
        # can each hold the lock the other waits for.
        with self._stripe(self._account_locks, account), self._stripe(self._address_locks, address):
            wait_s = self._retry_after_s(account, address, second_factor)
            if wait_s:
                return Refused(wait_s)
            result = check()
            if result is not None:
                return Tried(result, limit_reached=False)
            self.per_account.hit(f"account:{account}")
            self.per_address.hit(f"address:{address}")
            if second_factor:
                self.second_factor_per_account.hit(f"account:{account}")
            return Tried(None, limit_reached=self._retry_after_s(account, address, second_factor) > 0)

    def retry_after_s(self, typed_name: str, remote_addr: str | None, *, second_factor: bool = False) -> int:
        """0 if this name may be tried from this address now, else whole seconds to wait."""
        return self._retry_after_s(name_key(typed_name), address_key(remote_addr), second_factor)

    def _retry_after_s(self, account: str, address: str, second_factor: bool) -> int:
        waits = [
            self.per_account.retry_after_s(f"account:{account}"),
            self.per_address.retry_after_s(f"address:{address}"),
        ]
        if second_factor:
            waits.append(self.second_factor_per_account.retry_after_s(f"account:{account}"))
        return max(waits)

    @staticmethod
    def _stripe(locks: list[threading.Lock], key: str) -> threading.Lock:
        return locks[zlib.crc32(key.encode("utf-8", "surrogateescape")) % _STRIPES]
