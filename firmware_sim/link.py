"""Linking: ask the hub for a code, show it, wait for approval, take the credentials.

The device side of RFC 8628 over MQTT. The device connects with the public
bootstrap identity, listens on a reply topic only it knows, and sends the same
link request (same request id, same reply topic, same public key) to the
request topic of its client id every `interval` seconds until a final reply.
Resending is the polling of RFC 8628 §3.4, and it also makes the procedure
survive lost replies and broker or hub restarts. The request id, reply token
and the attempt's private key live in the state file, so a device restarted
mid-link resends the very same request and can open the sealed credentials
that answer it (firmware_sim/keys.py).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import replace

from firmware_sim import keys
from firmware_sim import state as state_file
from firmware_sim.events import Event, EventSink, error, from_mqtt_error
from firmware_sim.mqtt_client import (
    ConnectionLost,
    ConnectRefused,
    DeviceMqttClient,
    Message,
    MqttError,
    MqttTimeout,
    Reconnected,
    ReconnectRefused,
)
from firmware_sim.run import connect_as_device, publish_status
from linkhub_protocol import (
    BOOTSTRAP_PASSWORD,
    BOOTSTRAP_USERNAME,
    ApprovedReply,
    DeviceInfo,
    ErrorCode,
    ErrorReply,
    LinkRequest,
    PendingReply,
    ProtocolError,
    encode,
    link_request_topic,
    parse_link_reply,
    reply_topic,
)

DEFAULT_RETRY_INTERVAL_S = 5.0
# Without any reply the hub is probably not there; with a code, wait for it to expire.
NO_REPLY_TIMEOUT_S = 60.0
EXPIRY_GRACE_S = 30.0
SLOW_DOWN_S = 5.0  # RFC 8628 §3.5
MIN_INTERVAL_S = 0.5
OP_TIMEOUT_S = 10.0

FINAL_ERRORS = frozenset(
    {
        ErrorCode.ACCESS_DENIED,
        ErrorCode.EXPIRED_TOKEN,
        ErrorCode.ALREADY_LINKED,
        ErrorCode.INVALID_REQUEST,
        ErrorCode.PAYLOAD_TOO_LARGE,
        ErrorCode.UNSUPPORTED_VERSION,
    }
)


def new_pending() -> state_file.Pending:
    # 24 random bytes = 192 bits each; the reply topic must be unguessable.
    return state_file.Pending(
        request_id=secrets.token_urlsafe(24),
        reply_token=secrets.token_urlsafe(24),
        private_key=keys.new_private_key(),
    )


def _request_for(pending: state_file.Pending, device: DeviceInfo) -> LinkRequest | None:
    """The request to (re)send for a saved attempt; None if it cannot be resent
    (from an older simulator, without a key): then a new attempt starts."""
    if pending.private_key is None:
        return None
    try:
        public_key = keys.public_key(pending.private_key)
        return LinkRequest(pending.request_id, reply_topic(pending.reply_token), device, public_key)
    except (ProtocolError, ValueError):
        return None


def _still_linked(st: state_file.DeviceState, *, mqtt5: bool) -> bool | None:
    """Whether the saved credentials still open the broker: True, False (refused
    as not authorised: the hub unlinked the device), or None (no answer)."""
    assert st.device_id is not None and st.mqtt is not None
    try:
        client = connect_as_device(st.device_id, st.mqtt, mqtt5=mqtt5)
    except ConnectRefused as exc:
        return False if exc.not_authorised else None
    except MqttError:
        return None
    client.close()
    return True


def link(
    hub_host: str,
    hub_port: int,
    device: DeviceInfo,
    state_path: str | os.PathLike[str],
    *,
    mqtt5: bool = True,
    timeout_s: float | None = None,
    retry_interval_s: float = DEFAULT_RETRY_INTERVAL_S,
    on_event: EventSink,
    ca_pem: str | None = None,
    profile: str | None = None,
) -> int:
    """Link the device through the hub's broker at hub_host:hub_port; with
    `ca_pem` over TLS (hub_port is then the TLS port), trusting only that CA.
    `profile` (firmware_sim/profiles.py) is kept in the state file for `run`.

    Returns 0 once linked (credentials saved and status online acknowledged),
    1 otherwise; either way the outcome was reported through `on_event`.
    `timeout_s=None` waits until the code's expiry plus 30 s, or 60 s if the
    hub never answers.
    """
    started = time.monotonic()
    try:
        st = state_file.load(state_path)
    except state_file.StateError as exc:
        on_event(error("bad_state", str(exc)))
        return 1
    if st.linked:
        still = _still_linked(st, mqtt5=mqtt5)
        if still is not False:
            why = "the broker takes them" if still else "the broker did not say whether they still work"
            on_event(
                error(
                    "already_linked_locally",
                    f"{state_path} already holds credentials for device {st.device_id} and {why}; "
                    "run the device, or unlink it on the hub first",
                )
            )
            return 1
        # Unlinked while this device was off: the broker refuses its identity
        # (docs/protocol.md, "Unlinked"). Forget it, as a running device does, and link anew.
        on_event({"event": "unlinked", "device_id": st.device_id, "relinking": True})
        st = st.unlinked()
        state_file.save(state_path, st)

    pending = st.pending
    request = _request_for(pending, device) if pending is not None else None
    if pending is None or request is None:
        pending = new_pending()
        request = _request_for(pending, device)
        assert request is not None
    st = replace(st, name=device.name, model=device.model, pending=pending, profile=profile or st.profile)
    try:
        state_file.save(state_path, st)
    except OSError as exc:
        on_event(error("state_write_failed", f"cannot write {state_path}: {exc}"))
        return 1

    session = _LinkSession(
        hub_host=hub_host,
        hub_port=hub_port,
        request=request,
        state_path=state_path,
        st=st,
        mqtt5=mqtt5,
        deadline=None if timeout_s is None else started + timeout_s,
        started=started,
        interval=max(retry_interval_s, MIN_INTERVAL_S),
        on_event=on_event,
        ca_pem=ca_pem,
    )
    return session.run()


class _LinkSession:
    """One attempt of the procedure, from bootstrap connect to a final answer."""

    def __init__(
        self,
        *,
        hub_host: str,
        hub_port: int,
        request: LinkRequest,
        state_path: str | os.PathLike[str],
        st: state_file.DeviceState,
        mqtt5: bool,
        deadline: float | None,
        started: float,
        interval: float,
        on_event: EventSink,
        ca_pem: str | None = None,
    ) -> None:
        self.hub_host = hub_host
        self.ca_pem = ca_pem
        self.hub_port = hub_port
        self.request = request
        self.payload = encode(request)
        self.state_path = state_path
        self.st = st
        assert st.pending is not None and st.pending.private_key is not None
        self.private_key = st.pending.private_key
        # The bootstrap client id: random, and the last level of the request topic
        # (the hub counts new requests per client id).
        self.client_id = f"lh-boot-{secrets.token_hex(6)}"  # 20 characters: within MQTT 3.1.1's 23
        self.mqtt5 = mqtt5
        self.fixed_deadline = deadline
        self.deadline = deadline if deadline is not None else started + NO_REPLY_TIMEOUT_S
        self.interval = interval
        self.slow_down_s = 0.0
        self.not_before = started  # a refusal's retry_after: no resend before this
        self.last_sent = started
        self.seen_reply = False
        self.shown_code: tuple[str, str] | None = None
        self.on_event = on_event

    def _remaining(self) -> float:
        return self.deadline - time.monotonic()

    def _op_timeout(self) -> float:
        return max(min(OP_TIMEOUT_S, self._remaining()), 0.1)

    def run(self) -> int:
        client = DeviceMqttClient(
            client_id=self.client_id,
            username=BOOTSTRAP_USERNAME,
            password=BOOTSTRAP_PASSWORD,
            mqtt5=self.mqtt5,
            tls_ca_pem=self.ca_pem,
        )
        try:
            client.connect_retrying(
                self.hub_host, self.hub_port, timeout=self._op_timeout(), retry_for_s=self._remaining()
            )
            client.subscribe(self.request.reply_to, qos=1, timeout=self._op_timeout())
            self._send(client)
            return self._wait_for_answer(client)
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))
            return 1
        finally:
            client.close()

    def _send(self, client: DeviceMqttClient) -> None:
        """Publish the request once; a lost PUBACK is not fatal, the next resend retries."""
        self.last_sent = time.monotonic()
        # On a timeout (e.g. the broker is restarting) paho resends it after reconnecting.
        with contextlib.suppress(MqttTimeout):
            client.publish(
                link_request_topic(self.client_id),
                self.payload,
                qos=1,
                response_topic=self.request.reply_to,
                correlation_data=self.request.request_id.encode(),
                timeout=self._op_timeout(),
            )

    def _wait_for_answer(self, client: DeviceMqttClient) -> int:
        while True:
            now = time.monotonic()
            if now >= self.deadline:
                self.on_event(self._timeout_event())
                return 1
            next_send = max(self.last_sent + self.interval + self.slow_down_s, self.not_before)
            if now >= next_send:
                self._send(client)
                continue
            item = client.get(min(next_send, self.deadline) - now)
            match item:
                case Message(topic=topic, payload=payload) if topic == self.request.reply_to:
                    result = self._on_reply(client, payload)
                    if result is not None:
                        return result
                case Reconnected():
                    self._send(client)  # the subscription is back; don't wait for the timer
                case ReconnectRefused() as refused:
                    code = "not_authorised" if refused.not_authorised else "connection_refused"
                    self.on_event(error(code, f"the broker refused the device: {refused.reason}"))
                    return 1
                case ConnectionLost() | Message() | None:
                    pass

    def _on_reply(self, client: DeviceMqttClient, payload: bytes) -> int | None:
        """Handle one reply; an exit code once final, None to keep polling."""
        reply = parse_link_reply(payload)
        match reply:
            case PendingReply() if reply.request_id == self.request.request_id:
                self.seen_reply = True
                self.interval = max(float(reply.interval), MIN_INTERVAL_S)
                if self.fixed_deadline is None:
                    self.deadline = time.monotonic() + reply.expires_in + EXPIRY_GRACE_S
                code = (reply.user_code, reply.verification_uri_complete)
                if code != self.shown_code:
                    self.shown_code = code
                    self.on_event(
                        {
                            "event": "code",
                            "user_code": reply.user_code,
                            "verification_uri": reply.verification_uri,
                            "verification_uri_complete": reply.verification_uri_complete,
                            "expires_in": reply.expires_in,
                        }
                    )
                return None
            case ApprovedReply() if reply.request_id == self.request.request_id:
                return self._finish(client, reply)
            # An error without a request id may answer someone else's request that
            # named our reply topic (a guest who learnt it): never final
            # (docs/protocol.md section 6); our own request is answered by the
            # next resend.
            case ErrorReply() if reply.request_id is None:
                self.on_event(
                    {
                        "event": "warning",
                        "error": str(reply.error),
                        "error_description": reply.error_description,
                    }
                )
                return None
            case ErrorReply() if reply.request_id == self.request.request_id:
                self.seen_reply = True
                if reply.error in (ErrorCode.SLOW_DOWN, ErrorCode.TOO_MANY_PENDING):
                    self._wait_and_resend(reply)
                    return None
                if reply.error in FINAL_ERRORS:
                    self._save(self.st.with_pending(None))
                self.on_event(
                    {
                        "event": "error",
                        "error": str(reply.error),
                        "error_description": reply.error_description,
                    }
                )
                return 1
            case _:
                return None  # garbage, or a reply to some other request

    def _wait_and_resend(self, reply: ErrorReply) -> None:
        """slow_down or too_many_pending: not final. Wait longer (RFC 8628 §3.5: +5 s
        per slow_down), at least `retry_after`, then resend the same request."""
        if reply.error == ErrorCode.SLOW_DOWN:
            self.slow_down_s += SLOW_DOWN_S
        wait_s = float(reply.retry_after or 0)
        self.not_before = max(self.not_before, time.monotonic() + wait_s)
        if self.fixed_deadline is None:  # the hub answered: give it the time it asked for
            self.deadline = max(self.deadline, self.not_before + NO_REPLY_TIMEOUT_S)
        self.on_event(
            {
                "event": "waiting",
                "error": str(reply.error),
                "error_description": reply.error_description,
                "retry_after": max(wait_s, self.interval + self.slow_down_s),
            }
        )

    def _finish(self, bootstrap: DeviceMqttClient, reply: ApprovedReply) -> int:
        try:
            credentials = keys.open_credentials(self.private_key, reply)
        except keys.UnreadableCredentials as exc:
            # Not final: the pending request (and its key) stay, so a restart resends it.
            self.on_event(error("unreadable_credentials", str(exc)))
            return 1
        # The credentials exist only in this message: keep them before anything else.
        linked = replace(self.st, device_id=reply.device_id, mqtt=credentials, pending=None)
        if not self._save(linked):
            return 1
        bootstrap.close()
        try:
            client = connect_as_device(
                reply.device_id, credentials, mqtt5=self.mqtt5, retry_for_s=max(self._remaining(), 0.0)
            )
        except MqttError as exc:
            self.on_event(from_mqtt_error(exc))
            return 1
        with client:
            try:
                # The hub takes this status as the receipt for the credentials.
                publish_status(client, reply.device_id, online=True)
            except MqttError as exc:
                self.on_event(from_mqtt_error(exc))
                return 1
            self.on_event({"event": "linked", "device_id": reply.device_id, "tls": client.tls})
            # This process ends here: leave a truthful retained status behind.
            with contextlib.suppress(MqttError):
                publish_status(client, reply.device_id, online=False)
        return 0

    def _save(self, st: state_file.DeviceState) -> bool:
        try:
            state_file.save(self.state_path, st)
        except OSError as exc:
            self.on_event(error("state_write_failed", f"cannot write {self.state_path}: {exc}"))
            return False
        self.st = st
        return True

    def _timeout_event(self) -> Event:
        where = f"{self.hub_host}:{self.hub_port}"
        if self.shown_code is not None:
            description = f"the code was not approved in time (hub at {where})"
        elif self.seen_reply:
            description = f"no final answer from the hub at {where}"
        else:
            description = f"no answer from the hub at {where} (is the hub running?)"
        return error("timeout", description)
