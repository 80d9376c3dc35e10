"""Retention: old activity, change log entries, delivered outbox rows and ended
link requests are pruned by age and count, in small batches, and nothing the
hub still needs is touched. On SQLite and PostgreSQL, with an injected clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import FakeClock, wait_until
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import col, func, select

from hub.core.linking import LinkState
from hub.services.retention import DAY_S, Pruner, RetentionPolicy
from hub.store.engine import make_engine, session_scope
from hub.store.models import ActivityEvent, ChangeLogEntry, LinkRequestRecord, OutboxEntry


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def activity(engine: Engine, account_id: int | None, ages_days: list[float], now: float) -> None:
    with session_scope(engine) as session:
        for age in ages_days:
            session.add(ActivityEvent(account_id=account_id, at_s=now - age * DAY_S, kind="settings_changed"))


def activity_ages(engine: Engine, account_id: int | None, now: float) -> list[float]:
    with session_scope(engine) as session:
        match = (
            col(ActivityEvent.account_id).is_(None)
            if account_id is None
            else ActivityEvent.account_id == account_id
        )
        rows = session.exec(select(ActivityEvent.at_s).where(match).order_by(col(ActivityEvent.at_s))).all()
        return [round((now - at) / DAY_S, 3) for at in rows]


def count(engine: Engine, table: type) -> int:
    with session_scope(engine) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def test_activity_is_kept_by_age_and_by_count_per_account(engine: Engine) -> None:
    clock = FakeClock()
    now = clock()
    activity(engine, 1, [100, 91, 89, 1], now)  # two too old
    activity(engine, 2, [float(n) / 10 for n in range(30)], now)  # 30 recent: over the count
    activity(engine, None, [float(n) / 10 for n in range(25)], now)  # no account: counted as one more
    pruner = Pruner(
        engine, RetentionPolicy(history_days=90, history_per_account=20, batch_rows=7), clock=clock
    )

    pruned = pruner.prune()

    assert activity_ages(engine, 1, now) == [89.0, 1.0]
    assert activity_ages(engine, 2, now) == [float(n) / 10 for n in range(20)][::-1]  # the newest 20
    assert len(activity_ages(engine, None, now)) == 20
    assert pruned.counts == {"activity entries": 2 + 10 + 5}
    assert pruner.prune().total == 0  # nothing more to do

    clock.advance(2 * DAY_S)  # time passes: what was 89 days old is now too old
    assert pruner.prune().counts == {"activity entries": 1}
    assert activity_ages(engine, 1, clock()) == [3.0]


def test_the_change_log_is_kept_by_age_and_count(engine: Engine) -> None:
    clock = FakeClock()
    now = clock()
    with session_scope(engine) as session:
        for n in range(15):
            session.add(
                ChangeLogEntry(
                    change_id=f"c{n}",
                    kind="device_settings",
                    account_id=1,
                    device_id="lamp-1",
                    patch_json="{}",
                    version=n + 1,
                    origin="device",
                    made_at_s=now,
                    received_at_s=now - (200 if n < 3 else 1) * DAY_S + n,
                )
            )
    Pruner(engine, RetentionPolicy(history_days=90, history_per_account=10), clock=clock).prune()
    with session_scope(engine) as session:
        kept = session.exec(select(ChangeLogEntry.version).order_by(col(ChangeLogEntry.seq))).all()
    assert kept == list(range(6, 16))  # the 3 old ones by age, then the oldest 2 by count


def test_only_delivered_outbox_rows_are_pruned(engine: Engine) -> None:
    clock = FakeClock()
    now = clock()
    with session_scope(engine) as session:
        for n, (made_days, delivered_days) in enumerate([(10, 9), (10, None), (1, 0.5), (3, 2)]):
            session.add(
                OutboxEntry(
                    change_id=f"c{n}",
                    kind="device_settings",
                    account_id=1,
                    patch_json="{}",
                    version=n,
                    origin="device",
                    made_at_s=now - made_days * DAY_S,
                    delivered_at_s=None if delivered_days is None else now - delivered_days * DAY_S,
                )
            )
    pruned = Pruner(engine, RetentionPolicy(delivered_outbox_days=1), clock=clock).prune()
    assert pruned.counts == {"delivered outbox rows": 2}
    with session_scope(engine) as session:
        kept = session.exec(select(OutboxEntry.change_id).order_by(col(OutboxEntry.seq))).all()
    assert kept == ["c1", "c2"]  # the undelivered one however old, and the recent one


def test_only_ended_link_requests_are_pruned(engine: Engine) -> None:
    clock = FakeClock()
    now = clock()
    with session_scope(engine) as session:
        for state, expired_days in [
            (LinkState.EXPIRED, 31),
            (LinkState.DENIED, 40),
            (LinkState.EXPIRED, 29),
            (LinkState.LINKED, 400),
            (LinkState.APPROVED, 400),
            (LinkState.PENDING, 400),
        ]:
            session.add(
                LinkRequestRecord(
                    request_id=f"{state}-{expired_days}-000000000",
                    user_code="BCDFGHJK",
                    reply_to="linkhub/v1/link/reply/x",
                    device_name="Lamp",
                    device_model="L1",
                    state=str(state),
                    created_at_s=now - expired_days * DAY_S - 900,
                    expires_at_s=now - expired_days * DAY_S,
                )
            )
    Pruner(engine, RetentionPolicy(ended_link_requests_days=30), clock=clock).prune()
    with session_scope(engine) as session:
        kept = sorted(session.exec(select(LinkRequestRecord.request_id)).all())
    assert kept == sorted(
        ["expired-29-000000000", "linked-400-000000000", "approved-400-000000000", "pending-400-000000000"]
    )


def test_pruning_runs_in_small_transactions_on_its_own_thread(engine: Engine) -> None:
    clock = FakeClock()
    activity(engine, 1, [100.0] * 45, clock())
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    pruner = Pruner(engine, RetentionPolicy(batch_rows=10, interval_s=3600), clock=clock, pause_s=0)
    pruner.start()
    try:
        wait_until(lambda: count(engine, ActivityEvent) == 0, what="the old activity pruned")
    finally:
        pruner.stop()
    assert len(commits) >= 5  # 45 rows, at most 10 in one transaction
