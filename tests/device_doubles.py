"""Test-side devices: the simulated firmware running in a thread, and a raw MQTT
client for sending what no well-behaved firmware would."""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import linkhub_protocol as protocol
from firmware_sim import keys
from firmware_sim.link import link
from linkhub_protocol import DeviceInfo


class DeviceThread:
    """firmware_sim's link procedure in a thread, with its events in a queue."""

    def __init__(
        self,
        port: int,
        state_path: Path,
        *,
        name: str = "Kitchen Lamp",
        model: str = "LMP-1",
        mqtt5: bool = True,
        timeout_s: float = 60,
        profile: str | None = None,
    ) -> None:
        self.profile = profile
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.state_path = state_path
        self.exit_code: int | None = None
        self._thread = threading.Thread(
            target=self._run,
            args=(port, DeviceInfo(name, model, address="127.0.0.1"), mqtt5, timeout_s),
            daemon=True,
        )

    def _run(self, port: int, device: DeviceInfo, mqtt5: bool, timeout_s: float) -> None:
        self.exit_code = link(
            "127.0.0.1",
            port,
            device,
            self.state_path,
            mqtt5=mqtt5,
            timeout_s=timeout_s,
            retry_interval_s=0.5,
            on_event=self.events.put,
            profile=self.profile,
        )

    def start(self) -> DeviceThread:
        self._thread.start()
        return self

    def next_event(self, timeout_s: float = 15) -> dict[str, Any]:
        return self.events.get(timeout=timeout_s)

    def wait_code(self, timeout_s: float = 15) -> str:
        event = self.next_event(timeout_s)
        if event["event"] == "unlinked":
            # Its old identity refused by the broker: forgotten, and it links anew.
            event = self.next_event(timeout_s)
        assert event["event"] == "code", event
        return str(event["user_code"])

    def join(self, timeout_s: float = 30) -> int:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "the device did not finish"
        assert self.exit_code is not None
        return self.exit_code

    def saved_state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())


class RawClient:
    """A plain paho client that records acknowledgements and messages."""

    def __init__(
        self, port: int, username: str, password: str, *, client_id: str | None = None, mqtt5: bool = True
    ) -> None:
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._acks: dict[int, Any] = {}
        self._acked = threading.Condition()
        self.connack: queue.Queue[Any] = queue.Queue()
        self.client_id = client_id or f"raw-{secrets.token_hex(4)}"
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if mqtt5 else paho.MQTTv311,
        )
        self.client.username_pw_set(username, password)
        self.client.on_connect = lambda _c, _u, _f, rc, _p: self.connack.put(rc)
        self.client.on_subscribe = lambda _c, _u, mid, rcs, _p: self._ack(mid, rcs)
        self.client.on_publish = lambda _c, _u, mid, rc, _p: self._ack(mid, rc)
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.connack_reason = self.connack.get(timeout=5)

    def _ack(self, mid: int, result: Any) -> None:
        with self._acked:
            self._acks[mid] = result
            self._acked.notify_all()

    def _wait(self, mid: int, timeout_s: float = 5) -> Any:
        deadline = time.monotonic() + timeout_s
        with self._acked:
            while mid not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no acknowledgement for message {mid}")
                self._acked.wait(left)
            return self._acks.pop(mid)

    def subscribe(self, topic_filter: str) -> bool:
        """True if the broker granted the subscription."""
        _rc, mid = self.client.subscribe(topic_filter, 1)
        reasons = self._wait(mid)
        return not any(reason.is_failure for reason in reasons)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation: bytes | None = None,
        retain: bool = False,
    ) -> bool:
        """True if the broker accepted the publish (MQTT 5 PUBACK reason)."""
        properties = None
        if response_topic or correlation:
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic:
                properties.ResponseTopic = response_topic
            if correlation:
                properties.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=properties)
        reason = self._wait(info.mid)
        return not reason.is_failure

    def next_message(self, timeout_s: float = 5) -> paho.MQTTMessage:
        return self.messages.get(timeout=timeout_s)

    @property
    def request_topic(self) -> str:
        """Where this client may publish link requests: under its own client id."""
        return protocol.link_request_topic(self.client_id)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class BootstrapDevice:
    """An unlinked device making one link request by hand: the bootstrap identity,
    one secret reply topic, a key pair, and the same request sent again to poll."""

    def __init__(self, port: int, info: DeviceInfo) -> None:
        self.info = info
        self.reply_to = new_reply_topic()
        self.request_id = secrets.token_urlsafe(18)
        self.private_key = keys.new_private_key()
        self.client = bootstrap_client(port)
        assert self.client.subscribe(self.reply_to), "reply subscription refused"

    def send(self) -> None:
        """Publish the link request; sent again unchanged, it is a poll."""
        message = link_request(self.request_id, self.reply_to, self.info, self.private_key)
        assert self.client.publish(self.client.request_topic, protocol.encode(message))

    def credentials(self, reply: protocol.ApprovedReply) -> protocol.MqttCredentials:
        """The broker identity sealed in an approved reply, opened with this device's key."""
        return keys.open_credentials(self.private_key, reply)

    def request(self, timeout_s: float = 10.0) -> protocol.PendingReply:
        self.send()
        reply = self.wait_reply(timeout_s)
        assert isinstance(reply, protocol.PendingReply), reply
        return reply

    def wait_reply(self, timeout_s: float = 10.0) -> protocol.LinkReply:
        reply = protocol.parse_link_reply(self.client.next_message(timeout_s).payload)
        assert not isinstance(reply, protocol.Rejection), reply
        assert reply.request_id == self.request_id
        return reply

    def close(self) -> None:
        self.client.close()


def bootstrap_client(port: int, *, mqtt5: bool = True, client_id: str | None = None) -> RawClient:
    return RawClient(
        port, protocol.BOOTSTRAP_USERNAME, protocol.BOOTSTRAP_PASSWORD, mqtt5=mqtt5, client_id=client_id
    )


def new_reply_topic() -> str:
    return protocol.reply_topic(secrets.token_urlsafe(24))


def link_request(
    request_id: str, reply_to: str, info: DeviceInfo, private_key: str | None = None
) -> protocol.LinkRequest:
    """A link request carrying the public half of `private_key` (a new one if None)."""
    return protocol.LinkRequest(
        request_id, reply_to, info, keys.public_key(private_key or keys.new_private_key())
    )
