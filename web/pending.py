"""Short-lived server-side state behind a random token in the session.

Two steps of signing in need to remember something between two requests that
must not sit in the session cookie (which the browser can read, and keeps for
30 days): who gave a right password and now owes a second factor, and the new
TOTP secret a person is enrolling. The cookie holds only a random token; the
value stays in this process, expires on its own, and is taken once.

A restart forgets it all, which costs a person one more password or a new QR
code, nothing more. The hub is one process, so memory is the right store.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

# Beyond this many live entries the oldest go first: a flood of half-finished
# sign-ins (each needs a right password) cannot grow memory without bound.
MAX_ENTRIES = 10_000


class Pending(Generic[T]):
    def __init__(self, lifetime_s: float, clock: Callable[[], float]) -> None:
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._entries: dict[str, tuple[float, T]] = {}  # insertion order = age
        self._lock = threading.Lock()

    def put(self, value: T) -> str:
        """Keep `value` for `lifetime_s`; the token (128 random bits) to find it again."""
        token = secrets.token_urlsafe(16)
        now_s = self._clock()
        with self._lock:
            self._drop_expired(now_s)
            while len(self._entries) >= MAX_ENTRIES:
                del self._entries[next(iter(self._entries))]
            self._entries[token] = (now_s + self.lifetime_s, value)
        return token

    def get(self, token: object) -> T | None:
        """The value, if `token` is one of ours and has not expired."""
        return self._find(token, remove=False)

    def take(self, token: object) -> T | None:
        """The value, removed in the same step: of two requests racing with one token, one gets it."""
        return self._find(token, remove=True)

    def discard(self, token: object) -> None:
        if isinstance(token, str):
            with self._lock:
                self._entries.pop(token, None)

    def _find(self, token: object, *, remove: bool) -> T | None:
        if not isinstance(token, str):
            return None
        with self._lock:
            found = self._entries.get(token)
            if found is None:
                return None
            alive = found[0] > self._clock()
            if remove or not alive:
                del self._entries[token]
            return found[1] if alive else None

    def _drop_expired(self, now_s: float) -> None:
        expired = [token for token, (until_s, _) in self._entries.items() if until_s <= now_s]
        for token in expired:
            del self._entries[token]
