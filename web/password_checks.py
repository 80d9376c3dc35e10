"""How many password checks run at once.

A password check is argon2id at 64 MiB (argon2-cffi's defaults, RFC 9106 §4's
second recommended option), so its memory is the flood: 240 wrong sign-ins in
parallel from 8 addresses ran 8 checks at once (one per web thread that was not
waiting on its address's lock) and took the hub from 89 MB to 602 MB. A
household signs in a few times a day; one or two checks at once serve it.

A sign-in waits a little for a free slot (a person pressing twice, two phones
at once), then is refused quickly with 503 and Retry-After (RFC 9110 §15.6.4,
§10.2.3) instead of holding a web thread. The slot is taken before the name is
looked at, so the wait and the refusal are the same for a name that exists and
one that does not.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# What the hub answers in Retry-After while every slot is taken: a check takes
# about 0.3 s here and about 1 s on a Raspberry Pi 3.
BUSY_RETRY_AFTER_S = 5


class PasswordChecks:
    """At most `at_once` password checks in this process; the others wait up to `wait_s`."""

    def __init__(self, at_once: int, wait_s: float) -> None:
        if at_once < 1:
            raise ValueError("at least one password check must be allowed at a time")
        self._slots = threading.BoundedSemaphore(at_once)
        self._wait_s = wait_s

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """True inside a slot; False if none came free in time (then check nothing)."""
        slots = self._slots
        acquired = slots.acquire(timeout=self._wait_s) if self._wait_s > 0 else slots.acquire(blocking=False)
        try:
            yield acquired
        finally:
            if acquired:
                self._slots.release()
