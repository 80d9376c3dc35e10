"""The settings bridge, hub side: account preferences and device settings in,
desired documents out, reports recorded, every accepted change queued for the
account service.

Local first: a change is stored in the hub's database, sent to the devices and
put in the outbox in one transaction; the outbox (hub/services/outbox.py) brings the
account service up to date, in order, whenever it answers. So a device never
waits for the account service, and a change is never lost when it is away.
The rules themselves are in hub/core/settings_merge.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

import linkhub_protocol as protocol
from hub.core.accounts import ChangeKind, VersionedDocument
from hub.core.origin import Origin, origin_words
from hub.core.rate_limits import DeviceLimits, LimitsPolicy
from hub.core.settings_merge import (
    JsonObject,
    SettingsError,
    conflicting_keys,
    delta,
    diff,
    effective,
    merge_patch,
    not_owned_by_device,
    validate_document,
)
from hub.errors import DeviceRefused, LinkHubError, SettingsRefused, StorageFull
from hub.services import metrics
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.device_refusals import DeviceRefusals
from hub.store.engine import lock_account_settings, session_scope
from hub.store.models import Device, DeviceShadow, OutboxEntry, PreferencesCache
from linkhub_protocol import (
    DeviceReply,
    DeviceStatus,
    ErrorCode,
    Rejection,
    SettingsDesired,
    SettingsGet,
    SettingsMessage,
    SettingsReported,
    SettingsSet,
)

log = logging.getLogger(__name__)

ERROR_SERVER_TEXT = "The hub failed to handle this message; nothing was changed. Send it again later."
# The kind DeviceLimits counts each inbound device topic under (the message's `type`).
_KIND_OF_LEAF = {
    protocol.SETTINGS_SET: "settings_set",
    protocol.SETTINGS_REPORTED: "reported",
    protocol.SETTINGS_GET: "settings_get",
    "status": "status",
}


class DevicePublisher(Protocol):
    def send_to_devices(
        self, messages: Sequence[tuple[str, str, SettingsDesired | DeviceReply]]
    ) -> list[LinkHubError | float]:
        """(device_id, leaf, message) each; per message the seconds until the broker
        acknowledged it, or why it was not delivered."""
        ...


@dataclass(frozen=True, slots=True)
class DeviceSettingsView:
    device_id: str
    account_id: int
    settings: JsonObject  # the device's own settings
    desired: JsonObject  # preferences + own settings
    desired_version: int
    reported: JsonObject | None
    applied_version: int | None
    delta: JsonObject  # desired values not reported yet
    reported_at_s: float | None
    changed_at_s: float | None

    @property
    def synced(self) -> bool:
        return self.applied_version == self.desired_version


@dataclass(frozen=True, slots=True)
class Outbound:
    device_id: str
    leaf: str
    message: SettingsDesired | DeviceReply


def _request_id_in(leaf: str, payload: bytes) -> str | None:
    """The request_id to answer a refused message with, read only when answering."""
    parsed = protocol.parse_settings_message(leaf, payload)
    if isinstance(parsed, Rejection):
        return parsed.request_id
    return None if isinstance(parsed, SettingsReported) else parsed.request_id


def _load(text: str | None) -> JsonObject:
    return json.loads(text) if text else {}


def _dump(document: JsonObject) -> str:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def device_change_id(device_id: str, request_id: str) -> str:
    """The outbox `change_id` of a device's `settings_set`: the same for every
    resend of one request, so the hub applies it once (the outbox's unique
    change_id, looked up before applying) and so does the account service,
    which applies each change_id once. A digest, since a request_id may be
    longer than the column. The random ids of other changes never start so."""
    digest = hashlib.sha256(f"{device_id}\0{request_id}".encode()).hexdigest()[:32]
    return f"device-{digest}"


class SettingsService:
    def __init__(
        self,
        engine: Engine,
        publisher: DevicePublisher,
        *,
        clock: Callable[[], float],
        activity: ActivityLog,
        outbox_changed: Callable[[], None] = lambda: None,
        limits: DeviceLimits | None = None,
    ) -> None:
        self._engine = engine
        self.limits = limits or DeviceLimits(LimitsPolicy().device_rates(), clock=clock)
        self.refusals = DeviceRefusals(self.limits)
        self._activity = activity
        self._publisher = publisher
        self._clock = clock
        self._outbox_changed = outbox_changed
        # One writer at a time per hub: versions must not interleave. Across hubs
        # on one database, each transaction also holds its account's database
        # lock (hub.store.engine.lock_account_settings).
        self._lock = threading.Lock()

    # --- reading ------------------------------------------------------------
    def preferences(self, account_id: int) -> VersionedDocument:
        with session_scope(self._engine) as session:
            cache = session.get(PreferencesCache, account_id)
            return (
                VersionedDocument(_load(cache.document_json), cache.version) if cache else VersionedDocument()
            )

    def device_view(self, device_id: str) -> DeviceSettingsView | None:
        with session_scope(self._engine) as session:
            self._lock_device(session, device_id)  # its shadow may be made here
            shadow = self._shadow(session, device_id)
            return self._view(shadow) if shadow else None

    def list_views(self, account_id: int) -> list[DeviceSettingsView]:
        with self._lock, session_scope(self._engine) as session:
            lock_account_settings(session, account_id)  # shadows may be made here
            return [self._view(shadow) for _device, shadow in self._linked_shadows(session, account_id)]

    # --- a person's changes (web page, CLI) -----------------------------------
    def set_preferences(self, account_id: int, patch: JsonObject, *, origin: Origin) -> VersionedDocument:
        """Change an account's preferences; every device of the account gets the change."""
        patch = self._checked_patch(patch)
        with self._lock:
            outbound: list[Outbound] = []
            with session_scope(self._engine) as session:
                lock_account_settings(session, account_id)
                cache = session.get(PreferencesCache, account_id) or PreferencesCache(account_id=account_id)
                old = _load(cache.document_json)
                new = self._checked_document(merge_patch(old, patch), "preferences")
                if new == old:
                    return VersionedDocument(old, cache.version)
                cache.document_json, cache.version = _dump(new), cache.version + 1
                session.add(cache)
                change = diff(old, new)
                self._queue(session, ChangeKind.PREFERENCES, account_id, None, change, cache.version, origin)
                self._record_change(session, account_id, None, change, origin)
                linked = self._linked_shadows(session, account_id, preferences=old)
                with session.no_autoflush:
                    for device, shadow in linked:
                        settings = _load(shadow.settings_json)
                        # Refuse the whole change (nothing stored) rather than leave one
                        # device with a document it may not hold.
                        self._checked_document(
                            effective(new, settings), f"the desired document of {device.name}"
                        )
                        outbound += self._redesire(session, shadow, new, settings)
                result = VersionedDocument(new, cache.version)
            self._send(outbound)
        self._outbox_changed()
        return result

    def set_device_settings(self, device_id: str, patch: JsonObject, *, origin: Origin) -> DeviceSettingsView:
        """Change one device's own settings (they win over the account's preferences)."""
        patch = self._checked_patch(patch)
        with self._lock:
            with session_scope(self._engine) as session:
                self._lock_device(session, device_id)
                shadow = self._shadow(session, device_id)
                if shadow is None:
                    raise SettingsRefused("unknown_device", f"no linked device {device_id!r}")
                outbound = self._apply_device_change(session, shadow, patch, origin)
                view = self._view(shadow)
            self._send(outbound)
        if outbound:
            self._outbox_changed()
        return view

    def hand_over(self, device_id: str, to_account_id: int) -> DeviceSettingsView:
        """Move a linked device to another account, with its own settings.

        Who has the device and whose preferences its desired document is made of
        change in one transaction, so they never disagree; the device is sent
        what changed (the new account's preferences) as any other change. The
        account service's copy of the device's own settings is keyed by device
        and needs nothing. hub/services/handover.py checks who may ask.
        """
        with self._lock:
            with session_scope(self._engine) as session:
                device = session.get(Device, device_id)
                if device is None or device.unlinked_at_s is not None:
                    raise DeviceRefused("unknown_device", "That device is not linked.")
                for account_id in sorted({device.account_id, to_account_id}):
                    lock_account_settings(session, account_id)
                shadow = self._shadow(session, device_id)
                assert shadow is not None  # linked: made if missing
                preferences = self._preferences_in(session, to_account_id)
                settings = _load(shadow.settings_json)
                self._checked_document(
                    effective(preferences, settings), f"the desired document of {device.name}"
                )
                device.account_id = to_account_id
                shadow.account_id = to_account_id
                session.add(device)
                outbound = self._redesire(session, shadow, preferences, settings)
                view = self._view(shadow)
            self._send(outbound)
        return view

    # --- what devices send ------------------------------------------------------
    def handle_device_message(self, device_id: str, leaf: str, payload: bytes) -> None:
        """Answer one inbound device message. Never raises: a refusal, or
        server_error when the hub itself failed, is a reply on the device's reply
        topic.

        The answer is published before the next change can be decided (under the
        same lock), so a device never sees a full document older than a change
        it already got.
        """
        # First, before parsing, the lock or the database: every message counts,
        # well-formed or not, and one over the limit costs next to nothing.
        if self._over_limit(device_id, _KIND_OF_LEAF[leaf], lambda: _request_id_in(leaf, payload)):
            return
        parsed = protocol.parse_settings_message(leaf, payload)
        if isinstance(parsed, Rejection):
            self._send([self._refusal(device_id, parsed.request_id, parsed.error, parsed.description)])
            return
        request_id = None if isinstance(parsed, SettingsReported) else parsed.request_id
        with self._lock:
            try:
                outbound = self._decide(device_id, parsed)  # committed when it returns
            except StorageFull as exc:
                outbound = [
                    self._refusal(
                        device_id,
                        request_id,
                        ErrorCode.INSUFFICIENT_STORAGE,
                        f"Nothing was changed: {exc}. Send it again later.",
                    )
                ]
            except Exception as exc:
                # Rolled back by session_scope: nothing was stored, so the device may resend.
                outbound = [
                    self._refusal(
                        device_id,
                        request_id,
                        ErrorCode.SERVER_ERROR,
                        ERROR_SERVER_TEXT,
                        cause=exc,
                    )
                ]
            self._send(outbound)
        self._outbox_changed()

    def checked_status(self, device_id: str, payload: bytes) -> DeviceStatus | None:
        """A device's status message if it is to be recorded; None if it is not
        (malformed: logged; over the device's limit: slow_down on its reply topic)."""
        if self._over_limit(device_id, "status", lambda: None):
            return None
        status = protocol.parse_device_status(payload)
        if isinstance(status, Rejection):
            self.refusals.note(device_id, status.error, status.description)
            return None
        return status

    def _over_limit(self, device_id: str, kind: str, request_id: Callable[[], str | None]) -> bool:
        """True if `device_id` sent more `kind` messages than its limit: the message
        is dropped, and answered with slow_down at most once a second
        (hub/services/device_refusals.py)."""
        over, reply = self.refusals.over_limit(device_id, kind, request_id)
        if reply is not None:
            self._send([Outbound(device_id, protocol.DEVICE_REPLY, reply)])
        return over

    def _decide(self, device_id: str, parsed: SettingsMessage) -> list[Outbound]:
        with session_scope(self._engine) as session:
            self._lock_device(session, device_id)
            shadow = self._shadow(session, device_id)
            if shadow is None:
                return [
                    self._refusal(device_id, None, ErrorCode.INVALID_REQUEST, "this device is not linked")
                ]
            match parsed:
                case SettingsGet():
                    # After every (re)connect the whole document, as AWS IoT Device Shadow and
                    # Azure device twins advise: deltas sent while a device was away are lost
                    # otherwise (aws-iot-device-sdk-js issue 100).
                    full = SettingsDesired(shadow.desired_version, _load(shadow.desired_json), full=True)
                    return [Outbound(device_id, protocol.SETTINGS_DESIRED, full)]
                case SettingsReported():
                    return self._record_report(session, shadow, parsed)
                case _:
                    pass
            change_id = device_change_id(device_id, parsed.request_id)
            repeated = self._repeated(session, shadow, parsed, change_id)
            if repeated is not None:
                return repeated
            try:
                self._check_device_change(shadow, parsed.changes, parsed.base_version, session)
                outbound = self._apply_device_change(
                    session, shadow, parsed.changes, Origin.DEVICE, change_id=change_id
                )
            except SettingsRefused as exc:
                return [self._refusal(device_id, parsed.request_id, ErrorCode(exc.code), str(exc))]
            reply = DeviceReply(parsed.request_id, ok=True, version=shadow.desired_version)
        return [*outbound, Outbound(device_id, protocol.DEVICE_REPLY, reply)]

    def _repeated(
        self, session: Session, shadow: DeviceShadow, change: SettingsSet, change_id: str
    ) -> list[Outbound] | None:
        """The answer to a `settings_set` this device sent before and the hub
        accepted (say, resent after the hub that took it died before answering):
        ok with the version it got, and nothing applied again. None if it is new.

        The whole desired document goes first, since the hub that accepted the
        change may have died before sending it; a device takes a full document
        whenever it comes (docs/protocol.md §12.4). Found through the outbox row
        the change left, so a repeat is known for as long as that row is kept.
        """
        version = session.exec(select(OutboxEntry.version).where(OutboxEntry.change_id == change_id)).first()
        if version is None:
            return None
        log.info(
            "device %s resent settings_set %r: answered, not applied again",
            shadow.device_id,
            change.request_id,
        )
        full = SettingsDesired(shadow.desired_version, _load(shadow.desired_json), full=True)
        return [
            Outbound(shadow.device_id, protocol.SETTINGS_DESIRED, full),
            Outbound(
                shadow.device_id,
                protocol.DEVICE_REPLY,
                DeviceReply(change.request_id, ok=True, version=version),
            ),
        ]

    def _record_report(
        self, session: Session, shadow: DeviceShadow, report: SettingsReported
    ) -> list[Outbound]:
        try:
            validate_document(report.reported, what="reported")
        except SettingsError as exc:
            return [self._refusal(shadow.device_id, None, exc.code, exc.description)]
        if report.applied_version > shadow.desired_version:
            return [
                self._refusal(
                    shadow.device_id,
                    None,
                    ErrorCode.INVALID_REQUEST,
                    f"applied_version {report.applied_version} is newer than {shadow.desired_version}",
                )
            ]
        shadow.reported_json = _dump(report.reported)
        shadow.applied_version = report.applied_version
        shadow.reported_at_s = self._clock()
        session.add(shadow)
        return []

    def _check_device_change(
        self, shadow: DeviceShadow, changes: JsonObject, base_version: int, session: Session
    ) -> None:
        preferences = self._preferences_in(session, shadow.account_id)
        settings = _load(shadow.settings_json)
        foreign = not_owned_by_device(changes, preferences, settings)
        if foreign:
            raise SettingsRefused(
                ErrorCode.NOT_OWNED,
                f"{', '.join(foreign)}: account-wide preferences; change them on the hub's page",
            )
        if base_version > shadow.desired_version:
            # A version the hub never gave out: the device's state is not the hub's
            # (restored from elsewhere, or a bug); it must fetch the document again.
            raise SettingsRefused(
                ErrorCode.INVALID_REQUEST,
                f"base_version {base_version} is newer than the hub's version {shadow.desired_version}; "
                "send settings_get for the current document",
            )
        stale = conflicting_keys(changes, _load(shadow.key_versions_json), base_version)
        if stale:
            raise SettingsRefused(
                ErrorCode.VERSION_CONFLICT,
                f"{', '.join(stale)} changed after version {base_version}; "
                f"the newer value stands (now version {shadow.desired_version})",
            )

    # --- internals ----------------------------------------------------------------
    def _apply_device_change(
        self,
        session: Session,
        shadow: DeviceShadow,
        patch: JsonObject,
        origin: Origin,
        *,
        change_id: str | None = None,
    ) -> list[Outbound]:
        patch = self._checked_patch(patch)
        old_settings = _load(shadow.settings_json)
        new_settings = self._checked_document(merge_patch(old_settings, patch), "settings")
        if new_settings == old_settings:
            return []
        preferences = self._preferences_in(session, shadow.account_id)
        self._checked_document(effective(preferences, new_settings), "desired document")
        outbound = self._redesire(session, shadow, preferences, new_settings, force_version=True)
        change = diff(old_settings, new_settings)
        self._queue(
            session,
            ChangeKind.DEVICE_SETTINGS,
            shadow.account_id,
            shadow.device_id,
            change,
            shadow.desired_version,
            origin,
            change_id=change_id,
        )
        self._record_change(session, shadow.account_id, shadow.device_id, change, origin)
        return outbound

    def _record_change(
        self, session: Session, account_id: int, device_id: str | None, change: JsonObject, origin: Origin
    ) -> None:
        """The account's activity: which keys changed, where, and for which device.

        Names only, no values: a setting may hold something private (a Wi-Fi
        password, a door code), and the activity page is for spotting who did
        what. In the same transaction as the change, so one is kept with the other.
        """
        subject = "the device's own settings" if device_id else "the account's preferences"
        where = origin_words(origin)
        self._activity.add(
            session,
            ActivityKind.SETTINGS_CHANGED,
            account_id,
            device_id=device_id,
            detail=f"{subject}, changed {where}: {', '.join(sorted(change))}",
        )

    def _redesire(
        self,
        session: Session,
        shadow: DeviceShadow,
        preferences: JsonObject,
        settings: JsonObject,
        *,
        force_version: bool = False,
    ) -> list[Outbound]:
        """Recompute the desired document; a new version and a change message if it moved."""
        old_desired = _load(shadow.desired_json)
        new_desired = effective(preferences, settings)
        change = diff(old_desired, new_desired)
        shadow.settings_json = _dump(settings)
        if not change and not force_version:
            session.add(shadow)
            return []
        shadow.desired_version += 1
        shadow.desired_json = _dump(new_desired)
        shadow.changed_at_s = self._clock()
        key_versions = _load(shadow.key_versions_json)
        for key in change:
            key_versions[key] = shadow.desired_version
        shadow.key_versions_json = _dump(key_versions)
        session.add(shadow)
        return [
            Outbound(
                shadow.device_id,
                protocol.SETTINGS_DESIRED,
                SettingsDesired(shadow.desired_version, change, full=False),
            )
        ]

    def _linked_shadows(
        self, session: Session, account_id: int, *, preferences: JsonObject | None = None
    ) -> list[tuple[Device, DeviceShadow]]:
        """Every linked device of the account with its shadow: one query for all the
        shadows, not one per device (docs/performance.md, fanout); a missing one is
        made as `_shadow` makes it."""
        devices = session.exec(
            select(Device).where(Device.account_id == account_id, col(Device.unlinked_at_s).is_(None))
        ).all()
        stored = session.exec(select(DeviceShadow).where(DeviceShadow.account_id == account_id)).all()
        shadows = {shadow.device_id: shadow for shadow in stored}
        linked = []
        for device in devices:
            shadow = shadows.get(device.device_id) or self._shadow(
                session, device.device_id, preferences=preferences
            )
            assert shadow is not None  # the device is linked: its shadow exists or was just made
            linked.append((device, shadow))
        return linked

    def _shadow(
        self, session: Session, device_id: str, *, preferences: JsonObject | None = None
    ) -> DeviceShadow | None:
        """The device's shadow, made on first use from the account's preferences.

        None for an unlinked device: its shadow stays as history, but nothing
        reads or changes it any more (one query, joined, as before the check).
        """
        shadow = session.exec(
            select(DeviceShadow)
            .join(Device, col(Device.device_id) == col(DeviceShadow.device_id))
            .where(col(DeviceShadow.device_id) == device_id, col(Device.unlinked_at_s).is_(None))
        ).first()
        if shadow is not None:
            return shadow
        device = session.get(Device, device_id)
        if device is None or device.unlinked_at_s is not None:
            return None
        if preferences is None:
            preferences = self._preferences_in(session, device.account_id)
        shadow = DeviceShadow(
            device_id=device_id,
            account_id=device.account_id,
            desired_json=_dump(preferences),
            desired_version=1,
            key_versions_json=_dump(dict.fromkeys(preferences, 1)),
            changed_at_s=self._clock(),
        )
        session.add(shadow)
        session.flush()
        return shadow

    @staticmethod
    def _lock_device(session: Session, device_id: str) -> None:
        """Lock the settings of the device's account (hub.store.engine.lock_account_settings)
        before anything of the device is read; an unknown device locks nothing."""
        account_id = session.exec(select(Device.account_id).where(Device.device_id == device_id)).first()
        if account_id is not None:
            lock_account_settings(session, account_id)

    @staticmethod
    def _preferences_in(session: Session, account_id: int) -> JsonObject:
        cache = session.get(PreferencesCache, account_id)
        return _load(cache.document_json) if cache else {}

    def _queue(
        self,
        session: Session,
        kind: ChangeKind,
        account_id: int,
        device_id: str | None,
        patch: JsonObject,
        version: int,
        origin: Origin,
        *,
        change_id: str | None = None,
    ) -> None:
        session.add(
            OutboxEntry(
                change_id=change_id or secrets.token_hex(16),
                kind=str(kind),
                account_id=account_id,
                device_id=device_id,
                patch_json=_dump(patch),
                version=version,
                origin=origin,
                made_at_s=self._clock(),
            )
        )

    @staticmethod
    def _checked_patch(patch: Any) -> JsonObject:
        try:
            return validate_document(patch, what="change", allow_null=True)
        except SettingsError as exc:
            raise SettingsRefused(exc.code, exc.description) from None

    @staticmethod
    def _checked_document(document: JsonObject, what: str) -> JsonObject:
        try:
            return validate_document(document, what=what)
        except SettingsError as exc:
            raise SettingsRefused(exc.code, exc.description) from None

    def _view(self, shadow: DeviceShadow) -> DeviceSettingsView:
        desired = _load(shadow.desired_json)
        reported = _load(shadow.reported_json) if shadow.reported_json is not None else None
        return DeviceSettingsView(
            device_id=shadow.device_id,
            account_id=shadow.account_id,
            settings=_load(shadow.settings_json),
            desired=desired,
            desired_version=shadow.desired_version,
            reported=reported,
            applied_version=shadow.applied_version,
            delta=delta(desired, reported or {}),
            reported_at_s=shadow.reported_at_s,
            changed_at_s=shadow.changed_at_s,
        )

    def _refusal(
        self,
        device_id: str,
        request_id: str | None,
        error: ErrorCode,
        description: str,
        *,
        cause: BaseException | None = None,
    ) -> Outbound:
        reply = self.refusals.refusal(device_id, request_id, error, description, cause=cause)
        return Outbound(device_id, protocol.DEVICE_REPLY, reply)

    def _send(self, outbound: list[Outbound]) -> None:
        if not outbound:
            return
        results = self._publisher.send_to_devices(
            [(item.device_id, item.leaf, item.message) for item in outbound]
        )
        hub_metrics = metrics.of(self._engine)
        for item, result in zip(outbound, results, strict=True):
            if isinstance(result, LinkHubError):
                # Stored already: the device gets the whole document on its next connect.
                log.info("device %s will catch up on reconnect (%s)", item.device_id, result)
            else:
                hub_metrics.delivered(item.leaf, result)
