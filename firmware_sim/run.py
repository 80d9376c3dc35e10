"""A linked device at work: online on its own broker identity until told to stop,
running with the settings the hub desires, and serving presses of its buttons.

Also home of `connect_as_device`, which `link` uses for its first connection
with fresh credentials, and of `press` (`linkhub-device set`).

On every (re)connect, in this order (docs/protocol.md, "Settings"): subscribe
to the desired and reply topics and wait for the SUBACK, then ask for the full
desired document. Subscribing first means no change can fall between the
answer and the subscription; the version rules in firmware_sim/settings.py
drop whatever the full document already contains.
"""

from __future__ import annotations

import contextlib
import os
import random
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from firmware_sim import buttons
from firmware_sim import state as state_file
from firmware_sim.events import Event, EventSink, error, from_mqtt_error, outcome_event
from firmware_sim.mqtt_client import (
    ConnectionLost,
    ConnectRefused,
    DeviceMqttClient,
    Incoming,
    Message,
    MqttError,
    Reconnected,
    ReconnectRefused,
    Will,
)
from firmware_sim.profiles import DEFAULT_READING_INTERVAL_S, PROFILES, Profile
from firmware_sim.settings import DeviceSettings, JsonObject, Outcome
from firmware_sim.transport import FOLLOW_CREDENTIALS, TlsChoice, linked_endpoint
from linkhub_protocol import (
    COMMAND,
    DEVICE_REPLY,
    ERROR_DESCRIPTIONS,
    SETTINGS_DESIRED,
    SETTINGS_GET,
    SETTINGS_REPORTED,
    SETTINGS_SET,
    STATE,
    DeviceReply,
    DeviceStatus,
    ErrorCode,
    MqttCredentials,
    Rejection,
    SettingsGet,
    SettingsReported,
    SettingsSet,
    StateReport,
    device_status_topic,
    device_topic,
    encode,
    parse_command,
    parse_device_reply,
    parse_settings_desired,
)
from linkhub_protocol import DESCRIPTION as DESCRIPTION_LEAF

OP_TIMEOUT_S = 10.0
# How long `run` keeps trying a broker it cannot reach at start before it gives up.
FIRST_CONNECT_RETRY_S = 60.0
POLL_S = 0.2
SPOOL_POLL_S = 0.2
# How long a change made on the device waits for the hub's answer.
SET_TIMEOUT_S = 10.0
# A press still in the spool after this long was abandoned by its `set`: not sent.
REQUEST_MAX_AGE_S = 15.0
# A change the hub refused for now (slow_down, insufficient_storage, server_error:
# docs/protocol.md section 12.2) is sent again while it is younger than this;
# after that the refusal is its outcome.
RESEND_WINDOW_S = 120.0
# How long to wait before sending again where the hub gives no retry_after.
RESEND_AFTER_S = {ErrorCode.SLOW_DOWN: 5.0, ErrorCode.INSUFFICIENT_STORAGE: 60.0, ErrorCode.SERVER_ERROR: 5.0}
# `run` waits this long for a `set` that is connected on its own to finish.
LOCK_WAIT_S = SET_TIMEOUT_S + OP_TIMEOUT_S
# The exit status of `run` and `set` when the hub unlinked the device (firmware_sim/cli.py).
EXIT_UNLINKED = 3


def connect_as_device(
    device_id: str,
    creds: MqttCredentials,
    *,
    mqtt5: bool,
    timeout: float = OP_TIMEOUT_S,
    tls: TlsChoice = FOLLOW_CREDENTIALS,
    retry_for_s: float = 0.0,
    stop: threading.Event | None = None,
) -> DeviceMqttClient:
    """Connect with the device's own credentials and its last will (status offline);
    over TLS when the credentials carry the hub's TLS port and CA (firmware_sim/transport.py)."""
    endpoint = linked_endpoint(creds, tls)
    client = DeviceMqttClient(
        client_id=creds.client_id,
        username=creds.username,
        password=creds.password,
        mqtt5=mqtt5,
        will=Will(device_status_topic(device_id), encode(DeviceStatus(online=False))),
        tls_ca_pem=endpoint.ca_pem,
    )
    client.connect_retrying(
        endpoint.host,
        endpoint.port,
        timeout=timeout,
        retry_for_s=retry_for_s,
        sleep=time.sleep if stop is None else stop.wait,
    )
    return client


def forget_credentials(state_path: str | os.PathLike[str], device_id: str, on_event: EventSink) -> int:
    """The broker refused the device's own credentials: the hub unlinked it.

    docs/protocol.md, "Unlinked": a CONNACK of 0x86 (bad user name or password)
    or 0x87 (not authorized), or 4 or 5 on MQTT 3.1.1, to a device's own
    identity means the identity is gone. Retrying would never succeed, so the
    device forgets its credentials (keeping its name and model) and reports
    `unlinked`; `linkhub-device link` then links it anew. Returns EXIT_UNLINKED.
    """
    on_event({"event": "unlinked", "device_id": device_id})
    try:
        st = state_file.load(state_path)
        # Only the identity that was refused: a file linked again meanwhile is left alone.
        if st.device_id == device_id:
            state_file.save(state_path, st.unlinked())
    except (state_file.StateError, OSError) as exc:
        on_event(error("state_write_failed", f"cannot forget the dead credentials in {state_path}: {exc}"))
    return EXIT_UNLINKED


def _refused_as_unlinked(exc: MqttError) -> bool:
    return isinstance(exc, ConnectRefused) and exc.not_authorised


def publish_status(
    client: DeviceMqttClient, device_id: str, *, online: bool, timeout: float = OP_TIMEOUT_S
) -> None:
    """Retained QoS 1 status; returns once the broker acknowledged it."""
    client.publish(
        device_status_topic(device_id),
        encode(DeviceStatus(online=online)),
        qos=1,
        retain=True,
        timeout=timeout,
    )


class DeviceSession:
    """One connection of a linked device: desired settings in, reports out, and the
    button spool served. Single-threaded: everything happens in `handle`."""

    def __init__(
        self,
        client: DeviceMqttClient,
        device_id: str,
        state_path: str | os.PathLike[str],
        st: state_file.DeviceState,
        *,
        on_event: EventSink,
        announce_status: bool,
        resend_window_s: float = RESEND_WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
        reading_interval_s: float = DEFAULT_READING_INTERVAL_S,
        rng: random.Random | None = None,
    ) -> None:
        """`resend_window_s`: how long a change the hub refused for now is sent
        again (0: never; the one-shot `set` reports the refusal at once).
        `clock` times the waits (monotonic seconds; tests move a fake one).
        A device with a profile (st.profile) describes itself, reports its
        state, obeys commands and takes readings every `reading_interval_s`."""
        self.client = client
        self._clock = clock
        self.resend_window_s = resend_window_s
        self.device_id = device_id
        self.state_path = state_path
        self.st = st
        self.on_event = on_event
        self.announce_status = announce_status
        saved = st.settings
        self.settings = (
            DeviceSettings(desired=dict(saved.desired), applied_version=saved.version)
            if saved is not None
            else DeviceSettings()
        )
        self.desired_topic = device_topic(device_id, SETTINGS_DESIRED)
        self.reply_topic = device_topic(device_id, DEVICE_REPLY)
        self.status_topic = device_status_topic(device_id)
        # A full document arrived on this connection: the base version is known.
        self.synced = False
        self.awaiting_full_since: float | None = None
        self.in_flight: tuple[buttons.ButtonRequest, float] | None = None
        # When the in-flight change, refused for now, is to be sent again.
        self.resend_at: float | None = None
        self.spool_idle = False  # the last look at the spool found nothing
        self.finished: dict[str, buttons.Outcome] = {}
        self.last_reported: JsonObject | None = None
        self._next_spool_check = 0.0
        self.profile: Profile | None = PROFILES.get(st.profile) if st.profile else None
        self.components = dict(self.profile.initial) if self.profile is not None else {}
        self.command_topic = device_topic(device_id, COMMAND)
        # The description sent and not answered yet: its request id, and when.
        self.described: tuple[str, float] | None = None
        self.reading_interval_s = reading_interval_s
        self._next_reading = clock() + reading_interval_s
        self._rng = rng or random.Random()

    # --- connection ---------------------------------------------------------------
    def start(self) -> None:
        """The documented connect order; raises MqttError if the broker refuses."""
        self._subscribe_and_get()
        if self.announce_status:
            publish_status(self.client, self.device_id, online=True)

    def _subscribe_and_get(self) -> None:
        self.synced = False
        topics = [self.desired_topic, self.reply_topic]
        if self.profile is not None:
            topics.append(self.command_topic)
        for topic in topics:
            self.client.subscribe(topic, qos=1, timeout=OP_TIMEOUT_S)
        self._send_get()
        if self.profile is not None:
            self._describe()

    # --- what the device has and does (docs/protocol.md section 13) ----------------
    def _describe(self) -> None:
        """After every connect: the description; the whole state (retained) once
        the hub answered it (docs/protocol.md section 13.4: the hub checks a state
        against the description it has), or after OP_TIMEOUT_S without an answer."""
        assert self.profile is not None
        model = self.st.model or self.profile.name
        request_id = secrets.token_urlsafe(12)
        description = replace(self.profile.description(model[:64]), request_id=request_id)
        self.described = (request_id, self._clock())
        self.client.publish(
            device_topic(self.device_id, DESCRIPTION_LEAF), encode(description), qos=1, timeout=OP_TIMEOUT_S
        )

    def _described(self) -> None:
        self.described = None
        try:
            self._publish_state()
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))

    def _publish_state(self, command_id: str | None = None) -> None:
        self.client.publish(
            device_topic(self.device_id, STATE),
            encode(StateReport(dict(self.components), command_id)),
            qos=1,
            retain=True,
            timeout=OP_TIMEOUT_S,
        )

    def _on_command(self, payload: bytes) -> None:
        command = parse_command(payload)
        if isinstance(command, Rejection):
            self.on_event(error(str(command.error), f"a command was not understood: {command.description}"))
            return
        assert self.profile is not None
        component = self.profile.component(command.component)
        try:
            if component is None:
                raise ValueError(f"this device has no {command.component!r}")
            component.check_command(command.value)
        except ValueError as exc:  # ProtocolError is a ValueError
            self.on_event(error("bad_command", f"a command was refused: {exc}"))
            return
        self.components = self.profile.apply(self.components, command, self._rng)
        self.on_event(
            {
                "event": "command",
                "component": command.component,
                "value": command.value,
                "state": self.components.get(command.component),
            }
        )
        try:
            self._publish_state(command.command_id)
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))

    def _take_reading(self) -> None:
        assert self.profile is not None and self.profile.read is not None
        self.components = self.profile.read(self.components, self._rng)
        try:
            self._publish_state()
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))
            return
        self.on_event({"event": "state", "state": dict(self.components)})

    def _send_get(self) -> None:
        self.settings.get_sent()
        self.awaiting_full_since = self._clock()
        self.client.publish(
            device_topic(self.device_id, SETTINGS_GET), encode(SettingsGet()), qos=1, timeout=OP_TIMEOUT_S
        )

    def _reconnected(self) -> None:
        # paho subscribed again already, but without waiting for the SUBACK.
        try:
            self.start()
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))
            self.awaiting_full_since = self._clock()  # _tick tries again after OP_TIMEOUT_S

    # --- the loop -------------------------------------------------------------------
    def handle(self, item: Incoming | None) -> int | None:
        """Handle one thing from the inbox (None: nothing came); an exit code to stop."""
        match item:
            case Message(topic=topic, payload=payload) if topic == self.desired_topic:
                self._on_desired(payload)
            case Message(topic=topic, payload=payload) if topic == self.reply_topic:
                self._on_reply(payload)
            case Message(topic=topic, payload=payload) if topic == self.command_topic and self.profile:
                self._on_command(payload)
            case Message(topic=topic, payload=payload) if topic != self.status_topic:
                text = payload.decode("utf-8", errors="replace")
                self.on_event({"event": "message", "topic": topic, "payload": text})
            case Reconnected():
                self._reconnected()
            case ConnectionLost():
                self.synced = False
                self.awaiting_full_since = None
            case ReconnectRefused() as refused if refused.not_authorised:
                # Dropped (the hub deleted the identity), then refused on reconnecting.
                return forget_credentials(self.state_path, self.device_id, self.on_event)
            case ReconnectRefused() as refused:
                self.on_event(error("connection_refused", f"the broker refused the device: {refused.reason}"))
                return 1
            case _:
                pass
        self._tick()
        return None

    def _tick(self) -> None:
        now = self._clock()
        unanswered = self.described is not None and now - self.described[1] > OP_TIMEOUT_S
        if unanswered and self.client.is_connected():
            self._described()  # no answer (the hub away): the state goes out all the same
        if (
            self.profile is not None
            and self.profile.read is not None
            and self.described is None
            and now >= self._next_reading
            and self.client.is_connected()
        ):
            self._next_reading = now + self.reading_interval_s
            self._take_reading()
        if (
            not self.synced
            and self.awaiting_full_since is not None
            and now - self.awaiting_full_since > OP_TIMEOUT_S
            and self.client.is_connected()
        ):
            # No answer to the get (the hub may have been down): ask again.
            with contextlib.suppress(MqttError):
                self._subscribe_and_get()
        if self.in_flight is not None and self.resend_at is not None:
            if now >= self.resend_at and self.synced and self.client.is_connected():
                self.resend_at = None
                self._publish_set(self.in_flight[0])
        elif self.in_flight is not None and now - self.in_flight[1] > SET_TIMEOUT_S:
            request = self.in_flight[0]
            self._finish(
                request.request_id,
                _failure(request.request_id, "timeout", f"no answer from the hub within {SET_TIMEOUT_S:g} s"),
            )
        if now >= self._next_spool_check:
            self._next_spool_check = now + SPOOL_POLL_S
            if self.synced and self.in_flight is None and self.client.is_connected():
                self._send_next_request()

    # --- desired settings -------------------------------------------------------------
    def _on_desired(self, payload: bytes) -> None:
        msg = parse_settings_desired(payload)
        if isinstance(msg, Rejection):
            self.on_event(error(str(msg.error), f"a desired message was not understood: {msg.description}"))
            return
        action = self.settings.on_desired(msg)
        if msg.full:
            self.synced = True
            self.awaiting_full_since = None
        match action.outcome:
            case Outcome.APPLIED:
                self._applied()
            case Outcome.REFETCH:
                # A change was lost (say, while reconnecting): the full document repairs it.
                try:
                    self._send_get()
                except MqttError as exc:
                    self.on_event(from_mqtt_error(exc))
            case Outcome.STALE:
                pass

    def _applied(self) -> None:
        version = self.settings.applied_version
        self.on_event({"event": "settings", "desired": self.settings.desired, "version": version})
        saved = state_file.SavedSettings(desired=self.settings.desired, version=version)
        try:
            self.st = replace(self.st, settings=saved)
            state_file.save(self.state_path, self.st)
        except OSError as exc:
            self.on_event(error("state_write_failed", f"cannot write {self.state_path}: {exc}"))
        self._report()

    def _report(self) -> None:
        if not self.client.is_connected():
            return  # the full document after reconnecting is reported instead
        document = self.settings.reported()
        message = SettingsReported(applied_version=self.settings.applied_version, reported=document)
        try:
            self.client.publish(
                device_topic(self.device_id, SETTINGS_REPORTED), encode(message), qos=1, timeout=OP_TIMEOUT_S
            )
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))
            return
        self.last_reported = document

    # --- changes made on the device -------------------------------------------------------
    def _send_next_request(self) -> None:
        try:
            request = buttons.take_request(self.state_path)
        except OSError as exc:
            self.on_event(error("spool_read_failed", f"cannot read the button spool: {exc}"))
            return
        self.spool_idle = request is None
        if request is None:
            return
        if time.time() - request.at > REQUEST_MAX_AGE_S:
            self._finish(
                request.request_id,
                _failure(request.request_id, "expired", "nobody waited for this change any more; not sent"),
            )
            return
        self.settings.begin_local(request.request_id, request.changes)
        self._publish_set(request)

    def _publish_set(self, request: buttons.ButtonRequest) -> None:
        """Send (or send again) one change, based on the version the device runs."""
        message = SettingsSet(
            request_id=request.request_id,
            base_version=self.settings.applied_version,
            changes=request.changes,
        )
        try:
            self.client.publish(
                device_topic(self.device_id, SETTINGS_SET), encode(message), qos=1, timeout=OP_TIMEOUT_S
            )
        except MqttError as exc:
            failed = from_mqtt_error(exc)
            self._finish(
                request.request_id,
                _failure(request.request_id, failed["error"], failed["error_description"]),
            )
            return
        self.in_flight = (request, self._clock())

    def _on_reply(self, payload: bytes) -> None:
        reply = parse_device_reply(payload)
        if isinstance(reply, Rejection):
            self.on_event(error(str(reply.error), f"a reply was not understood: {reply.description}"))
            return
        if self.described is not None and reply.request_id == self.described[0]:
            if not reply.ok:
                self.on_event(outcome_event(_outcome_of(reply.request_id, reply)))
            self._described()
            return
        if self.in_flight is not None and reply.request_id == self.in_flight[0].request_id:
            if self._resend_later(self.in_flight[0], reply):
                return
            self._finish(reply.request_id, _outcome_of(reply.request_id, reply))
        elif not reply.ok:
            # A refused report or get, or a late answer: worth showing, not worth stopping for.
            event = outcome_event(_outcome_of(reply.request_id, reply))
            if reply.request_id is None:
                event.pop("request_id", None)
            self.on_event(event)

    def _resend_later(self, request: buttons.ButtonRequest, reply: DeviceReply) -> bool:
        """A refusal for now (docs/protocol.md section 12.2: slow_down,
        insufficient_storage, server_error): keep the change and send it again
        after the wait, as long as it is young enough. Whether it was kept."""
        if reply.ok or reply.error not in RESEND_AFTER_S:
            return False
        wait_s = max(float(reply.retry_after or 0), RESEND_AFTER_S[reply.error])
        if time.time() + wait_s - request.at > self.resend_window_s:
            return False
        self.resend_at = self._clock() + wait_s
        self.on_event(
            {
                "event": "waiting",
                "request_id": request.request_id,
                "error": str(reply.error),
                "error_description": reply.error_description or "",
                "retry_after": round(wait_s),
            }
        )
        return True

    def _finish(self, request_id: str, outcome: buttons.Outcome) -> None:
        if self.in_flight is not None and self.in_flight[0].request_id == request_id:
            self.in_flight = None
            self.resend_at = None
        self.settings.end_local(request_id)
        self.finished[request_id] = outcome
        try:
            buttons.record_outcome(self.state_path, outcome)
        except OSError as exc:
            self.on_event(error("spool_write_failed", f"cannot record the outcome of {request_id}: {exc}"))
        self.on_event(outcome_event(outcome))
        # A refused change is undone; if it was reported meanwhile, report again.
        if self.last_reported is not None and self.settings.reported() != self.last_reported:
            self._report()


def _failure(request_id: str, code: str, description: str) -> buttons.Outcome:
    return {"request_id": request_id, "ok": False, "error": code, "error_description": description}


def _outcome_of(request_id: str | None, reply: DeviceReply) -> buttons.Outcome:
    if reply.ok:
        return {"request_id": request_id, "ok": True, "version": reply.version}
    code = reply.error
    description = reply.error_description or (ERROR_DESCRIPTIONS.get(code, "") if code else "")
    return {
        "request_id": request_id,
        "ok": False,
        "error": str(code) if code else "server_error",
        "error_description": description,
    }


def _load_linked(
    state_path: str | os.PathLike[str], on_event: EventSink
) -> tuple[state_file.DeviceState, str, MqttCredentials] | None:
    try:
        st = state_file.load(state_path)
    except state_file.StateError as exc:
        on_event(error("bad_state", str(exc)))
        return None
    if st.device_id is None or st.mqtt is None:
        on_event(error("not_linked", f"{state_path} holds no credentials; link the device first"))
        return None
    return st, st.device_id, st.mqtt


def _take_lock(
    lock: buttons.DeviceLock, state_path: str | os.PathLike[str], stop: threading.Event, on_event: EventSink
) -> bool:
    """Become the one process connected for this state file.

    A `set` that found no `run` connects on its own for a few seconds: wait for
    it. Another `run` would kick us (and we it) forever: refuse at once.
    """
    deadline = time.monotonic() + LOCK_WAIT_S
    while not lock.acquire("run"):
        holder = lock.holder()
        if (holder is not None and holder[1] == "run") or time.monotonic() >= deadline:
            who = f" (pid {holder[0]})" if holder is not None else ""
            on_event(
                error(
                    "already_running",
                    f"another linkhub-device process{who} is connected as this device "
                    f"({state_path}); a second connection would kick it off",
                )
            )
            return False
        if stop.wait(SPOOL_POLL_S):
            return False
    return True


def run(
    state_path: str | os.PathLike[str],
    *,
    on_event: EventSink,
    stop: threading.Event,
    mqtt5: bool = True,
    tls: TlsChoice = FOLLOW_CREDENTIALS,
    connect_retry_s: float = FIRST_CONNECT_RETRY_S,
    profile: str | None = None,
    reading_interval_s: float = DEFAULT_READING_INTERVAL_S,
) -> int:
    """Stay online until `stop` is set; 0 after a clean stop, EXIT_UNLINKED once
    the broker refused the device's credentials, 1 on any other failure. A broker
    that cannot be reached at start is tried again for `connect_retry_s`.
    `profile` (firmware_sim/profiles.py) replaces the one saved at linking."""
    loaded = _load_linked(state_path, on_event)
    if loaded is None:
        return 1
    st, device_id, creds = loaded
    if profile is not None and profile != st.profile:
        st = replace(st, profile=profile)
        try:
            state_file.save(state_path, st)
        except OSError as exc:
            on_event(error("state_write_failed", f"cannot write {state_path}: {exc}"))
            return 1
    lock = buttons.DeviceLock(state_path)
    try:
        if not _take_lock(lock, state_path, stop, on_event):
            return 0 if stop.is_set() else 1
        return _run_locked(
            st,
            device_id,
            creds,
            state_path,
            on_event=on_event,
            stop=stop,
            mqtt5=mqtt5,
            tls=tls,
            connect_retry_s=connect_retry_s,
            reading_interval_s=reading_interval_s,
        )
    finally:
        lock.release()


def _run_locked(
    st: state_file.DeviceState,
    device_id: str,
    creds: MqttCredentials,
    state_path: str | os.PathLike[str],
    *,
    on_event: EventSink,
    stop: threading.Event,
    mqtt5: bool,
    tls: TlsChoice = FOLLOW_CREDENTIALS,
    connect_retry_s: float = FIRST_CONNECT_RETRY_S,
    reading_interval_s: float = DEFAULT_READING_INTERVAL_S,
) -> int:
    try:
        client = connect_as_device(
            device_id, creds, mqtt5=mqtt5, tls=tls, retry_for_s=connect_retry_s, stop=stop
        )
    except MqttError as exc:
        if _refused_as_unlinked(exc):
            return forget_credentials(state_path, device_id, on_event)
        on_event(from_mqtt_error(exc))
        return 1
    with client:
        session = DeviceSession(
            client,
            device_id,
            state_path,
            st,
            on_event=on_event,
            announce_status=True,
            reading_interval_s=reading_interval_s,
        )
        try:
            session.start()
        except MqttError as exc:
            on_event(from_mqtt_error(exc))
            return 1
        on_event({"event": "online", "device_id": device_id, "tls": client.tls})
        while not stop.is_set():
            code = session.handle(client.get(POLL_S))
            if code is not None:
                return code
        try:
            publish_status(client, device_id, online=False)
        except MqttError as exc:
            on_event(from_mqtt_error(exc))
            return 1
    return 0


# --- linkhub-device set ----------------------------------------------------------------------
def press(
    state_path: str | os.PathLike[str],
    changes: dict[str, Any],
    *,
    on_event: EventSink,
    mqtt5: bool = True,
    timeout_s: float = SET_TIMEOUT_S,
    tls: TlsChoice = FOLLOW_CREDENTIALS,
) -> int:
    """A change made on the device itself; 0 once the hub accepted it, EXIT_UNLINKED
    if the broker refused the device's credentials, 1 otherwise.

    The change always goes into the spool first. If a `run` holds the lock it
    sends it; otherwise this process takes the lock, connects as the device
    (same order as `run`) and serves the spool itself until its own change is
    answered. Exactly one outcome event is emitted for the change.
    """
    loaded = _load_linked(state_path, on_event)
    if loaded is None:
        return 1
    st, device_id, creds = loaded
    request = buttons.ButtonRequest(secrets.token_urlsafe(16), changes, time.time())
    try:
        buttons.append_request(state_path, request)
    except OSError as exc:
        on_event(error("spool_write_failed", f"cannot write the button spool: {exc}"))
        return 1
    lock = buttons.DeviceLock(state_path)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            outcome: buttons.Outcome | int | None = buttons.find_outcome(state_path, request.request_id)
            if outcome is None and lock.acquire("set"):
                try:
                    # A `run` may have answered and stopped just before we got the lock.
                    outcome = buttons.find_outcome(state_path, request.request_id)
                    if outcome is None:
                        outcome = _serve_once(st, device_id, creds, state_path, request, on_event, mqtt5, tls)
                finally:
                    lock.release()
                if isinstance(outcome, int):
                    return outcome  # the reason was emitted
            if isinstance(outcome, dict):  # an int (a reason, emitted) returned above
                on_event(outcome_event(outcome))
                return 0 if outcome.get("ok") is True else 1
            if time.monotonic() >= deadline:
                if buttons.withdraw_request(state_path, request.request_id):
                    description = f"the running device did not take the change within {timeout_s:g} s"
                else:
                    description = f"the change was sent, but no answer came within {timeout_s:g} s"
                on_event({**error("timeout", description), "request_id": request.request_id})
                return 1
            time.sleep(SPOOL_POLL_S)
    except BaseException:
        # Interrupted: a change nobody waits for must not be sent later.
        with contextlib.suppress(OSError):
            buttons.withdraw_request(state_path, request.request_id)
        raise


def _serve_once(
    st: state_file.DeviceState,
    device_id: str,
    creds: MqttCredentials,
    state_path: str | os.PathLike[str],
    request: buttons.ButtonRequest,
    on_event: EventSink,
    mqtt5: bool,
    tls: TlsChoice = FOLLOW_CREDENTIALS,
) -> buttons.Outcome | int:
    """Connected as the device (holding the lock), serve the spool until our change is
    answered; the outcome, or an exit status once the reason was emitted."""
    deadline = time.monotonic() + SET_TIMEOUT_S

    def give_up(event: Event) -> None:
        with contextlib.suppress(OSError):
            buttons.withdraw_request(state_path, request.request_id)
        on_event({**event, "request_id": request.request_id})

    def quiet(event: Event) -> None:
        # Only trouble with the connection itself; outcomes are reported by `press`.
        if (event.get("event") == "error" and "request_id" not in event) or event.get("event") == "unlinked":
            on_event(event)

    try:
        client = connect_as_device(device_id, creds, mqtt5=mqtt5, tls=tls)
    except MqttError as exc:
        if _refused_as_unlinked(exc):
            with contextlib.suppress(OSError):
                buttons.withdraw_request(state_path, request.request_id)
            return forget_credentials(state_path, device_id, on_event)
        give_up(from_mqtt_error(exc))
        return 1
    with client:
        session = DeviceSession(
            client, device_id, state_path, st, on_event=quiet, announce_status=False, resend_window_s=0.0
        )
        try:
            session.start()
        except MqttError as exc:
            give_up(from_mqtt_error(exc))
            return 1
        while time.monotonic() < deadline:
            code = session.handle(client.get(POLL_S))
            if code is not None:  # the reason was emitted
                with contextlib.suppress(OSError):
                    buttons.withdraw_request(state_path, request.request_id)
                return code
            outcome = session.finished.get(request.request_id)
            if outcome is not None:
                return outcome
            if session.synced and session.in_flight is None and session.spool_idle:
                # Taken by a `run` that stopped before it got an answer.
                give_up(error("lost", "the change was taken by a device process that stopped"))
                return 1
        if not session.synced:
            give_up(error("timeout", f"the hub did not send the settings within {SET_TIMEOUT_S:g} s"))
        else:
            give_up(error("timeout", f"no answer from the hub within {SET_TIMEOUT_S:g} s"))
        return 1
