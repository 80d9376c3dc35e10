"""The device's MQTT connection: the one module that owns paho.

A small blocking API over paho's network thread. Every call that needs an
answer from the broker (CONNACK, SUBACK, PUBACK) waits for it with a timeout
and raises `MqttError` on refusal or silence. paho's callbacks only convert
what arrives and hand it to `inbox`; nothing is raised on paho's thread.

Besides messages, `inbox` carries what happens to the connection afterwards
(`ConnectionLost`, `Reconnected`, `ReconnectRefused`), so a caller can react
to a broker restart from its own thread. paho reconnects on its own; topics
subscribed through `subscribe` are subscribed again on each reconnect.
"""

from __future__ import annotations

import contextlib
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

KEEPALIVE_S = 30
RECONNECT_MIN_DELAY_S = 0.2
RECONNECT_MAX_DELAY_S = 2
# A first connect that finds no broker (not started yet, restarting, its listen
# backlog full under a thousand devices at once) is tried again after this,
# doubled each time up to the maximum, each wait drawn between half and all of
# it so that a fleet powered on together does not come back in step
# (docs/protocol.md, "Connecting").
FIRST_CONNECT_MIN_DELAY_S = 0.5
FIRST_CONNECT_MAX_DELAY_S = 30.0
# MQTT 5 reason codes (3.1.1 CONNACK codes 4 and 5 map onto them in paho).
_BAD_USERNAME_OR_PASSWORD = 0x86
_NOT_AUTHORIZED = 0x87
_FAILURE = 0x80


# --- errors -----------------------------------------------------------------
class MqttError(Exception):
    """Something the broker refused, or did not answer in time."""


class BrokerUnreachable(MqttError):
    """No TCP connection to the broker (refused, unresolvable, timed out)."""


class ConnectRefused(MqttError):
    """The broker answered CONNACK with a failure."""

    def __init__(self, reason: str, code: int) -> None:
        super().__init__(f"connection refused by the broker: {reason}")
        self.reason = reason
        self.code = code

    @property
    def not_authorised(self) -> bool:
        return self.code in (_BAD_USERNAME_OR_PASSWORD, _NOT_AUTHORIZED)


class SubscribeRefused(MqttError):
    pass


class PublishRefused(MqttError):
    pass


class MqttTimeout(MqttError):
    pass


class TlsFailed(MqttError):
    """The TLS handshake failed: the broker's certificate is not signed by the CA
    the device trusts or does not name the host, or the port does not speak TLS."""


class TlsUnavailable(MqttError):
    """TLS was asked for but the device cannot use it (no TLS port known, no CA, or a bad one)."""


# --- what arrives in the inbox ------------------------------------------------
@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    reason: str


@dataclass(frozen=True, slots=True)
class Reconnected:
    """paho reconnected and the subscriptions were sent again."""


@dataclass(frozen=True, slots=True)
class ReconnectRefused:
    """A reconnect got a failing CONNACK (e.g. the credentials were revoked)."""

    reason: str
    code: int

    @property
    def not_authorised(self) -> bool:
        return self.code in (_BAD_USERNAME_OR_PASSWORD, _NOT_AUTHORIZED)


Incoming = Message | ConnectionLost | Reconnected | ReconnectRefused


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(slots=True)
class _Acks:
    """Broker answers keyed by packet id, waited for on the caller's thread."""

    cond: threading.Condition = field(default_factory=threading.Condition)
    results: dict[int, Any] = field(default_factory=dict)
    abandoned: set[int] = field(default_factory=set)

    def put(self, mid: int, result: Any) -> None:
        with self.cond:
            if mid in self.abandoned:
                self.abandoned.discard(mid)
                return
            self.results[mid] = result
            self.cond.notify_all()

    def wait(self, mid: int, timeout: float) -> Any | None:
        """The answer for `mid`, or None after `timeout` (a late answer is dropped)."""
        with self.cond:
            if self.cond.wait_for(lambda: mid in self.results, timeout):
                return self.results.pop(mid)
            self.abandoned.add(mid)
            return None


def tls_context(ca_pem: str) -> ssl.SSLContext:
    """A client context that trusts only `ca_pem` (not the system's CAs: the hub's
    CA is its own) and checks the host name; TlsUnavailable if it holds no certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=ca_pem)
    except ssl.SSLError as exc:
        raise TlsUnavailable(f"the CA certificate cannot be used: {exc.reason or exc}") from None
    return context


def _reason_value(rc: ReasonCode | int) -> int:
    return rc.value if isinstance(rc, ReasonCode) else int(rc)


def _set_nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    # Without it every request/answer round trip waits for delayed ACKs (~40 ms).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DeviceMqttClient:
    """One MQTT connection with blocking connect/subscribe/publish and an inbox."""

    def __init__(
        self,
        *,
        client_id: str,
        username: str,
        password: str,
        mqtt5: bool = True,
        will: Will | None = None,
        tls_ca_pem: str | None = None,
    ) -> None:
        """`tls_ca_pem`: connect with TLS (1.2 or newer), accepting only a broker
        certificate signed by this CA (PEM) and naming the host connected to."""
        self.mqtt5 = mqtt5
        self.tls = tls_ca_pem is not None
        self.inbox: queue.Queue[Incoming] = queue.Queue()
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if mqtt5 else MQTTProtocolVersion.MQTTv311,
        )
        self._client.username_pw_set(username, password)
        if tls_ca_pem is not None:
            self._client.tls_set_context(tls_context(tls_ca_pem))
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        self._client.reconnect_delay_set(RECONNECT_MIN_DELAY_S, RECONNECT_MAX_DELAY_S)  # type: ignore[arg-type]
        self._client.on_socket_open = _set_nodelay
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message

        self._lock = threading.Lock()
        self._connack: threading.Event = threading.Event()
        self._connack_rc: ReasonCode | None = None
        self._connected_once = False
        self._subscriptions: dict[str, int] = {}
        self._subacks = _Acks()
        self._pubacks = _Acks()
        self._loop_started = False

    # --- paho callbacks (network thread): convert and hand off only ---------
    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            first = not self._connected_once
            if first:
                self._connack_rc = reason_code
                if not reason_code.is_failure:
                    self._connected_once = True
                self._connack.set()
                return
            subscriptions = dict(self._subscriptions)
        if reason_code.is_failure:
            self.inbox.put(ReconnectRefused(str(reason_code), _reason_value(reason_code)))
            return
        for topic, qos in subscriptions.items():
            self._client.subscribe(topic, qos)
        self.inbox.put(Reconnected())

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: Any,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        with self._lock:
            if not self._connected_once:
                return
        self.inbox.put(ConnectionLost(str(reason_code)))

    def _on_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        self._subacks.put(mid, list(reason_codes))

    def _on_publish(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        self._pubacks.put(mid, reason_code)

    def _on_message(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        props = getattr(msg, "properties", None)
        response_topic = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        self.inbox.put(
            Message(
                topic=msg.topic,
                payload=bytes(msg.payload),
                retain=bool(msg.retain),
                response_topic=response_topic if isinstance(response_topic, str) else None,
                correlation_data=bytes(correlation) if correlation is not None else None,
            )
        )

    # --- blocking API -----------------------------------------------------------
    def connect(self, host: str, port: int, *, timeout: float = 10.0) -> None:
        """Connect and wait for a successful CONNACK; raise `MqttError` otherwise."""
        if self._client.connect_timeout != timeout:  # paho refuses to change it after a failed try
            self._client.connect_timeout = timeout
        try:
            self._client.connect(host, port, keepalive=KEEPALIVE_S)
        except ssl.SSLCertVerificationError as exc:
            raise TlsFailed(
                f"the MQTT broker at {host}:{port} is not the one this device trusts: "
                f"{exc.verify_message or exc.reason} (a certificate not signed by the hub's CA, "
                "or not naming this host)"
            ) from exc
        except (ssl.SSLError, ConnectionResetError) as exc:
            if not self.tls:  # a reset without TLS is just a broker that hung up
                raise BrokerUnreachable(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
            # A plaintext listener answers a TLS hello by closing the connection.
            reason = exc.reason if isinstance(exc, ssl.SSLError) else "the broker closed the connection"
            raise TlsFailed(
                f"no TLS connection with the MQTT broker at {host}:{port} ({reason or exc}); "
                "is it the broker's TLS port?"
            ) from exc
        except (OSError, ValueError) as exc:
            raise BrokerUnreachable(f"cannot reach the MQTT broker at {host}:{port}: {exc}") from exc
        self._drive_network()
        if not self._connack.wait(timeout):
            self.close()
            raise MqttTimeout(f"no CONNACK from the MQTT broker at {host}:{port} within {timeout:g} s")
        rc = self._connack_rc
        assert rc is not None
        if rc.is_failure:
            self.close()
            raise ConnectRefused(str(rc), _reason_value(rc))

    def connect_retrying(
        self,
        host: str,
        port: int,
        *,
        timeout: float,
        retry_for_s: float,
        sleep: Callable[[float], object] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> int:
        """`connect`, tried again with backoff while the broker cannot be reached, for
        up to `retry_for_s` seconds; returns the number of attempts. A refusal (bad
        credentials, failed TLS) is an answer and raises at once: retrying would
        not change it. `sleep(seconds)` returning True (as `threading.Event.wait`
        does once set) stops the retrying; `clock` and `jitter` (0 to 1) are for tests."""
        give_up_at = clock() + retry_for_s
        delay_s = FIRST_CONNECT_MIN_DELAY_S
        attempts = 0
        while True:
            attempts += 1
            try:
                self.connect(host, port, timeout=timeout)
                return attempts
            except BrokerUnreachable:
                wait_s = delay_s * (0.5 + jitter() / 2)
                if clock() + wait_s > give_up_at or sleep(wait_s) is True:
                    raise
            delay_s = min(delay_s * 2, FIRST_CONNECT_MAX_DELAY_S)

    def _drive_network(self) -> None:
        """Who does the socket I/O: paho's own thread here (the fleet overrides this)."""
        self._client.loop_start()
        self._loop_started = True

    def subscribe(self, topic: str, *, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK; raise if refused (reason >= 0x80)."""
        with self._lock:
            self._subscriptions[topic] = qos
        result, mid = self._client.subscribe(topic, qos)
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise MqttError(f"cannot subscribe to {topic}: {paho.error_string(result)}")
        codes = self._subacks.wait(mid, timeout)
        if codes is None:
            raise MqttTimeout(f"no SUBACK for {topic} within {timeout:g} s")
        for code in codes:
            if _reason_value(code) >= _FAILURE:
                with self._lock:
                    self._subscriptions.pop(topic, None)
                raise SubscribeRefused(f"subscription to {topic} refused: {code}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        timeout: float = 10.0,
    ) -> None:
        """Publish and, for QoS 1, wait for the PUBACK; raise if refused or silent.

        Response Topic and Correlation Data are MQTT 5 properties; they are
        dropped on a 3.1.1 connection (which has no properties).
        """
        properties: Properties | None = None
        if self.mqtt5 and (response_topic is not None or correlation_data is not None):
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                properties.ResponseTopic = response_topic
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        # NO_CONN still queues a QoS 1 message: paho sends it after reconnecting.
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MqttError(f"cannot publish to {topic}: {paho.error_string(info.rc)}")
        if qos == 0:
            return
        code = self._pubacks.wait(info.mid, timeout)
        if code is None:
            raise MqttTimeout(f"no PUBACK for {topic} within {timeout:g} s")
        if _reason_value(code) >= _FAILURE:
            raise PublishRefused(f"publish to {topic} refused: {code}")

    def get(self, timeout: float) -> Incoming | None:
        """The next thing from the inbox, or None after `timeout` seconds."""
        try:
            return self.inbox.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def is_connected(self) -> bool:
        return self._client.is_connected()

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop paho's thread. Idempotent."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
        if self._loop_started:
            self._loop_started = False
            self._client.loop_stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        _exc_type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        self.close()
