"""Recent activity: what happened to an account, for the person to review.

The seed article's last troubleshooting step is "review recent activity": a
person who sees a device they do not know, or a sign-in from an address they do
not recognise, must be able to look back. Events are written on the hub's own
database (whichever account service it uses) by the services that do the thing,
so the web, the CLI and the device side all leave the same trail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from hub.models import ActivityEvent
from hub.store import session_scope

MAX_DETAIL = 512


class ActivityKind(StrEnum):
    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_THROTTLED = "sign_in_throttled"
    SIGN_OUT = "sign_out"
    TWO_FACTOR_ENABLED = "two_factor_enabled"
    TWO_FACTOR_DISABLED = "two_factor_disabled"
    RECOVERY_CODE_USED = "recovery_code_used"
    CODE_ENTRY_FAILED = "code_entry_failed"
    LINK_APPROVED = "link_approved"
    LINK_DENIED = "link_denied"
    DEVICE_UNLINKED = "device_unlinked"
    SETTINGS_CHANGED = "settings_changed"
    ACCOUNT_CREATED = "account_created"
    ACCOUNT_REMOVED = "account_removed"
    PASSWORD_CHANGED = "password_changed"


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    id: int
    account_id: int | None
    at_s: float
    kind: ActivityKind
    address: str | None
    device_id: str | None
    detail: str


def _entry(row: ActivityEvent) -> ActivityEntry:
    assert row.id is not None
    return ActivityEntry(
        id=row.id,
        account_id=row.account_id,
        at_s=row.at_s,
        kind=ActivityKind(row.kind),
        address=row.address,
        device_id=row.device_id,
        detail=row.detail,
    )


class ActivityLog:
    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._clock = clock

    def record(
        self,
        kind: ActivityKind,
        account_id: int | None,
        *,
        address: str | None = None,
        device_id: str | None = None,
        detail: str = "",
    ) -> None:
        with session_scope(self._engine) as session:
            session.add(
                ActivityEvent(
                    account_id=account_id,
                    at_s=self._clock(),
                    kind=str(kind),
                    address=address[:64] if address else None,
                    device_id=device_id,
                    detail=detail[:MAX_DETAIL],
                )
            )

    def recent(self, account_id: int, limit: int = 100) -> list[ActivityEntry]:
        """Newest first."""
        with session_scope(self._engine) as session:
            rows = session.exec(
                select(ActivityEvent)
                .where(ActivityEvent.account_id == account_id)
                .order_by(col(ActivityEvent.at_s).desc(), col(ActivityEvent.id).desc())
                .limit(limit)
            ).all()
            return [_entry(row) for row in rows]
