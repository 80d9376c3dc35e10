"""Delivers accepted settings changes to the account service, in order, once.

The outbox is a table (OutboxEntry), written in the same transaction as the
change itself, so a change the hub accepted is never lost: not when the
account service is down, not when the hub restarts. Delivery stops at the
first entry that fails and retries it with exponential backoff, so the
service sees changes in the order they were made; `change_id` makes a
repeated delivery harmless (the service applies each id once).

Several hubs on one PostgreSQL database each run an outbox over the same
table: the entry being delivered is claimed with `SELECT ... FOR UPDATE` for
the length of its delivery (see `deliver_pending`), so one hub delivers it and
the next is taken only once it is marked delivered. A hub killed mid-delivery
releases its claim with its connection, and another hub delivers the entry
again (harmless, by `change_id`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from hub.core.accounts import SettingsChange, SettingsLedger
from hub.errors import LinkHubError
from hub.store.engine import session_scope
from hub.store.models import OutboxEntry

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        engine: Engine,
        directory: SettingsLedger,
        *,
        clock: Callable[[], float],
        min_backoff_s: float = 0.2,
        max_backoff_s: float = 30.0,
    ) -> None:
        self._engine = engine
        self._directory = directory
        self._clock = clock
        self._min_backoff_s = min_backoff_s
        self._max_backoff_s = max_backoff_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retry_at = 0.0  # monotonic; retries wait on real time, not the business clock
        self._failures = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="settings-outbox", daemon=True)
        self._thread.start()
        self._wake.set()  # whatever an earlier run left undelivered

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def notify(self) -> None:
        """A new entry was committed: deliver it now (unless backing off)."""
        self._wake.set()

    def pending(self) -> int:
        with session_scope(self._engine) as session:
            query = (
                select(func.count()).select_from(OutboxEntry).where(col(OutboxEntry.delivered_at_s).is_(None))
            )
            return int(session.exec(query).one())

    def _run(self) -> None:
        while not self._stop.is_set():
            wait_s = max(0.0, self._retry_at - time.monotonic())
            self._wake.wait(timeout=wait_s if wait_s > 0 else 5.0)
            self._wake.clear()
            if self._stop.is_set() or time.monotonic() < self._retry_at:
                continue
            try:
                self.deliver_pending()
            except Exception:  # the loop must survive anything; the entry stays queued
                log.exception("settings outbox failed; retrying")
                self._back_off()

    def deliver_pending(self) -> int:
        """Deliver queued entries in order until none is left or one fails.

        The oldest entry is claimed with FOR UPDATE, not SKIP LOCKED: a second
        hub must wait for it, never go on to a later one, or the account service
        could get a subject's version N+1 before N and drop N as old. Once the
        first hub commits, PostgreSQL re-checks the row the second one waited
        for, finds it delivered and passes over it (PostgreSQL docs, SELECT,
        "The Locking Clause"; READ COMMITTED): whatever the second hub takes
        then comes after an entry already delivered, so the service still sees
        each subject's changes in order. Entries of one subject get their `seq`
        in version order, under the account's lock (hub.store.engine.lock_account_settings).
        SQLite has no FOR UPDATE (SQLAlchemy leaves it out); it has one hub per file.
        """
        delivered = 0
        while not self._stop.is_set():
            with session_scope(self._engine) as session:
                entry = session.exec(
                    select(OutboxEntry)
                    .where(col(OutboxEntry.delivered_at_s).is_(None))
                    .order_by(col(OutboxEntry.seq))
                    .limit(1)
                    .with_for_update()
                ).first()
                if entry is None:
                    self._failures = 0
                    return delivered
                change = SettingsChange.from_row(entry)
                try:
                    self._directory.apply_change(change)
                except LinkHubError as exc:
                    entry.attempts += 1
                    entry.last_error = str(exc)[:500]
                    session.add(entry)
                    self._back_off()
                    log.warning(
                        "account service unavailable (%s); change %s and later ones wait, retry in %.1f s",
                        exc,
                        entry.seq,
                        self._retry_at - time.monotonic(),
                    )
                    return delivered
                entry.delivered_at_s = self._clock()
                session.add(entry)
            delivered += 1
            self._failures = 0
        return delivered

    def _back_off(self) -> None:
        self._failures += 1
        delay = min(self._max_backoff_s, self._min_backoff_s * 2 ** (self._failures - 1))
        self._retry_at = time.monotonic() + delay
