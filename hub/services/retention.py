"""How long the hub keeps what piles up, and the pruner that enforces it.

Without this, the activity log, the account service's change log, delivered
outbox rows and ended link requests grow for ever: one device changing a
setting in a loop wrote about 1.6 GB an hour (issue 18, section 2), an SD card
in a day. The per-device limits (hub.core.rate_limits.DeviceLimits) bound how fast
rows arrive; this bounds how many stay.

Pruning deletes in small batches, each its own short transaction, with a pause
between them, on a thread of its own: on SQLite a delete holds the one write
lock, and a device's change must not wait behind a delete of a million rows.
Nothing here reads a setting's value; it only drops old rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, Table, delete, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.sql import ColumnElement

from hub.core.linking import LinkState
from hub.store.models import ActivityEvent, ChangeLogEntry, LinkRequestRecord, OutboxEntry

log = logging.getLogger(__name__)

DAY_S = 86400
# Ranges the configuration accepts (hub.config.loader names them in its messages).
DAYS_RANGE = (1, 3650)
PER_ACCOUNT_RANGE = (10, 10_000_000)

_ACTIVITY: Table = ActivityEvent.__table__  # type: ignore[attr-defined]
_CHANGE_LOG: Table = ChangeLogEntry.__table__  # type: ignore[attr-defined]
_OUTBOX: Table = OutboxEntry.__table__  # type: ignore[attr-defined]
_LINK_REQUESTS: Table = LinkRequestRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """What is kept, and for how long (docs/security.md, "What the hub keeps")."""

    # The activity log and the change log: whichever of the two limits is hit first.
    history_days: int = 90
    history_per_account: int = 1000
    # A delivered outbox row has done its work; kept a while to look into a problem.
    delivered_outbox_days: int = 1
    # Denied and expired link requests: a late poll still gets its final answer for this long.
    ended_link_requests_days: int = 30
    # How often the pruner runs, and how big one transaction may be.
    interval_s: float = 600.0
    batch_rows: int = 500


@dataclass(slots=True)
class Pruned:
    """Rows deleted by one run, per kind."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, rows: int) -> None:
        if rows:
            self.counts[kind] = self.counts.get(kind, 0) + rows

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class Pruner:
    """Deletes what the policy no longer keeps: at start, then every `interval_s`."""

    def __init__(
        self,
        engine: Engine,
        policy: RetentionPolicy,
        *,
        clock: Callable[[], float],
        pause_s: float = 0.02,
    ) -> None:
        self._engine = engine
        self._policy = policy
        self._clock = clock
        # Between two batches: other writers get the database in between.
        self._pause_s = pause_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                pruned = self.prune()
                if pruned.total:
                    log.info("retention: deleted %s", ", ".join(f"{n} {k}" for k, n in pruned.counts.items()))
            except Exception:  # the thread must survive a failing run; the rows wait for the next
                log.exception("retention: pruning failed; trying again in %.0f s", self._policy.interval_s)
            self._stop.wait(self._policy.interval_s)

    def prune(self) -> Pruned:
        """One run over everything; returns what it deleted."""
        policy, now = self._policy, self._clock()
        history_cutoff = now - policy.history_days * DAY_S
        pruned = Pruned()
        pruned.add(
            "activity entries", self._older(_ACTIVITY, _ACTIVITY.c.id, _ACTIVITY.c.at_s < history_cutoff)
        )
        pruned.add("activity entries", self._over_count(_ACTIVITY, _ACTIVITY.c.id, _ACTIVITY.c.at_s))
        pruned.add(
            "change log entries",
            self._older(_CHANGE_LOG, _CHANGE_LOG.c.seq, _CHANGE_LOG.c.received_at_s < history_cutoff),
        )
        pruned.add("change log entries", self._over_count(_CHANGE_LOG, _CHANGE_LOG.c.seq, _CHANGE_LOG.c.seq))
        # Only delivered rows: an undelivered change is never dropped, however old.
        pruned.add(
            "delivered outbox rows",
            self._older(
                _OUTBOX,
                _OUTBOX.c.seq,
                _OUTBOX.c.delivered_at_s < now - policy.delivered_outbox_days * DAY_S,
            ),
        )
        pruned.add(
            "ended link requests",
            self._older(
                _LINK_REQUESTS,
                _LINK_REQUESTS.c.request_id,
                _LINK_REQUESTS.c.state.in_([str(LinkState.DENIED), str(LinkState.EXPIRED)])
                & (_LINK_REQUESTS.c.expires_at_s < now - policy.ended_link_requests_days * DAY_S),
            ),
        )
        return pruned

    def _older(self, table: Table, key: ColumnElement, condition: ColumnElement[bool]) -> int:
        """Delete the rows matching `condition`, a batch per transaction."""
        return self._in_batches(table, key, select(key).where(condition))

    def _over_count(self, table: Table, key: ColumnElement, newest_first: ColumnElement) -> int:
        """Per account (and the rows of no account, as one more), all but the newest
        `history_per_account` rows."""
        keep = self._policy.history_per_account
        account = table.c.account_id
        with self._engine.connect() as conn:
            crowded = [
                row[0]
                for row in conn.execute(select(account).group_by(account).having(func.count() > keep)).all()
            ]
        deleted = 0
        for account_id in crowded:
            match = account.is_(None) if account_id is None else account == account_id
            # The newest `keep` stay; each batch deletes the next rows past them.
            past_the_newest = (
                select(key).where(match).order_by(newest_first.desc(), key.desc()).offset(keep)
            )
            deleted += self._in_batches(table, key, past_the_newest)
        return deleted

    def _in_batches(self, table: Table, key: ColumnElement, query: Select[Any]) -> int:
        deleted = 0
        while not self._stop.is_set():
            with self._engine.begin() as conn:
                ids = [row[0] for row in conn.execute(query.limit(self._policy.batch_rows)).all()]
                if not ids:
                    return deleted
                conn.execute(delete(table).where(key.in_(ids)))
            deleted += len(ids)
            if len(ids) < self._policy.batch_rows:
                return deleted
            self._stop.wait(self._pause_s)
        return deleted
