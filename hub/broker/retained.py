"""Clearing what the broker retains under one device's topics, when it is unlinked.

An unlinked device must not come back as a ghost (users' reports of it:
Zigbee2MQTT issue 2678, Home Assistant issue 77728): its retained `online`
status, and anything else it left retained in its subtree, would be handed to
every later subscriber. MQTT has no "delete retained" command; a retained
message is removed by publishing an empty retained payload on its topic (MQTT 5 §3.3.1.3, MQTT-3.3.1-6).

The broker does not list retained topics either, so a short-lived connection
subscribes to the device's subtree and collects what arrives with the retain
flag. To know when it has all of them without waiting an arbitrary time, it
then publishes one marker message under the same subtree: messages to one
subscriber arrive in order, so everything retained came before the marker
(mosquitto queues retained messages when it handles the SUBSCRIBE).
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable

import linkhub_protocol as protocol
from hub.broker.connection import BrokerAddress, InboundMessage, MqttConnection
from hub.broker.dynsec import service_client_id
from hub.errors import BrokerTimeout

# Under the device's own subtree, so the hub's identity may publish it and no
# other device can see it; the hub's long-lived subscriptions do not match it.
MARKER_LEAF = "hub/unlink-sweep"

# A listing that saw retained messages and then nothing for this long is over,
# marker or not (see _sweep).
QUIET_S = 1.0
# Sweeps of the link-request topics in one go (each clears up to ~1,000 topics).
MAX_SWEEP_ROUNDS = 100
# Retained topics emptied per round trip (within the connection's in-flight window).
CLEAR_BATCH = 100

ConnectionFactory = Callable[[Callable[[InboundMessage], None]], MqttConnection]


def topics_to_clear(device_id: str, retained_topics: set[str]) -> list[str]:
    """Every retained topic found under the device's root, and its status topic
    always (a status retained while the sweep ran must not survive it)."""
    root = protocol.device_root(device_id) + "/"
    found = {topic for topic in retained_topics if topic.startswith(root)}
    found.add(protocol.device_status_topic(device_id))
    return sorted(found)


def _sweep(
    connect: ConnectionFactory,
    topic_filter: str,
    marker: str,
    to_clear: Callable[[set[str]], list[str]],
    timeout_s: float,
    marker_filter: str | None = None,
) -> tuple[set[str], list[str]]:
    """Subscribe to `topic_filter`, collect what it retains, and empty `to_clear` of
    it; what was found retained, and what was emptied. The marker, published
    after the SUBSCRIBE was handled, arrives after every retained message
    (messages to one subscriber arrive in order). But mosquitto hands a new
    subscriber at most max_queued_messages of them and drops the rest for it,
    the marker too if it comes while the queue is full: so once retained
    messages stop coming for QUIET_S, the round ends with what it found, and
    the caller sweeps again."""
    retained: set[str] = set()
    marker_seen = threading.Event()
    last_arrival = [time.monotonic()]

    def collect(message: InboundMessage) -> None:
        if message.topic == marker:
            marker_seen.set()
        elif message.retain and message.payload:
            retained.add(message.topic)
            last_arrival[0] = time.monotonic()

    connection = connect(collect)
    connection.start(timeout_s=timeout_s)
    try:
        if marker_filter is not None:
            # Subscribed first: the marker, published after the second SUBACK,
            # still comes after what the second subscription retains.
            connection.subscribe(marker_filter, timeout_s=timeout_s)
        connection.subscribe(topic_filter, timeout_s=timeout_s)
        connection.publish(marker, b"", qos=1, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while not marker_seen.wait(0.1):
            now = time.monotonic()
            if retained and now - last_arrival[0] > QUIET_S:
                break  # the marker was dropped with the rest: clear these, then again
            if now > deadline:
                raise BrokerTimeout(f"the broker did not list what {topic_filter} retains in {timeout_s} s")
        cleared = to_clear(set(retained))
        # In batches, each waited for as a whole: thousands of topics take
        # seconds, not one round trip each (MqttConnection.publish_many).
        for start in range(0, len(cleared), CLEAR_BATCH):
            batch = [(topic, b"", None) for topic in cleared[start : start + CLEAR_BATCH]]
            for result in connection.publish_many(batch, timeout_s=timeout_s, retain=True):
                if isinstance(result, Exception):
                    raise result
        return retained, cleared
    finally:
        connection.stop()


def clear_device_retained(
    connect: ConnectionFactory, device_id: str, *, timeout_s: float = 5.0, budget_s: float = 30.0
) -> tuple[list[str], bool]:
    """Empty every retained message under the device's topics, in rounds until a
    round finds none or `budget_s` is spent; the topics cleared, and whether it
    finished (if not, the caller tries again later: hub/daemon.py keeps it as a
    job).

    Raises BrokerTimeout or BrokerUnavailable if the broker does not answer: a
    clearing nobody acknowledged did not happen.
    """
    root = protocol.device_root(device_id)
    deadline = time.monotonic() + budget_s
    # The first round clears the status topic whatever it finds (topics_to_clear);
    # later ones only what they find, until one finds nothing.
    found, cleared = _sweep(
        connect, f"{root}/#", _marker(root), lambda retained: topics_to_clear(device_id, retained), timeout_s
    )
    while found and time.monotonic() < deadline:
        found, more = _sweep(connect, f"{root}/#", _marker(root), sorted, timeout_s)
        cleared += more
    return cleared, not found


def _marker(root: str) -> str:
    return f"{root}/{MARKER_LEAF}/{secrets.token_hex(8)}"


def clear_retained_link_requests(connect: ConnectionFactory, *, timeout_s: float = 5.0) -> list[str]:
    """Empty every retained link request; the topics cleared.

    The public bootstrap login may publish to any LINK_REQUEST_ROOT/<id>, with
    the RETAIN flag too: mosquitto 2.0's dynamic security has no ACL for
    retaining (mosquitto.conf(5) has only the global `retain_available`, and
    devices need their retained status), so a flood of retained requests would
    stay in the broker's memory. A link request has no reason to be retained;
    the hub's responder clears those it sees arrive, and this clears those
    retained while no hub was listening. The marker is one more request level,
    empty, which the responder ignores.
    """
    cleared: list[str] = []
    # mosquitto hands a new subscriber at most max_queued_messages (1,000 by
    # default) of what it retains and drops the rest for it (mosquitto.conf(5)):
    # so sweep again until a round finds nothing, at most MAX_SWEEP_ROUNDS times.
    for _ in range(MAX_SWEEP_ROUNDS):
        marker = f"{protocol.LINK_REQUEST_ROOT}/{MARKER_LEAF.replace('/', '-')}-{secrets.token_hex(8)}"
        found, _ = _sweep(connect, f"{protocol.LINK_REQUEST_ROOT}/+", marker, sorted, timeout_s)
        if not found:
            break
        cleared += sorted(found)
    return cleared


def retained_under(
    connect: ConnectionFactory, topic_filter: str, marker_root: str, *, timeout_s: float = 5.0
) -> set[str]:
    """The topics under `topic_filter` that the broker retains now (one listing,
    up to mosquitto's max_queued_messages). The marker goes to a topic under
    `marker_root` (the hub's own), outside the filter, so that whoever reads
    the filter's topics (Home Assistant, for the discovery prefix) never sees it."""
    marker = f"{marker_root}/{MARKER_LEAF}/{secrets.token_hex(8)}"
    found, _ = _sweep(connect, topic_filter, marker, lambda _found: [], timeout_s, marker_filter=marker)
    return found


def sweep_connection_factory(broker: BrokerAddress, username: str, password: str) -> ConnectionFactory:
    """Connections for `clear_device_retained` on the hub's own identity (which
    may read and write the whole LinkHub tree), each with a fresh client id."""

    def connect(on_message: Callable[[InboundMessage], None]) -> MqttConnection:
        return MqttConnection(
            broker,
            client_id=service_client_id("sweep"),
            username=username,
            password=password,
            on_message=on_message,
            label="the hub's retained-message sweep",
        )

    return connect
