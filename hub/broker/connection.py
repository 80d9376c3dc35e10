"""The one module that owns paho-mqtt on the hub side (aiomqtt's shape, threaded).

Two kinds of connection. MqttConnection, for everything but link requests:
callbacks only convert and hand off, inbound messages go to a queue that one
dispatcher thread drains, so a handler may publish and wait for its PUBACK
without blocking paho's network loop. Every subscribe and publish waits for
its acknowledgement in a table keyed by message id; a missing or refused
acknowledgement raises, because a publish nobody acknowledged did not happen.
MqttResponder, for link requests: answered in batches on the thread that reads
them, their answers not waited for (a device asks again), because that hand-off
was most of the hub's cost per request (docs/performance.md).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties, VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from hub.core.link_limits import LogEvery
from hub.errors import BrokerRefused, BrokerTimeout, BrokerUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    topic: str
    payload: bytes
    retain: bool
    response_topic: str | None = None
    correlation_data: bytes | None = None


MessageHandler = Callable[[InboundMessage], None]
# An outgoing message: topic, payload, MQTT 5 correlation data or None.
Outbound = tuple[str, bytes, bytes | None]
# Takes every request that arrived together (at most MAX_BATCH), so a burst of
# link requests shares one database transaction; returns the answers to send.
BatchResponder = Callable[[list[InboundMessage]], Sequence[Outbound]]
MAX_BATCH = 64
# What a flood on the public bootstrap login can make the responder hold is
# bounded (issue 19). Answers go at QoS 0, so paho holds none of them waiting
# for a PUBACK; and since paho's loop_read() reads as many packets per call as
# it holds unacknowledged messages (paho-mqtt 2.2, client.py), it then reads one.
MAX_WAITING_REQUESTS = 4 * MAX_BATCH
# Retained link requests seen and not yet cleared; past this the responder asks
# for a sweep (`needs_retained_sweep`) instead of remembering more.
MAX_RETAINED_TO_CLEAR = 4096


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


def _set_nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    # paho leaves Nagle on; with mosquitto's delayed ACKs that adds ~40 ms to
    # every request/response round trip (Nagle's algorithm with delayed ACKs, RFC 1122 §4.2.3.4;
    # measured in docs/performance.md).
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CorrelationData(Properties):
    """The MQTT 5 properties of a publish that carry only Correlation Data,
    encoded once.

    paho's Properties builds its two tables of every property in `__init__` and
    walks all their names on each attribute set and again in `pack()`: about
    0.1 ms a reply, a sixth of the hub's whole work for a link request
    (docs/performance.md). paho reads a publish's properties only through
    `pack()`; tests/test_mqtt.py checks the bytes equal paho's own.
    """

    _packed: bytes
    CorrelationData: bytes

    def __init__(self, correlation: bytes) -> None:  # not Properties.__init__: see above
        object.__setattr__(self, "packetType", PacketTypes.PUBLISH)
        encoded = b"\x09" + len(correlation).to_bytes(2, "big") + correlation  # 9: Correlation Data
        object.__setattr__(self, "_packed", VariableByteIntegers.encode(len(encoded)) + encoded)
        object.__setattr__(self, "CorrelationData", correlation)

    def pack(self) -> bytes:
        return bytes(self._packed)

    def __str__(self) -> str:  # paho's walks the tables this class does not build
        return f"{{'CorrelationData': {self.CorrelationData!r}}}"

    __repr__ = __str__


# The link-request connection's socket receive buffer. Linux lets a loopback
# socket's buffer grow to tcp_rmem's maximum (6 MiB by default): tens of
# thousands of small link requests queued in the kernel, which an honest
# device's request would wait behind. Small, the backlog stays in mosquitto,
# which drops QoS 0 messages for a client past `max_queued_messages` (1,000 by
# default; mosquitto 2.0 src/database.c, db__ready_for_flight) instead.
RESPONDER_RCVBUF_BYTES = 64 * 1024


def _small_receive_buffer(client: paho.Client, userdata: Any, sock: Any) -> None:
    _set_nodelay(client, userdata, sock)
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RESPONDER_RCVBUF_BYTES)


def _new_client(
    client_id: str, username: str, password: str, mqtt5: bool, will: tuple[str, bytes] | None = None
) -> paho.Client:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
    )
    client.username_pw_set(username, password)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.on_socket_open = _set_nodelay
    return client


def _connect(client: paho.Client, broker: BrokerAddress) -> None:
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        where = f"{broker.host}:{broker.port}"
        raise BrokerUnavailable(f"cannot reach the MQTT broker at {where}: {exc}") from exc


def _inbound(msg: paho.MQTTMessage) -> InboundMessage:
    props = getattr(msg, "properties", None)
    return InboundMessage(
        topic=msg.topic,
        payload=bytes(msg.payload),
        retain=bool(msg.retain),
        response_topic=getattr(props, "ResponseTopic", None),
        correlation_data=getattr(props, "CorrelationData", None),
    )


def _correlation_properties(mqtt5: bool, correlation: bytes | None) -> Properties | None:
    """MQTT 5 Correlation Data for a publish (MQTT 3.1.1 has no properties)."""
    if not mqtt5 or correlation is None:
        return None
    return CorrelationData(correlation)


def _failed(reason: ReasonCode | int) -> bool:
    if isinstance(reason, ReasonCode):
        return reason.is_failure
    return reason >= 0x80


# Put in a connection's inbox when it loses the broker (compared by identity).
_LOST = InboundMessage("", b"", False)


class MqttConnection:
    """A long-lived client that reconnects by itself and re-subscribes."""

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        username: str,
        password: str,
        on_message: MessageHandler | None = None,
        on_lost: Callable[[], None] | None = None,
        mqtt5: bool = True,
        label: str = "an MQTT connection",
        will: tuple[str, bytes] | None = None,
    ) -> None:
        """`will`: (topic, payload) the broker publishes, retained, if the
        connection drops without a goodbye."""
        self.broker = broker
        self.client_id = client_id
        # What logs and errors call this connection: never the client id, which
        # would let whoever reads them take it over (issue 19).
        self.label = label
        self._on_message = on_message
        self._on_lost = on_lost
        self._mqtt5 = mqtt5
        self._client = _new_client(client_id, username, password, mqtt5, will)
        # paho annotates the delays as int, and sleeps them as seconds: a float works.
        self._client.reconnect_delay_set(min_delay=0.2, max_delay=5)  # type: ignore[arg-type]
        self._client.max_inflight_messages_set(100)
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_unsubscribe = self._handle_unsubscribe
        self._client.on_publish = self._handle_publish
        self._client.on_message = self._handle_message
        self._lock = threading.Lock()
        self._pending: dict[int, Future[ReasonCode | int]] = {}
        self._acks: dict[int, ReasonCode | int] = {}
        # Acknowledgements nobody waits for: re-subscriptions made on reconnect.
        self._unawaited: set[int] = set()
        self._subscriptions: list[tuple[str, int]] = []
        self._connack: Future[ReasonCode] = Future()
        self.connected = threading.Event()
        # Messages; an Event the dispatcher sets when it reaches it (drain); None: stop.
        self._inbox: queue.Queue[InboundMessage | threading.Event | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------
    def start(self, timeout_s: float = 10.0) -> None:
        self._dispatcher = threading.Thread(
            target=self._dispatch, name=f"mqtt-dispatch-{self.label}", daemon=True
        )
        self._dispatcher.start()
        _connect(self._client, self.broker)
        self._client.loop_start()
        try:
            reason = self._connack.result(timeout=timeout_s)
        except FutureTimeout:
            self.stop()
            raise BrokerUnavailable(
                f"the MQTT broker at {self.broker.host}:{self.broker.port} did not answer"
            ) from None
        if _failed(reason):
            self.stop()
            raise BrokerUnavailable(
                f"the MQTT broker at {self.broker.host}:{self.broker.port} refused {self.label}: {reason}"
            )

    def stop(self) -> None:
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self._inbox.put(None)
            if self._dispatcher is not None and self._dispatcher is not threading.current_thread():
                self._dispatcher.join(timeout=5)

    def drain(self, timeout_s: float = 10.0) -> None:
        """Before stop(): unsubscribe from everything, then wait until every message
        that had already arrived is handled, while the connection is still up so
        that the handlers' answers go out. The broker sends nothing new once it
        has acknowledged the UNSUBSCRIBE (MQTT 5 §3.10.4), so after the UNSUBACK
        the inbox holds all there will be."""
        if self._dispatcher is None or not self._dispatcher.is_alive():
            return  # never started, or stopped: nothing to drain
        with self._lock:
            filters = [topic_filter for topic_filter, _qos in self._subscriptions]
            self._subscriptions.clear()
        deadline = time.monotonic() + timeout_s
        if filters:
            rc, mid = self._client.unsubscribe(filters)
            if rc == paho.MQTT_ERR_SUCCESS and mid is not None:
                try:
                    self._wait(mid, timeout_s, "UNSUBACK")
                except BrokerTimeout:
                    log.warning("%s: no UNSUBACK; draining what has arrived", self.client_id)
        drained = threading.Event()
        self._inbox.put(drained)  # the dispatcher sets it when it gets there
        if not drained.wait(max(0.0, deadline - time.monotonic())):
            log.warning("%s: messages still being handled when the drain time ran out", self.client_id)

    # --- operations -------------------------------------------------------
    def subscribe(self, topic_filter: str, qos: int = 1, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._subscriptions.append((topic_filter, qos))
        rc, mid = self._client.subscribe(topic_filter, qos)
        if rc != paho.MQTT_ERR_SUCCESS or mid is None:
            raise BrokerUnavailable(f"not connected; {topic_filter!r} is subscribed on reconnect")
        reason = self._wait(mid, timeout_s, f"SUBACK for {topic_filter!r}")
        if _failed(reason):
            with self._lock:
                self._subscriptions.remove((topic_filter, qos))
            raise BrokerTimeout(f"the broker refused the subscription {topic_filter!r}: {reason}")

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        properties = _correlation_properties(self._mqtt5, correlation_data)
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        if qos == 0:
            with self._lock:
                self._acks.pop(info.mid, None)
            return
        if info.rc != paho.MQTT_ERR_SUCCESS:
            with self._lock:
                self._acks.pop(info.mid, None)
            raise BrokerUnavailable(f"not connected to the broker; {topic!r} not sent")
        reason = self._wait(info.mid, timeout_s, f"PUBACK for {topic!r}")
        if _failed(reason):
            raise BrokerRefused(f"the broker refused a publish to {topic!r}: {reason}")

    def publish_many(
        self,
        messages: Sequence[Outbound],
        *,
        timeout_s: float = 5.0,
        retain: bool = False,
    ) -> list[BrokerUnavailable | BrokerTimeout | float]:
        """Publish all, then wait for all the acknowledgements: one round trip for
        a fanout to a thousand devices instead of a thousand (docs/performance.md).

        QoS 1, retained only if asked (clearing); each message is (topic, payload, MQTT 5 correlation
        data or None). One result per message, in order: seconds from its send to
        its PUBACK, or the error that says it was not delivered.
        """
        sent: list[tuple[int, float] | BrokerUnavailable] = []
        for topic, payload, correlation in messages:
            properties = _correlation_properties(self._mqtt5, correlation)
            info = self._client.publish(topic, payload, qos=1, retain=retain, properties=properties)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                with self._lock:
                    self._acks.pop(info.mid, None)
                sent.append(BrokerUnavailable(f"not connected to the broker; {topic!r} not sent"))
            else:
                sent.append((info.mid, time.perf_counter()))
        deadline = time.monotonic() + timeout_s
        results: list[BrokerUnavailable | BrokerTimeout | float] = []
        for (topic, _payload, _correlation), item in zip(messages, sent, strict=True):
            if isinstance(item, BrokerUnavailable):
                results.append(item)
                continue
            mid, started = item
            try:
                reason = self._wait(mid, max(0.0, deadline - time.monotonic()), f"PUBACK for {topic!r}")
            except BrokerTimeout as exc:
                results.append(exc)
                continue
            if _failed(reason):
                results.append(BrokerTimeout(f"the broker refused a publish to {topic!r}: {reason}"))
            else:
                results.append(time.perf_counter() - started)
        return results

    # --- correlation table --------------------------------------------------
    # Never hold self._lock while calling into paho: paho calls on_publish with
    # its own mutex held, and the two locks taken in opposite orders deadlock.
    # So an acknowledgement may arrive before its waiter registers: it waits in
    # self._acks until then.
    def _wait(self, mid: int, timeout_s: float, what: str) -> ReasonCode | int:
        with self._lock:
            if mid in self._acks:
                return self._acks.pop(mid)
            future: Future[ReasonCode | int] = Future()
            self._pending[mid] = future
        try:
            return future.result(timeout=timeout_s)
        except FutureTimeout:
            raise BrokerTimeout(f"no {what} within {timeout_s} s") from None
        finally:
            with self._lock:
                self._pending.pop(mid, None)

    def _resolve(self, mid: int, reason: ReasonCode | int) -> None:
        with self._lock:
            if mid in self._unawaited:
                self._unawaited.discard(mid)
                return
            future = self._pending.pop(mid, None)
            if future is None:
                self._acks[mid] = reason
                return
        future.set_result(reason)

    # --- paho callbacks: convert and hand off only --------------------------
    def _handle_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        if not self._connack.done():
            self._connack.set_result(reason)
        if reason.is_failure:
            log.warning("broker refused %s: %s", self.label, reason)
            return
        with self._lock:
            subscriptions = list(self._subscriptions)
        for topic_filter, qos in subscriptions:
            _rc, mid = client.subscribe(topic_filter, qos)
            if mid is None:  # not sent (the connection went again): the next connect subscribes
                continue
            with self._lock:
                self._unawaited.add(mid)
        self.connected.set()
        log.info("%s connected to %s:%s", self.label, self.broker.host, self.broker.port)

    def _handle_disconnect(self, _c: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if reason.is_failure:
            log.warning("%s lost the broker (%s); reconnecting", self.label, reason)
        if was_connected and self._on_lost is not None:
            # Through the inbox, so it runs after every message that came before
            # the loss and before any that comes after the reconnect.
            self._inbox.put(_LOST)

    def _handle_subscribe(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        worst = max(reasons, key=lambda r: r.value) if reasons else 0
        self._resolve(mid, worst)

    def _handle_publish(self, _c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
        self._resolve(mid, reason)

    def _handle_unsubscribe(
        self, _c: paho.Client, _u: Any, mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        worst = max(reasons, key=lambda r: r.value) if reasons else 0
        self._resolve(mid, worst)

    def _handle_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._inbox.put(_inbound(msg))

    def _dispatch(self) -> None:
        while (message := self._inbox.get()) is not None:
            if isinstance(message, threading.Event):
                message.set()
                continue
            if message is _LOST:
                try:
                    if self._on_lost is not None:
                        self._on_lost()
                except Exception:
                    log.exception("the handler of a lost connection failed")
                continue
            if self._on_message is None:
                continue
            try:
                self._on_message(message)
            except Exception:
                # A handler bug must not take the hub down; name the topic, never the payload.
                log.exception("handler failed for a message on %s", message.topic)


class MqttResponder:
    """A connection of its own for requests answered at once (link requests): one
    thread reads whatever has arrived, hands it to `respond` in one call, writes
    the answers it returns, and reads again. The echo floor of bench/link.py has
    the same shape; handing each request to a second thread through a queue, and
    every answer back to paho's, cost the hub most of its distance to that floor
    (docs/performance.md).

    Nothing else publishes on this connection, so paho is driven from this one
    thread (its external-loop API) and never from two at once. Answers are QoS 0:
    a device that hears nothing asks again and gets the same answer, so a PUBACK
    would add nothing but state to hold (under a flood, 128 answers in flight
    whose PUBACKs queued behind the flood stopped every later answer).
    `respond` must not wait on the broker, since nothing reads from it
    meanwhile; it may take the database's time, during which requests queue up
    into the next batch.

    The requests come from a public login, so everything a flood can grow here
    is bounded (docs/security.md, "Floods on the bootstrap login"): answers
    waiting to be written, requests read and waiting, retained topics to clear.
    A request larger than `max_payload_bytes` is dropped before it is converted
    or parsed, and never answered: answering would let a flood of them cost the
    hub a reply each. What is dropped is counted in one log line a minute.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        *,
        client_id: str,
        username: str,
        password: str,
        topic_filter: str,
        respond: BatchResponder,
        max_payload_bytes: int,
        mqtt5: bool = True,
        clock: Callable[[], float] = time.monotonic,
        label: str = "the link-request connection",
    ) -> None:
        self.broker = broker
        self.client_id = client_id
        self.label = label  # for logs and errors, never the client id (as MqttConnection)
        self._topic_filter = topic_filter
        self._respond = respond
        self._max_payload_bytes = max_payload_bytes
        self._mqtt5 = mqtt5
        self._clock = clock
        self._client = _new_client(client_id, username, password, mqtt5)
        self._client.on_socket_open = _small_receive_buffer
        self._client.on_connect = self._handle_connect
        self._client.on_disconnect = self._handle_disconnect
        self._client.on_subscribe = self._handle_subscribe
        self._client.on_message = self._handle_message
        # Touched by the serving thread only.
        self._arrived: list[InboundMessage] = []
        self._to_clear: dict[str, None] = {}  # retained request topics, in arrival order
        self._stopping = threading.Event()
        self._connack: Future[ReasonCode] = Future()
        self.subscribed = threading.Event()
        self.connected = threading.Event()
        # Set when retained requests arrived: the hub then sweeps the request
        # topics (hub/broker/retained.py) and clears it.
        self.needs_retained_sweep = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = {
            "oversized": LogEvery(),
            "unanswered": LogEvery(),
            "unsent": LogEvery(),
            "retained": LogEvery(),
        }
        self.dropped_counts = dict.fromkeys(self._dropped, 0)

    def start(self, timeout_s: float = 10.0) -> None:
        """Connected and subscribed, or BrokerUnavailable."""
        _connect(self._client, self.broker)
        self._thread = threading.Thread(target=self._serve, name=f"mqtt-serve-{self.label}", daemon=True)
        self._thread.start()
        if not self.subscribed.wait(timeout_s):
            reason = self._connack.result() if self._connack.done() else "no answer"
            self.stop()
            raise BrokerUnavailable(
                f"the MQTT broker at {self.broker.host}:{self.broker.port} did not take "
                f"{self.label} and its subscription to {self._topic_filter!r}: {reason}"
            )

    def stop(self) -> None:
        """Returns once the serving thread has ended, at once: the DISCONNECT that
        disconnect() queues wakes paho's select() in loop() (paho writes a byte to
        its internal socket pair when a packet is queued), so the thread does not
        wait out the rest of loop()'s timeout. Before this, every hub stop took up
        to 0.5 s (about 2 minutes of the whole test run)."""
        self._stopping.set()
        with contextlib.suppress(Exception):  # not connected: nothing to send, nothing to wake
            self._client.disconnect()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    # --- the serving thread ---------------------------------------------------
    def _serve(self) -> None:
        delay_s = 0.2
        while not self._stopping.is_set():
            rc = self._client.loop(timeout=0.5)
            if rc == paho.MQTT_ERR_SUCCESS:
                delay_s = 0.2
                self._read_what_is_waiting()
                while self._arrived:
                    batch, self._arrived = self._arrived[:MAX_BATCH], self._arrived[MAX_BATCH:]
                    self._answer(batch)
                self._clear_retained()
                continue
            # Lost (or never had) the broker: try again, waiting longer each time.
            self._arrived.clear()  # unanswered requests: their devices ask again
            if self._stopping.wait(delay_s):
                break
            delay_s = min(delay_s * 2, 5.0)
            try:
                self._client.reconnect()
            except OSError as exc:
                log.debug("%s: reconnecting failed (%s)", self.label, exc)
        with contextlib.suppress(Exception):  # from this thread too: paho is never driven from two
            self._client.disconnect()

    def _read_what_is_waiting(self) -> None:
        """Read on while requests are already in the socket: one loop() reads as few
        as one packet, and a batch of one pays a whole transaction."""
        sock = self._client.socket()
        # Bounded in reads too, not only in requests kept: under a flood of what
        # is dropped unread, the answers and paho's keepalive must still get a turn.
        for _ in range(MAX_WAITING_REQUESTS):
            if sock is None or len(self._arrived) >= MAX_BATCH:
                return
            try:
                readable, _, _ = select.select([sock], [], [], 0)
            except (OSError, ValueError):  # closed by stop()'s disconnect: the thread is ending
                return
            if not readable or self._client.loop_read() != paho.MQTT_ERR_SUCCESS:
                return

    def _answer(self, batch: list[InboundMessage]) -> None:
        try:
            answers = self._respond(batch)
        except Exception:
            log.exception("could not answer %d request(s), the first on %s", len(batch), batch[0].topic)
            return
        for topic, payload, correlation in answers:
            if not self._room_to_write():
                self._drop("unsent", "answers were not sent (the broker reads no faster); devices ask again")
                continue
            properties = _correlation_properties(self._mqtt5, correlation)
            info = self._client.publish(topic, payload, qos=0, properties=properties)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                self._drop("unsent", f"answers were not sent (the latest: {info.rc}); devices ask again")

    def _room_to_write(self) -> bool:
        """Whether what paho has to write went out: if the socket takes no more,
        an answer would only wait in paho's memory, so it is dropped instead."""
        if self._client.want_write():
            self._client.loop_write()
        return not self._client.want_write()

    def _clear_retained(self) -> None:
        """Empty the retained link requests seen (MQTT-3.3.1-6): a request has no
        reason to be retained, and a retained one would sit in the broker's
        memory until it restarts. At most a batch a turn, so answers go out in
        between; the rest on the next turn."""
        for _ in range(min(MAX_BATCH, len(self._to_clear))):
            if not self._room_to_write():
                return
            topic = next(iter(self._to_clear))
            info = self._client.publish(topic, b"", qos=0, retain=True)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                return
            del self._to_clear[topic]

    def _drop(self, kind: str, what: str) -> None:
        """Count a dropped message; one line a minute at most for each kind."""
        self.dropped_counts[kind] += 1
        count = self._dropped[kind].due(self._clock())
        if count:
            log.warning("%s: %d %s (at most one such line a minute)", self.label, count, what)

    # --- paho callbacks (on the serving thread) ---------------------------------
    def _handle_connect(self, client: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        if not self._connack.done():
            self._connack.set_result(reason)
        if reason.is_failure:
            log.warning("broker refused %s: %s", self.label, reason)
            return
        self.connected.set()
        # QoS 0 from the broker to us: our session ends with the connection (no
        # Session Expiry Interval), so a request in flight when the connection
        # drops is gone whatever the QoS, and its device asks again. QoS 1 would
        # only add a PUBACK to write for every request. Retain As Published (MQTT 5
        # §3.8.3.1) keeps the RETAIN flag of a publish, so retained requests can be
        # told apart and cleared.
        if self._mqtt5:
            client.subscribe(self._topic_filter, options=SubscribeOptions(qos=0, retainAsPublished=True))
        else:
            client.subscribe(self._topic_filter, qos=0)

    def _handle_disconnect(self, _c: paho.Client, _u: Any, _flags: Any, reason: ReasonCode, _p: Any) -> None:
        self.connected.clear()
        if reason.is_failure and not self._stopping.is_set():
            log.warning("%s lost the broker (%s); reconnecting", self.label, reason)

    def _handle_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if reasons and not any(_failed(reason) for reason in reasons):
            self.subscribed.set()
        else:
            log.error("broker refused %s %r: %s", self.label, self._topic_filter, reasons)

    def _handle_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        """Sort before converting: what is dropped is never copied or parsed."""
        size = len(msg.payload)
        if size == 0:
            return  # a retained request being cleared (ours or a sweep's marker): nothing to answer
        if msg.retain:
            if len(self._to_clear) < MAX_RETAINED_TO_CLEAR:
                self._to_clear[msg.topic] = None
            # Some may never reach us (mosquitto drops QoS 0 past its queue): the
            # hub sweeps the request topics too while retained ones arrive.
            self.needs_retained_sweep.set()
            self._drop("retained", "retained link requests were dropped unanswered and cleared")
        elif size > self._max_payload_bytes:
            self._drop("oversized", f"link requests over {self._max_payload_bytes} bytes were dropped")
        elif len(self._arrived) >= MAX_WAITING_REQUESTS:
            self._drop("unanswered", "link requests were dropped unanswered: too many at once")
        else:
            self._arrived.append(_inbound(msg))
