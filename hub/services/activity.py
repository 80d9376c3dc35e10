"""Recent activity: what happened to an account, for the person to review.

The seed article's last troubleshooting step is "review recent activity": a
person who sees a device they do not know, or a sign-in from an address they do
not recognise, must be able to look back. Events are written on the hub's own
database (whichever account service it uses) by the services that do the thing,
so the web, the CLI and the device side all leave the same trail.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import and_, or_
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from hub.store.engine import session_scope
from hub.store.models import ActivityEvent, Device

MAX_DETAIL = 512


class ActivityKind(StrEnum):
    SIGN_IN = "sign_in"
    SIGN_IN_FAILED = "sign_in_failed"
    SIGN_IN_THROTTLED = "sign_in_throttled"
    SIGN_OUT = "sign_out"
    TWO_FACTOR_ENABLED = "two_factor_enabled"
    TWO_FACTOR_DISABLED = "two_factor_disabled"
    RECOVERY_CODE_USED = "recovery_code_used"
    RECOVERY_CODES_RENEWED = "recovery_codes_renewed"
    CODE_ENTRY_FAILED = "code_entry_failed"
    CODE_ENTRY_THROTTLED = "code_entry_throttled"  # once, when a wrong code uses a limit up
    LINK_APPROVED = "link_approved"
    LINK_DENIED = "link_denied"
    DEVICE_UNLINKED = "device_unlinked"
    SETTINGS_CHANGED = "settings_changed"
    ACCOUNT_CREATED = "account_created"
    ACCOUNT_REMOVED = "account_removed"
    PASSWORD_CHANGED = "password_changed"
    PASSWORD_RESET = "password_reset"  # the owner set a member's password; they choose a new one
    DEVICE_RENAMED = "device_renamed"
    DEVICE_GIVEN = "device_given"  # moved to another member of the household
    COMMAND_SENT = "command_sent"  # a person or Home Assistant switched something on a device
    APP_LINKED = "app_linked"  # an app that speaks HTTP (OAuth) approved on /link
    APP_DENIED = "app_denied"
    APP_UNLINKED = "app_unlinked"  # its tokens revoked: by a person, by the app, or a reused refresh token


@dataclass(frozen=True, slots=True)
class ActivityEntry:
    id: int
    account_id: int | None
    at_s: float
    kind: ActivityKind
    address: str | None
    device_id: str | None
    detail: str
    # The device's name as the hub knows it now (also after an unlink: the row stays).
    device_name: str | None = None


def _entry(row: ActivityEvent, device_name: str | None = None) -> ActivityEntry:
    assert row.id is not None
    return ActivityEntry(
        id=row.id,
        account_id=row.account_id,
        at_s=row.at_s,
        kind=ActivityKind(row.kind),
        address=row.address,
        device_id=row.device_id,
        detail=row.detail,
        device_name=device_name,
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
            self.add(session, kind, account_id, address=address, device_id=device_id, detail=detail)

    def add(
        self,
        session: Session,
        kind: ActivityKind,
        account_id: int | None,
        *,
        address: str | None = None,
        device_id: str | None = None,
        detail: str = "",
        at_s: float | None = None,
    ) -> None:
        """Record inside the caller's transaction (on the hub's database): the event
        is stored if and only if what it tells of is. It also keeps SQLite from
        waiting on itself, as a second session writing while the caller's holds
        the write lock would."""
        session.add(
            ActivityEvent(
                account_id=account_id,
                at_s=self._clock() if at_s is None else at_s,
                kind=str(kind),
                address=address[:64] if address else None,
                device_id=device_id,
                detail=detail[:MAX_DETAIL],
            )
        )

    def recent(
        self,
        account_id: int,
        limit: int = 100,
        *,
        kinds: Iterable[ActivityKind] | None = None,
        before_id: int | None = None,
    ) -> list[ActivityEntry]:
        """One account's events, newest first: what its /activity page shows.
        `kinds` filters; `before_id` pages on: only events older than that one
        of the account's (an id that is not the account's gives nothing)."""
        before: tuple[float, int] | None = None
        if before_id is not None:
            with session_scope(self._engine) as session:
                event = session.get(ActivityEvent, before_id)
            if event is None or event.account_id != account_id or event.id is None:
                return []
            before = (event.at_s, event.id)
        return self._newest(limit, account_id, kinds=kinds, before=before)

    def recent_in_household(self, limit: int = 100) -> list[ActivityEntry]:
        """Every account's events and those no account can be named for (a sign-in
        to a name that does not exist, a denial from the command line), newest
        first: for the hub's operator (`linkhub activity` without --account)."""
        return self._newest(limit, None)

    def recent_of_kinds(
        self, kinds: Iterable[ActivityKind], *, since_s: float, limit: int = 1000
    ) -> list[ActivityEntry]:
        """Every account's events of these kinds since `since_s`, newest first: for
        the owner's household page (wrong device codes entered with any account)."""
        return self._newest(limit, None, kinds=kinds, since_s=since_s)

    def _newest(
        self,
        limit: int,
        account_id: int | None,
        *,
        kinds: Iterable[ActivityKind] | None = None,
        since_s: float | None = None,
        before: tuple[float, int] | None = None,
    ) -> list[ActivityEntry]:
        """Newest first, with each device's name; `account_id` None: every event;
        `before` (time, id): only events after it in that order (a page further)."""
        query = (
            select(ActivityEvent, Device.name)
            .join(Device, col(Device.device_id) == col(ActivityEvent.device_id), isouter=True)
            .order_by(col(ActivityEvent.at_s).desc(), col(ActivityEvent.id).desc())
            .limit(max(0, limit))
        )
        if account_id is not None:
            query = query.where(ActivityEvent.account_id == account_id)
        if kinds is not None:
            query = query.where(col(ActivityEvent.kind).in_([str(kind) for kind in kinds]))
        if since_s is not None:
            query = query.where(col(ActivityEvent.at_s) >= since_s)
        if before is not None:
            at_s, event_id = before
            query = query.where(
                or_(
                    col(ActivityEvent.at_s) < at_s,
                    and_(col(ActivityEvent.at_s) == at_s, col(ActivityEvent.id) < event_id),
                )
            )
        with session_scope(self._engine) as session:
            return [_entry(row, name) for row, name in session.exec(query).all()]
