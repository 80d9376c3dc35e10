"""Linked devices: their status, the list a person sees, unlinking, the broker
identities the hub made (reconciled with what the broker holds) and the
clean-up of what an unlinked device left retained."""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy import select as sql_select
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, col, select

from hub.core.linking import LinkEvent
from hub.core.origin import Origin, origin_words
from hub.errors import DeviceRefused, LinkHubError, UnlinkRefused
from hub.services import metrics
from hub.services.activity import ActivityKind
from hub.services.link_parts import (
    APPROVAL_GRACE_S,
    EXPIRED_SHOWN_FOR_S,
    DeviceView,
    ExpiredDeviceView,
    LinkParts,
    RevokedReason,
    _device_view,
    _duration,
    log,
)
from hub.store.engine import session_scope
from hub.store.models import BrokerIdentity, Device, LinkRequestRecord
from linkhub_protocol import ProtocolError
from linkhub_protocol.text import checked_text


class DeviceRegistry(LinkParts):
    """Linked devices and their broker identities."""

    def device_status(self, device_id: str, online: bool) -> None:
        """The device's status topic: its first appearance confirms the link."""
        now = self._clock()
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None:
                return  # an unlinked device's late status (say, a will) changes nothing
            # Conditional, not a plain write of what was read: an unlink committed since
            # the read wins, so an unlinked device is never left marked online.
            session.execute(
                update(Device)
                .where(col(Device.device_id) == device_id, col(Device.unlinked_at_s).is_(None))
                .values(online=online, last_seen_at_s=now)
            )
            if online and not device.confirmed:
                device.confirmed = True
                record = session.get(LinkRequestRecord, device.request_id)
                if record is not None:
                    self._apply(record, LinkEvent.CONFIRM, now)
                    session.add(record)
            session.add(device)

    def broker_lost(self) -> None:
        """The hub lost its broker: nobody is known to be online any more. Each device
        says again when the hub is back (its retained status, or a fresh one when it
        reconnects, MQTT 5 §3.3.1.3), so the flags are cleared, not guessed at."""
        with session_scope(self._engine) as session:
            session.execute(update(Device).where(col(Device.online)).values(online=False))

    def was_unlinked(self, device_id: str) -> bool:
        """A device this hub unlinked: a retained status of it is a ghost to clear.

        A device id this hub never saw is not one: hubs with separate databases
        may share a broker, and another hub's devices are not ours to touch.
        """
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            return device is not None and device.unlinked_at_s is not None

    def unlink(
        self, device_id: str, account_id: int | None, *, origin: Origin, address: str | None = None
    ) -> DeviceView:
        """Take a linked device off the hub. Raises UnlinkRefused.

        `account_id` is the person asking: only the device's own account may
        unlink it, and another account's device is refused exactly like an
        unknown id. None is the hub's operator (the `linkhub` command on the
        control socket), who may unlink any device, as `link deny` may deny any
        code. `origin` ("web", "api", "cli") and `address` go to the activity log.

        The broker deletes the device's client first, which disconnects it at
        once and refuses its password from then on; only once the broker
        confirmed is the device marked unlinked, so a failure leaves it linked
        and the person can simply try again. Its settings (the shadow here, the
        account service's records and change log) stay as history; the device
        is no longer listed, and a new link gives it a new id.

        The operator (`account_id` None) may also unlink a device identity that
        only the broker holds (no linked device row names it), e.g. one left by a
        hub killed mid-approval before identities were recorded first.
        """
        with self._decision_lock:
            now = self._clock()
            with session_scope(self._engine) as session:
                device = session.get(Device, device_id)
                if device is None and account_id is None:
                    return self._unlink_broker_only(session, device_id, now)
                if device is None or (account_id is not None and device.account_id != account_id):
                    raise UnlinkRefused("unknown_device", f"There is no linked device {device_id!r}.")
                if device.unlinked_at_s is not None:
                    if account_id is None and device_id in self._issuer.device_clients():
                        # Unlinked here, yet back on the broker (say, from a restored copy of its file).
                        return self._unlink_broker_only(session, device_id, now)
                    raise UnlinkRefused(
                        "already_unlinked", f"{device.name} ({device_id}) is already unlinked."
                    )
                detail = f"{device.name} ({device.model}), unlinked {origin_words(origin)}"
                view = self._take_off(session, device, now, RevokedReason.UNLINKED, detail, address)
        self._clear_retained(device_id)
        return view

    def _take_off(
        self,
        session: Session,
        device: Device,
        now: float,
        reason: RevokedReason,
        detail: str,
        address: str | None = None,
    ) -> DeviceView:
        """Unlink `device` in the caller's transaction; the broker's client is
        deleted last, so that nothing is stored if the broker does not confirm."""
        device_id = device.device_id
        device.unlinked_at_s = now
        device.online = False
        # Written even if it was False when read: a status ("online") the hub
        # handled since would otherwise survive, as the ORM writes changes only.
        flag_modified(device, "online")
        session.add(device)
        record = session.get(LinkRequestRecord, device.request_id)
        if record is not None:
            # A device approved but never connected: its poll must not hand out dead credentials.
            self._apply(record, LinkEvent.UNLINK, now)
            session.add(record)
        session.execute(
            update(BrokerIdentity)
            .where(col(BrokerIdentity.device_id) == device_id, col(BrokerIdentity.revoked_at_s).is_(None))
            .values(revoked_at_s=now, revoked_reason=str(reason))
        )
        view = _device_view(device)
        self._activity.add(
            session,
            ActivityKind.DEVICE_UNLINKED,
            device.account_id,
            address=address,
            device_id=device_id,
            detail=detail,
        )
        # Last before the commit: if the broker does not confirm, nothing is stored.
        # (Retrying is safe: revoking a client that is already gone succeeds.)
        self._issuer.revoke_device(device_id)
        return view

    def _clear_retained(self, device_id: str) -> None:
        try:
            cleared = self._retained.clear_device_topics(device_id)
            log.info("unlinked %s; cleared retained %s", device_id, ", ".join(cleared))
        except LinkHubError as exc:
            # Unlinked all the same: the hub clears a leftover retained status when it sees it.
            log.warning("unlinked %s, but its retained topics were not cleared now (%s)", device_id, exc)

    def _unlink_broker_only(self, session: Session, device_id: str, now: float) -> DeviceView:
        """The operator's unlink of an identity the broker holds and no linked device
        row names (left by a hub that died mid-approval before this hub recorded
        identities first, or by another hub): deleted from the broker."""
        if device_id not in self._issuer.device_clients():
            raise UnlinkRefused("unknown_device", f"There is no linked device {device_id!r}.")
        row = session.get(BrokerIdentity, device_id)
        record = session.get(LinkRequestRecord, row.request_id) if row is not None else None
        if row is not None and row.revoked_at_s is None:
            row.revoked_at_s = now
            row.revoked_reason = str(RevokedReason.UNLINKED)
            session.add(row)
        self._issuer.revoke_device(device_id)
        log.warning(
            "removed broker identity %s, which no linked device names (linkhub devices unlink)", device_id
        )
        return DeviceView(
            device_id=device_id,
            account_id=record.account_id if record is not None and record.account_id is not None else 0,
            name=record.device_name if record is not None else "(no device row)",
            model=record.device_model if record is not None else "broker identity only",
            address=record.device_address if record is not None else None,
            linked_at_s=row.issued_at_s if row is not None else now,
            confirmed=False,
            online=False,
            last_seen_at_s=None,
        )

    # --- devices approved that never came (issue 19 item 17) ------------------------
    def expire_unconfirmed(self) -> list[str]:
        """Devices approved longer than `unconfirmed_lifetime_s` ago that never
        connected: unlinked, their broker identity deleted and the password held
        for them forgotten. Credentials that were never used should not stay valid
        for ever: whoever read them (the device's reply topic, a backup) could
        use them at any later time."""
        now = self._clock()
        cutoff = now - self._policy.unconfirmed_lifetime_s
        with session_scope(self._engine) as session:
            due = session.exec(
                select(Device.device_id).where(
                    col(Device.confirmed).is_(False),
                    col(Device.unlinked_at_s).is_(None),
                    col(Device.linked_at_s) <= cutoff,
                )
            ).all()
        expired: list[str] = []
        lifetime = _duration(self._policy.unconfirmed_lifetime_s)
        for device_id in due:
            with self._decision_lock, session_scope(self._engine) as session:
                device = session.get(Device, device_id)
                if device is None or device.confirmed or device.unlinked_at_s is not None:
                    continue  # it came, or was unlinked, meanwhile
                detail = (
                    f"{device.name} ({device.model}) never connected: its credentials expired "
                    f"{lifetime} after it was approved"
                )
                self._take_off(session, device, now, RevokedReason.NEVER_CONNECTED, detail)
            metrics.of(self._engine).unconfirmed_devices_expired.inc()
            log.info("device %s never connected in %s: its credentials expired", device_id, lifetime)
            expired.append(device_id)
        return expired

    def expired_unconfirmed(self, account_id: int) -> list[ExpiredDeviceView]:
        """The account's devices whose credentials expired unused lately, newest first."""
        since = self._clock() - EXPIRED_SHOWN_FOR_S
        with session_scope(self._engine) as session:
            found = session.exec(
                select(Device, BrokerIdentity)
                .join(BrokerIdentity, col(BrokerIdentity.device_id) == col(Device.device_id))
                .where(
                    Device.account_id == account_id,
                    BrokerIdentity.revoked_reason == str(RevokedReason.NEVER_CONNECTED),
                    col(BrokerIdentity.revoked_at_s) >= since,
                )
                .order_by(col(BrokerIdentity.revoked_at_s).desc())
            ).all()
            return [
                ExpiredDeviceView(d.device_id, d.name, d.model, d.linked_at_s, b.revoked_at_s or 0.0)
                for d, b in found
            ]

    @property
    def unconfirmed_lifetime_s(self) -> int:
        return self._policy.unconfirmed_lifetime_s

    def list_devices(self, account_id: int | None = None) -> list[DeviceView]:
        """Linked devices; unlinked ones are history, kept but not listed."""
        with session_scope(self._engine) as session:
            query = (
                select(Device).where(col(Device.unlinked_at_s).is_(None)).order_by(col(Device.linked_at_s))
            )
            if account_id is not None:
                query = query.where(Device.account_id == account_id)
            unknown_since = metrics.of(self._engine).status_unknown_since()
            return [_device_view(d, unknown_since) for d in session.exec(query).all()]

    def linked_count(self) -> int:
        """How many devices are linked (the sweeper asks every second for Home Assistant)."""
        with session_scope(self._engine) as session:
            query = select(func.count()).select_from(Device).where(col(Device.unlinked_at_s).is_(None))
            return int(session.exec(query).one())

    def knows_device(self, device_id: str) -> bool:
        """Whether this hub's database has the device, linked or unlinked."""
        with session_scope(self._engine) as session:
            return session.get(Device, device_id) is not None

    def unlinked_since(self, since_s: float) -> list[str]:
        """Devices unlinked at or after `since_s`, oldest first."""
        with session_scope(self._engine) as session:
            query = (
                select(Device.device_id)
                .where(col(Device.unlinked_at_s) >= since_s)
                .order_by(col(Device.unlinked_at_s))
            )
            return list(session.exec(query).all())

    def any_linked_device(self, device_id: str) -> DeviceView | None:
        """A linked device whoever has it: for the household's owner, who may give
        or unlink a member's device (hub/services/handover.py checks who asks)."""
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None:
                return None
            return _device_view(device, metrics.of(self._engine).status_unknown_since())

    def rename(self, device_id: str, account_id: int, name: str, *, address: str | None = None) -> DeviceView:
        """The name people see on the pages; the device keeps the one it sent in its
        own messages. The same rules as a name a device sends (linkhub_protocol.text)."""
        try:
            checked_text(name.strip(), "The name", 64)
        except ProtocolError as exc:
            raise DeviceRefused("invalid_name", f"{exc.description}.") from None
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None or device.account_id != account_id:
                raise DeviceRefused("unknown_device", "You have no device with that id.")
            old = device.name
            device.name = name.strip()
            session.add(device)
            if old != device.name:
                self._activity.add(
                    session,
                    ActivityKind.DEVICE_RENAMED,
                    account_id,
                    address=address,
                    device_id=device_id,
                    detail=f"from {old!r} to {device.name!r}",
                )
            session.flush()
            return _device_view(device, metrics.of(self._engine).status_unknown_since())

    def linked_device(self, device_id: str, account_id: int) -> DeviceView | None:
        """The account's linked device with this id, or None: one row, where
        listing the account's devices to pick one read them all."""
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None or device.account_id != account_id:
                return None
            return _device_view(device, metrics.of(self._engine).status_unknown_since())

    # --- clearing an unlinked device's retained topics, as a job ----------------
    def unfinished_clearings(self) -> list[str]:
        """Unlinked devices whose retained topics the hub has not finished
        emptying (revision 0007): the jobs to take up again at start."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                sql_select(col(BrokerIdentity.device_id)).where(
                    col(BrokerIdentity.revoked_reason) == str(RevokedReason.UNLINKED),
                    col(BrokerIdentity.retained_cleared_at_s).is_(None),
                )
            )
            return [device_id for (device_id,) in rows]

    def clearing_unfinished(self, device_id: str) -> None:
        """Record that the device's retained topics still need emptying."""
        self._set_cleared_at(device_id, None)

    def clearing_finished(self, device_id: str) -> None:
        self._set_cleared_at(device_id, self._clock())

    def _set_cleared_at(self, device_id: str, at_s: float | None) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.device_id) == device_id,
                    col(BrokerIdentity.revoked_reason) == str(RevokedReason.UNLINKED),
                )
                .values(retained_cleared_at_s=at_s)
            )

    def reconcile_identities(self) -> list[str]:
        """Remove the device identities the broker holds that no linked device names:
        those this hub recorded (broker_identity) whose approval never committed
        (a hub killed between the broker and the database), and those of devices
        unlinked since (e.g. brought back by a restored copy of the broker's file).

        An identity this database never recorded is left alone: hubs with separate
        databases may share a broker, and another hub's devices are not ours
        (`linkhub devices unlink ID` removes one by hand). One younger than
        APPROVAL_GRACE_S whose approval has not committed is left for next time.
        Each removal is claimed in the database before the broker is asked, so an
        approval that commits meanwhile fails instead of naming a removed identity.
        Returns the identities removed (logged, and counted in /metrics).
        """
        on_broker = self._issuer.device_clients()
        now = self._clock()
        removed: list[str] = []
        with self._decision_lock:
            for device_id in sorted(self._orphans(on_broker, now)):
                if not self._claim_orphan(device_id, now):
                    continue
                try:
                    self._issuer.revoke_device(device_id)
                except LinkHubError as exc:
                    log.error("could not remove the orphaned broker identity %s (%s)", device_id, exc)
                    continue
                removed.append(device_id)
                metrics.of(self._engine).orphan_identities_revoked.inc()
                log.warning(
                    "removed broker identity %s: no linked device names it (its approval never "
                    "committed, or the device was unlinked)",
                    device_id,
                )
            self._close_unissued(on_broker, now)
        return removed

    def _orphans(self, on_broker: set[str], now: float) -> set[str]:
        if not on_broker:
            return set()
        with session_scope(self._engine) as session:
            recorded = session.exec(
                select(BrokerIdentity).where(col(BrokerIdentity.device_id).in_(on_broker))
            ).all()
            linked = set(
                session.exec(
                    select(Device.device_id).where(
                        col(Device.device_id).in_(on_broker), col(Device.unlinked_at_s).is_(None)
                    )
                ).all()
            )
        return {
            row.device_id
            for row in recorded
            if row.device_id not in linked
            and not (
                row.linked_at_s is None
                and row.revoked_at_s is None
                and row.issued_at_s > now - APPROVAL_GRACE_S
            )
        }

    def _claim_orphan(self, device_id: str, now: float) -> bool:
        """Mark the identity revoked in one conditional statement, so that it holds
        against an approval committing at the same moment (on PostgreSQL the
        statement waits for that approval's row lock and then sees linked_at_s set;
        on SQLite writes are serial). True if the broker's login may be deleted:
        claimed now, or revoked before (an unlinked device, a failed approval),
        which no approval can link any more."""
        with self._engine.begin() as connection:
            claimed = connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.device_id) == device_id,
                    col(BrokerIdentity.revoked_at_s).is_(None),
                    col(BrokerIdentity.linked_at_s).is_(None),
                )
                .values(revoked_at_s=now, revoked_reason=str(RevokedReason.ORPHAN))
            ).rowcount
            if claimed:
                return True
            revoked_at_s = connection.execute(
                sql_select(col(BrokerIdentity.revoked_at_s)).where(col(BrokerIdentity.device_id) == device_id)
            ).scalar()
            return revoked_at_s is not None

    def _close_unissued(self, on_broker: set[str], now: float) -> None:
        """Recorded identities the broker never made (the hub died before asking, or
        the broker refused): closed, so they are not looked at again."""
        with self._engine.begin() as connection:
            connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.linked_at_s).is_(None),
                    col(BrokerIdentity.revoked_at_s).is_(None),
                    col(BrokerIdentity.issued_at_s) <= now - APPROVAL_GRACE_S,
                    col(BrokerIdentity.device_id).not_in(on_broker),
                )
                .values(revoked_at_s=now, revoked_reason=str(RevokedReason.APPROVAL_FAILED))
            )
