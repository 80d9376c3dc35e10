"""The floor for bench/link.py: a process that answers every message on TOPIC
with the message itself, sent to its Response Topic, QoS 1.

    BENCH_MQTT_PASSWORD=... python bench/echo_responder.py PORT USERNAME TOPIC

Its own process, like the hub, so that it gets a core of its own as the hub
does; one paho loop in the main thread, nothing else. It prints "ready" once
subscribed, and stops on SIGTERM, or on its own after --limit seconds.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

import paho.mqtt.client as paho
from _common import HOST, set_nodelay
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("username")
    parser.add_argument("topic")
    parser.add_argument("--limit", type=float, default=600.0, help="stop after this many seconds")
    args = parser.parse_args()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(args.username, os.environ["BENCH_MQTT_PASSWORD"])
    client.on_socket_open = set_nodelay
    client.max_inflight_messages_set(0)

    def on_message(c: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        response = getattr(msg.properties, "ResponseTopic", None)
        if not response:
            return
        props = Properties(PacketTypes.PUBLISH)
        correlation = getattr(msg.properties, "CorrelationData", None)
        if correlation is not None:
            props.CorrelationData = correlation
        c.publish(response, msg.payload, qos=0, properties=props)  # QoS 0, as the hub answers

    def on_subscribe(*_args: Any) -> None:
        print("ready", flush=True)

    client.on_message = on_message
    client.on_subscribe = on_subscribe
    # QoS 0, as the hub subscribes to link requests (hub/broker/connection.py, MqttResponder).
    client.on_connect = lambda c, *_a: c.subscribe(args.topic, qos=0)
    stop = [False]

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    client.connect(HOST, args.port, keepalive=60)
    deadline = time.monotonic() + args.limit
    while not stop[0] and time.monotonic() < deadline:
        client.loop(timeout=0.5)
    client.disconnect()
    return 0


if __name__ == "__main__":
    sys.exit(main())
