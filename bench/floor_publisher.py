"""The floor for bench/fanout.py: a process that publishes what it is told,
QoS 1, pipelined (no waiting for each PUBACK).

    BENCH_MQTT_PASSWORD=... python bench/floor_publisher.py PORT USERNAME

Its own process, like the hub, so that publishing does not share a core and a
GIL with the 1,000 devices that receive. Reads one JSON object per line on
stdin, {"topics": [...], "payloads": ["...", ...]}: every payload to every
topic, payload by payload; answers "done" once paho has written them all.
Stops at the end of stdin, on SIGTERM, or on its own after --limit seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

import paho.mqtt.client as paho
from _common import HOST, set_nodelay
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int)
    parser.add_argument("username")
    parser.add_argument("--limit", type=float, default=900.0, help="stop after this many seconds")
    args = parser.parse_args()
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(args.username, os.environ["BENCH_MQTT_PASSWORD"])
    client.on_socket_open = set_nodelay
    client.max_inflight_messages_set(0)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *_a: connected.set()
    client.connect(HOST, args.port, keepalive=60)
    client.loop_start()
    if not connected.wait(10):
        return 1
    threading.Timer(args.limit, lambda: os._exit(2)).start()  # bounded, whatever happens
    print("ready", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        infos = [
            client.publish(topic, payload.encode(), qos=1)
            for payload in order["payloads"]
            for topic in order["topics"]
        ]
        deadline = time.monotonic() + 60
        for info in infos:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        print("done", flush=True)
    client.disconnect()
    client.loop_stop()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
