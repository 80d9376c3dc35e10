"""What linked devices have and do: their descriptions, their last state, and
the commands people and Home Assistant send them (docs/protocol.md,
"Components, state and commands"). Settings stay in hub/services/settings.py:
they configure a device, state and commands are what it does.

A description is stored (it is what state and commands are checked against,
and what Home Assistant is told). State is not: each device retains its last
state message on the broker, and every hub reads them all again when it
starts, so the hub keeps the last value of each component in memory only.
Commands are checked against the description, recorded in the account's
activity, and sent never retained, and only to a device that is online: a
command for an offline device is refused at once, not queued (a queued
"turn the heater on" carried out hours later is worse than none).
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sqlalchemy import bindparam
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine
from sqlmodel import col

import linkhub_protocol as protocol
from hub.core.origin import Origin, origin_words
from hub.core.rate_limits import DeviceLimits
from hub.errors import CommandRefused, LinkHubError
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.device_refusals import DeviceRefusals
from hub.store.engine import session_scope
from hub.store.models import Device, DeviceDescriptionRecord
from linkhub_protocol import (
    Command,
    Component,
    ComponentKind,
    DeviceDescription,
    DeviceReply,
    ErrorCode,
    ProtocolError,
    Rejection,
    StateReport,
)

log = logging.getLogger(__name__)

_DEVICE_FACTS = sql_select(
    col(Device.name), col(Device.online), col(Device.account_id), col(Device.unlinked_at_s)
).where(col(Device.device_id) == bindparam("device_id"))
MAX_ANSWERS_KEPT = 1024
RECORD_GATHER_S = 0.25


class DeviceMessagePublisher(Protocol):
    def send_to_devices(
        self, messages: Sequence[tuple[str, str, DeviceReply | Command]]
    ) -> list[LinkHubError | float]:
        """(device_id, leaf, message) each, never retained; per message the
        seconds until the broker acknowledged it, or why it was not delivered."""
        ...

    def retain_state(self, device_id: str, report: StateReport | None) -> None:
        """Put `report` back as the device's retained state (None: clear it)."""
        ...


@dataclass(frozen=True, slots=True)
class ComponentView:
    """One component as a page shows it: what it is, its last value and when it came."""

    component: Component
    value: Any = None
    at_s: float | None = None  # None: no state has come since the hub started

    @property
    def known(self) -> bool:
        return self.at_s is not None


@dataclass(frozen=True, slots=True)
class SentCommand:
    command_id: str
    device_id: str
    component: Component
    value: Any


def brightness_percent(brightness: int) -> int:
    """A light's brightness (0-255) as people read it."""
    return round(100 * brightness / protocol.BRIGHTNESS_MAX)


def command_words(component: Component, value: Any) -> str:
    """A command as the activity log says it: "Power: off", "Light: brightness 40%"."""
    return f"{component.name}: {value_words(component, value)}"


def value_words(component: Component, value: Any) -> str:
    """A value (of a state or a command) in words a person reads."""
    match component.kind:
        case ComponentKind.SWITCH | ComponentKind.BINARY_SENSOR:
            return "on" if value else "off"
        case ComponentKind.LIGHT if isinstance(value, dict):
            parts = []
            if "on" in value:
                parts.append("on" if value["on"] else "off")
            if "brightness" in value:
                parts.append(f"brightness {brightness_percent(value['brightness'])}%")
            return ", ".join(parts)
        case ComponentKind.BUTTON:
            return "pressed"
        case ComponentKind.SENSOR | ComponentKind.NUMBER if isinstance(value, int | float):
            unit = f" {component.unit}" if component.unit else ""
            return f"{value:g}{unit}"
    return str(value)


class DeviceControl:
    def __init__(
        self,
        engine: Engine,
        publisher: DeviceMessagePublisher,
        *,
        clock: Callable[[], float],
        activity: ActivityLog,
        limits: DeviceLimits,
        described: Callable[[str, DeviceDescription, DeviceDescription | None], None] = (
            lambda _id, _new, _old: None
        ),
    ) -> None:
        """`described(device_id, description, previous)`: called after a new
        description is stored (Home Assistant discovery publishes what changed)."""
        self._engine = engine
        self._publisher = publisher
        self._clock = clock
        self._activity = activity
        self._limits = limits
        self.described = described
        self._lock = threading.Lock()
        # Commands the device answered (a state naming them), for whoever waits
        # to show the outcome: command id -> when. Bounded: the oldest go first.
        self._answered: dict[str, float] = {}
        self._answer = threading.Condition(self._lock)
        # device id -> component key -> (value, when it came)
        self._states: dict[str, dict[str, tuple[Any, float]]] = {}
        self._descriptions: dict[str, DeviceDescription] = {}
        self._refusals = DeviceRefusals(limits)
        # Commands are recorded in the activity log by a thread of their own, in
        # batches: a write (and its fsync) on the command's path made a command
        # from Home Assistant take 2.8x the direct round trip (docs/performance.md).
        self._records: queue.Queue[_CommandRecord | None] = queue.Queue()
        self._recorder: threading.Thread | None = None

    def start(self) -> None:
        self._recorder = threading.Thread(target=self._record_commands, name="command-activity", daemon=True)
        self._recorder.start()

    def stop(self) -> None:
        """After every command sent is recorded."""
        if self._recorder is not None:
            self._records.put(None)
            self._recorder.join(timeout=10)
            self._recorder = None

    def _record_commands(self) -> None:
        while True:
            batch = [self._records.get()]
            # The commands of the next moment in the same transaction: a burst (a
            # slider dragged in Home Assistant) is one write, not one each.
            gather_until = time.monotonic() + RECORD_GATHER_S
            while batch[-1] is not None and (left := gather_until - time.monotonic()) > 0:
                try:
                    batch.append(self._records.get(timeout=left))
                except queue.Empty:
                    break
            records = [record for record in batch if record is not None]
            try:
                self._write_records(records)
            except Exception:
                log.exception("could not record %d command(s) in the activity log", len(records))
            if batch[-1] is None:
                return

    def _write_records(self, records: list[_CommandRecord]) -> None:
        if not records:
            return
        with session_scope(self._engine) as session:
            for record in records:
                self._activity.add(
                    session,
                    ActivityKind.COMMAND_SENT,
                    record.account_id,
                    address=record.address,
                    device_id=record.device_id,
                    detail=record.detail,
                    at_s=record.at_s,
                )

    # --- reading ----------------------------------------------------------------
    def description(self, device_id: str, *, fresh: bool = False) -> DeviceDescription | None:
        """The device's stored description; from memory unless `fresh` (another
        hub on the same database may have stored a newer one)."""
        if not fresh:
            with self._lock:
                cached = self._descriptions.get(device_id)
            if cached is not None:
                return cached
        with session_scope(self._engine) as session:
            record = session.get(DeviceDescriptionRecord, device_id)
            parsed = _parsed_description(device_id, record.description_json if record else "")
        if parsed is None:
            return None
        with self._lock:
            self._descriptions[device_id] = parsed
        return parsed

    def components(self, device_id: str) -> list[ComponentView]:
        """The device's components with their last values, in the description's order."""
        description = self.description(device_id)
        if description is None:
            return []
        with self._lock:
            state = dict(self._states.get(device_id, {}))
        views = []
        for component in description.components:
            value, at_s = state.get(component.key, (None, None))
            views.append(ComponentView(component, value, at_s))
        return views

    def wait_answer(self, command_id: str, timeout_s: float) -> bool:
        """Whether the device answered the command (its new state) within
        `timeout_s`: the page that sent it then shows the outcome at once."""
        with self._answer:
            return self._answer.wait_for(lambda: command_id in self._answered, timeout_s)

    def state_of(self, device_id: str) -> dict[str, Any]:
        with self._lock:
            return {key: value for key, (value, _at) in self._states.get(device_id, {}).items()}

    # --- what devices send --------------------------------------------------------
    def handle_description(self, device_id: str, payload: bytes) -> None:
        """Store a description and answer it on the device's reply topic. Never raises."""
        if self._over_limit(device_id, "description"):
            return
        parsed = protocol.parse_description(payload)
        if isinstance(parsed, Rejection):
            self._refuse(device_id, parsed.request_id, parsed.error, parsed.description)
            return
        # Kept without the request's id: the same description sent again with a new
        # id (every connect) is no change, and Home Assistant is not told again.
        description = replace(parsed, request_id=None)
        try:
            previous = self._store_description(device_id, description)
        except _NotLinked:
            self._refuse(device_id, parsed.request_id, ErrorCode.INVALID_REQUEST, "this device is not linked")
            return
        except Exception as exc:
            self._refuse(
                device_id,
                parsed.request_id,
                ErrorCode.SERVER_ERROR,
                "The hub failed to store the description; nothing was changed. Send it again later.",
                cause=exc,
            )
            return
        if previous != description:
            # Before the answer: once the device hears `ok`, its components are
            # everywhere they go (a dropped one gone from Home Assistant too).
            try:
                self.described(device_id, description, previous)
            except Exception:  # the description is stored; Home Assistant catches up at the next start
                log.exception("could not tell Home Assistant about %s's new description", device_id)
        self._publish([(device_id, protocol.DEVICE_REPLY, DeviceReply(parsed.request_id, ok=True))])

    def handle_state(self, device_id: str, payload: bytes) -> None:
        """Keep a state message's values, or refuse it with the reason. Never raises."""
        if not payload:
            return  # a retained state being cleared (an unlink)
        description = self.description(device_id)
        if description is None and not self._is_linked(device_id):
            # Another hub's device on a shared broker (a retained state read at
            # start), or one unlinked: not this hub's to judge, count, or clear.
            return
        if self._over_limit(device_id, "state"):
            return
        parsed = protocol.parse_state_report(payload)
        if isinstance(parsed, Rejection):
            self._refuse(device_id, None, parsed.error, parsed.description)
            self._restore_state(device_id)
            return
        try:
            self._check_state(device_id, description, parsed.state)
        except ProtocolError as exc:
            self._refuse(device_id, parsed.command_id, exc.code, exc.description)
            if exc.code is not ErrorCode.NOT_DESCRIBED:
                self._restore_state(device_id)
            return
        now = self._clock()
        with self._lock:
            self._states[device_id] = {key: (value, now) for key, value in parsed.state.items()}
            if parsed.command_id is not None:
                if len(self._answered) >= MAX_ANSWERS_KEPT:
                    self._answered.pop(next(iter(self._answered)))
                self._answered[parsed.command_id] = now
                self._answer.notify_all()

    def _is_linked(self, device_id: str) -> bool:
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            return device is not None and device.unlinked_at_s is None

    def _restore_state(self, device_id: str) -> None:
        """A refused state is retained on the broker all the same, where Home
        Assistant would read it: put the last good one back (or clear it)."""
        last = self.state_of(device_id)
        try:
            self._publisher.retain_state(device_id, StateReport(last) if last else None)
        except LinkHubError as exc:
            log.warning("could not put back %s's last good state (%s)", device_id, exc)

    def _check_state(
        self, device_id: str, description: DeviceDescription | None, state: dict[str, Any]
    ) -> None:
        if description is None:
            raise ProtocolError(ErrorCode.NOT_DESCRIBED, protocol.ERROR_DESCRIPTIONS[ErrorCode.NOT_DESCRIBED])
        try:
            description.check_state(state)
        except ProtocolError:
            # Maybe another hub stored a newer description: check against that one.
            fresh = self.description(device_id, fresh=True)
            if fresh is None or fresh == description:
                raise
            fresh.check_state(state)

    def forget(self, device_id: str) -> None:
        """An unlinked device: its values go (the description row stays, as history)."""
        with self._lock:
            self._states.pop(device_id, None)
            self._descriptions.pop(device_id, None)

    # --- commands -----------------------------------------------------------------
    def send_command(
        self,
        device_id: str,
        key: str,
        value: Any,
        *,
        origin: Origin,
        account_id: int | None = None,
        address: str | None = None,
    ) -> SentCommand:
        """Check a command against the device's description and send it.

        `account_id`: the person's, who must have the device; None for Home
        Assistant, which acts for whoever has it (recorded in their activity).
        Raises CommandRefused with the reason; nothing is sent then.
        """
        # A plain SELECT of four columns, not an ORM session: it is on the path of
        # every command (a fifth of the ORM's time, docs/performance.md).
        with self._engine.connect() as connection:
            found = connection.execute(_DEVICE_FACTS, {"device_id": device_id}).one_or_none()
        if found is None or found.unlinked_at_s is not None:
            raise CommandRefused("unknown_device", "That device is not linked.")
        if account_id is not None and found.account_id != account_id:
            raise CommandRefused("unknown_device", "You have no device with that id.")
        name, online, owner = found.name, found.online, found.account_id
        component = self._component(device_id, name, key, value)
        if not online:
            raise CommandRefused(
                "device_offline",
                f"{name} is offline: the command was not sent. Commands are not kept for later; "
                "send it again once the device is back.",
            )
        command = Command(secrets.token_urlsafe(16), key, value)
        (result,) = self._publish([(device_id, protocol.COMMAND, command)])
        if isinstance(result, LinkHubError):
            raise CommandRefused("not_delivered", f"The command did not reach the broker ({result}).")
        detail = f"{command_words(component, value)} ({origin_words(origin)})"
        record = _CommandRecord(owner, device_id, address, detail, self._clock())
        if self._recorder is not None:
            self._records.put(record)
        else:  # not started (a service used on its own): at once
            self._write_records([record])
        return SentCommand(command.command_id, device_id, component, value)

    def _component(self, device_id: str, name: str, key: str, value: Any) -> Component:
        """The component `value` is for, checked; CommandRefused if there is none or
        the value does not fit. Checked against the description this hub has in
        memory, and against the stored one only if that fails (another hub on the
        same database may have stored a newer one)."""
        for fresh in (False, True):
            description = self.description(device_id, fresh=fresh)
            component = description.component(key) if description is not None else None
            try:
                if component is not None:
                    component.check_command(value)
                    return component
            except ProtocolError as exc:
                if fresh:
                    raise CommandRefused("invalid_value", f"{exc.description}.") from None
                continue
            if fresh and description is None:
                raise CommandRefused(
                    "not_described", f"{name} has not said what it has yet, so it cannot be commanded."
                )
        raise CommandRefused("unknown_component", f"{name} has no component {key!r}.")

    # --- storing ------------------------------------------------------------------
    def _store_description(self, device_id: str, description: DeviceDescription) -> DeviceDescription | None:
        """Store it (replacing the old one); the previous one, for what went away."""
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None:
                raise _NotLinked()
            record = session.get(DeviceDescriptionRecord, device_id) or DeviceDescriptionRecord(
                device_id=device_id, description_json="", described_at_s=0.0
            )
            previous = _parsed_description(device_id, record.description_json)
            # Stored as the hub would send it, so every hub reads back the same thing.
            record.description_json = protocol.encode(description).decode()
            record.described_at_s = self._clock()
            session.add(record)
        with self._lock:
            self._descriptions[device_id] = description
            kept = {c.key for c in description.components if c.has_state}
            values = self._states.get(device_id)
            if values is not None:
                self._states[device_id] = {k: v for k, v in values.items() if k in kept}
        return previous

    # --- refusals -----------------------------------------------------------------
    def _over_limit(self, device_id: str, kind: str) -> bool:
        over, reply = self._refusals.over_limit(device_id, kind, lambda: None)
        if reply is not None:
            self._publish([(device_id, protocol.DEVICE_REPLY, reply)])
        return over

    def _refuse(
        self,
        device_id: str,
        request_id: str | None,
        error: ErrorCode,
        description: str,
        *,
        cause: BaseException | None = None,
    ) -> None:
        reply = self._refusals.refusal(device_id, request_id, error, description, cause=cause)
        self._publish([(device_id, protocol.DEVICE_REPLY, reply)])

    def _publish(self, messages: list[tuple[str, str, DeviceReply | Command]]) -> list[LinkHubError | float]:
        return self._publisher.send_to_devices(messages)


@dataclass(frozen=True, slots=True)
class _CommandRecord:
    account_id: int
    device_id: str
    address: str | None
    detail: str
    at_s: float


def _parsed_description(device_id: str, text: str) -> DeviceDescription | None:
    """A stored description (None when there is none, or it no longer parses)."""
    if not text:
        return None
    parsed = protocol.parse_description(text.encode())
    if isinstance(parsed, Rejection):  # stored only once it parsed; a later rule may refuse it
        log.warning("the stored description of %s no longer parses: %s", device_id, parsed.description)
        return None
    return parsed


class _NotLinked(LinkHubError):
    pass
