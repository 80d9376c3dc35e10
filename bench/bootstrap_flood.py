"""A guest on the Wi-Fi flooding the public bootstrap login for 30 s (issue 19):
the hub's and its mosquitto's resident memory, and whether an honest device gets
its code during and after.

    .venv/bin/python bench/bootstrap_flood.py [--seconds 30] [--retained-topics 20000]

The flood, each kind on connections of its own (tests/flooder.py, bare MQTT 5
packets written as fast as one thread can): link requests of 250 KB naming a
reply topic; the same retained; requests just under the broker's packet limit
(over a link request's 2,048 bytes); 1 KB retained requests each under an id of
its own (up to --retained-topics); tiny non-JSON requests naming a reply topic.

Baseline: the same hub and mosquitto idle just before the flood (RSS from
/proc/PID/status). The last line gives the peaks and their ratio to it.
"""

from __future__ import annotations

import argparse
import queue
import sys
import threading
import time
from pathlib import Path

import _common as common

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from device_doubles import BootstrapDevice, new_reply_topic
from flooder import Flooder, rss_kb

from hub.broker.managed import MAX_PACKET_BYTES
from linkhub_protocol import DeviceInfo, PendingReply


def time_to_code(port: int, name: str, deadline_s: float) -> float | None:
    """Seconds until an honest device (resending every second, as firmware does)
    gets its code; None if it did not within `deadline_s`."""
    device = BootstrapDevice(port, DeviceInfo(name, "LMP-1"))
    started = time.monotonic()
    try:
        while time.monotonic() - started < deadline_s:
            device.send()
            try:
                reply = device.wait_reply(timeout_s=1.0)
            except queue.Empty:
                continue
            if isinstance(reply, PendingReply):
                return time.monotonic() - started
        return None
    finally:
        device.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--retained-topics", type=int, default=20_000)
    args = parser.parse_args()
    common.print_machine()
    with common.running_hub() as hub:
        hub_pid, broker_pid = hub.process.pid, hub.mosquitto_pid
        assert broker_pid is not None
        time.sleep(2)  # let the hub settle after start
        hub_idle, broker_idle = rss_kb(hub_pid) / 1024, rss_kb(broker_pid) / 1024
        print(f"baseline: idle hub {hub_idle:.1f} MB, idle mosquitto {broker_idle:.1f} MB")
        port, reply_to, seconds = hub.mqtt_port, new_reply_topic(), args.seconds
        flooders = {
            "250 KB requests": Flooder(port, payload_bytes=250_000, reply_to=reply_to, duration_s=seconds),
            "250 KB retained": Flooder(port, payload_bytes=250_000, retain=True, duration_s=seconds),
            "~36 KB requests": Flooder(
                port, payload_bytes=MAX_PACKET_BYTES - 512, reply_to=reply_to, duration_s=args.seconds
            ),
            "1 KB retained, new id each": Flooder(
                port,
                payload_bytes=1000,
                retain=True,
                duration_s=args.seconds,
                new_topic_each=True,
                max_messages=args.retained_topics,
            ),
            "40 B garbage": Flooder(port, payload_bytes=40, reply_to=reply_to, duration_s=args.seconds),
        }
        peaks = {"hub": 0.0, "broker": 0.0}
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.1):
                peaks["hub"] = max(peaks["hub"], rss_kb(hub_pid) / 1024)
                peaks["broker"] = max(peaks["broker"], rss_kb(broker_pid) / 1024)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        for flooder in flooders.values():
            flooder.start()
        time.sleep(min(5.0, args.seconds / 3))
        during = time_to_code(port, "Lamp during", deadline_s=args.seconds)
        for flooder in flooders.values():
            flooder.join(args.seconds + 30)
        after = time_to_code(port, "Lamp after", deadline_s=60)
        time.sleep(2)
        done.set()
        sampler.join()
        hub_after, broker_after = rss_kb(hub_pid) / 1024, rss_kb(broker_pid) / 1024
        for name, flooder in flooders.items():
            counts = flooder.counts
            print(
                f"{name:28} sent {counts.sent:>9,} ({counts.bytes_sent / 1e6:,.0f} MB), "
                f"connections {counts.connections:,}, dropped by the broker {counts.disconnects:,}"
            )
        print(f"hub:       idle {hub_idle:.1f} MB, peak {peaks['hub']:.1f} MB, then {hub_after:.1f} MB")
        broker_peak = peaks["broker"]
        print(f"mosquitto: idle {broker_idle:.1f} MB, peak {broker_peak:.1f} MB, then {broker_after:.1f} MB")
        print(f"honest device: code during the flood in {during}, after it in {after} s (None: none)")
        print(
            f"RESULT bootstrap flood {args.seconds:.0f} s: hub peak {peaks['hub']:.1f} MB = "
            f"{peaks['hub'] / hub_idle:.2f}x idle; mosquitto peak {peaks['broker']:.1f} MB = "
            f"{peaks['broker'] / broker_idle:.2f}x idle; honest device "
            f"{'linked' if during is not None and after is not None else 'NOT answered'} during and after"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
