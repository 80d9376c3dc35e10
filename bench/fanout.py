"""One preference change reaching 1,000 linked devices of one account.

    .venv/bin/python bench/fanout.py [--devices 1000] [--changes 5] [--plot fanout.png]

Setup: a hub, an account, a fleet of N devices (firmware_sim.fleet, one process)
linked to it and online, each with its full desired document applied.

- Hub, one change: `linkhub settings set --account` through the control socket
  (theme=...), timed from the call to the moment each device received its
  `desired` change; the figure is the time until the last device had it.
- Hub, sustained: --changes changes back to back; deliveries per second from
  the first call until the last device received the last change.
- Floor: the same payload (a `desired` message, which the devices drop as
  already applied) published by a bare client (bench/floor_publisher.py, its
  own process like the hub) straight to the same N devices' settings/desired
  topics through the same broker, pipelined: the time until the last device has
  it, and the deliveries per second for --changes rounds.

Arrival times are taken on the fleet's network thread as each message comes
off the socket (firmware_sim.fleet's incoming hook), for hub and floor alike.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import _common as common

from firmware_sim.fleet import FleetDevice
from firmware_sim.mqtt_client import Incoming, Message
from linkhub_protocol import SETTINGS_DESIRED, SettingsDesired, device_topic, encode

LIMIT_S = 120.0  # each round must be complete within this


class Arrivals:
    """Which device received which change, and when (monotonic seconds). A change
    is named by the theme it sets: dark-N from the hub, floor-N from the floor."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.times: dict[tuple[str, str], float] = {}
        self.counts: dict[str, int] = {}
        self.changed = threading.Condition(self.lock)

    def hook(self, device: FleetDevice, item: Incoming, at: float) -> None:
        if not isinstance(item, Message) or not item.topic.endswith("/settings/desired"):
            return
        theme = json.loads(item.payload).get("desired", {}).get("theme")
        if not isinstance(theme, str):
            return
        with self.lock:
            key = (theme, device.key)
            if key not in self.times:
                self.times[key] = at
                self.counts[theme] = self.counts.get(theme, 0) + 1
                self.changed.notify_all()

    def wait_for(self, theme: str, count: int, timeout_s: float) -> bool:
        with self.lock:
            return self.changed.wait_for(lambda: self.counts.get(theme, 0) >= count, timeout_s)

    def of(self, theme: str) -> list[float]:
        with self.lock:
            return [at for (t, _), at in self.times.items() if t == theme]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--changes", type=int, default=5, help="changes in the sustained run (5)")
    parser.add_argument("--plot", metavar="FILE", help="write a PNG of both delivery-time distributions")
    args = parser.parse_args()
    n = args.devices
    common.print_machine()
    arrivals = Arrivals()
    with common.running_hub() as hub, tempfile.TemporaryDirectory(prefix="fleet-") as states:
        hub.add_account("alice")
        # Before the fleet: paho's own loop (select) fails once this process holds
        # more than 1,023 descriptors, as it will with the fleet connected.
        dynsec = common.DynSec(hub)
        username, password = dynsec.bench_identity()
        dynsec.close()
        fleet, log = common.linked_fleet(hub, n, "alice", Path(states), on_incoming=arrivals.hook)
        try:
            device_ids = [d.device_id for d in fleet.devices if d.device_id is not None]
            with floor_publisher(hub.mqtt_port, username, password) as publish:
                floor_one, floor_rate = floor_rounds(publish, arrivals, device_ids, args.changes)
            last_floor = max(floor_one)
            print(
                f"floor, one publish round to {n}: last device after {last_floor * 1000:.1f} ms; "
                f"{common.describe_ms(floor_one)}"
            )
            print(f"floor, {args.changes} rounds: {floor_rate:.0f} deliveries/s", flush=True)
            hub_one, hub_rate = hub_rounds(hub, arrivals, n, args.changes)
            last_hub = max(hub_one)
            print(
                f"hub, one preference change to {n}: last device after {last_hub * 1000:.1f} ms; "
                f"{common.describe_ms(hub_one)}"
            )
            print(f"hub, {args.changes} changes back to back: {hub_rate:.0f} deliveries/s")
            print(f"(device errors during the run: {len(log.errors)})")
        finally:
            fleet.close()
    if args.plot:
        common.plot(
            args.plot,
            f"time from the change to each of {n} devices",
            {"floor (bare publish to each device)": floor_one, "hub (preference change)": hub_one},
        )
    print(
        f"RESULT fanout: last of {n} devices after {last_hub * 1000:.0f} ms = {last_hub / last_floor:.1f}x "
        f"floor {last_floor * 1000:.0f} ms; sustained {hub_rate:.0f} deliveries/s = "
        f"{hub_rate / floor_rate:.0%} of floor {floor_rate:.0f}/s"
    )
    return 0


Publish = Callable[[list[str], list[bytes]], None]


@contextlib.contextmanager
def floor_publisher(port: int, username: str, password: str) -> Iterator[Publish]:
    """bench/floor_publisher.py in its own process; yields a function that has it
    publish each payload to each topic (returning at once)."""
    script = Path(__file__).with_name("floor_publisher.py")
    process = subprocess.Popen(
        [sys.executable, str(script), str(port), username],
        env={**os.environ, "BENCH_MQTT_PASSWORD": password},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdin is not None and process.stdout is not None
    stdin, stdout = process.stdin, process.stdout
    try:
        if stdout.readline().strip() != "ready":
            raise RuntimeError("the floor publisher did not start")

        def publish(topics: list[str], payloads: list[bytes]) -> None:
            order = {"topics": topics, "payloads": [p.decode() for p in payloads]}
            stdin.write(json.dumps(order) + "\n")
            stdin.flush()

        yield publish
        stdin.close()
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def floor_rounds(
    publish: Publish, arrivals: Arrivals, device_ids: list[str], rounds: int
) -> tuple[list[float], float]:
    """A plain publish to each device's desired topic: one round timed alone, then
    `rounds` back to back.

    Version 1, full=false: the shape and size of the hub's change, and every
    device has applied version 1 already, so it drops the message unseen.
    """
    topics = [device_topic(device_id, SETTINGS_DESIRED) for device_id in device_ids]
    n = len(topics)

    def payload(theme: str) -> bytes:
        return encode(SettingsDesired(1, {"theme": theme}, full=False))

    began = time.monotonic()
    publish(topics, [payload("floor-0")])
    if not arrivals.wait_for("floor-0", n, LIMIT_S):
        raise RuntimeError(f"the floor round reached only {arrivals.counts.get('floor-0', 0)} of {n}")
    one = [at - began for at in arrivals.of("floor-0")]
    themes = [f"floor-{r + 1}" for r in range(rounds)]
    began = time.monotonic()
    publish(topics, [payload(theme) for theme in themes])
    for theme in themes:
        if not arrivals.wait_for(theme, n, LIMIT_S):
            raise RuntimeError(f"floor round {theme} reached only {arrivals.counts.get(theme, 0)} of {n}")
    last = max(max(arrivals.of(theme)) for theme in themes)
    return one, rounds * n / (last - began)


def hub_rounds(hub: common.Hub, arrivals: Arrivals, n: int, changes: int) -> tuple[list[float], float]:
    """One preference change timed alone, then `changes` back to back."""

    def change(theme: str) -> None:
        hub.control("POST", "/v1/settings/account", {"account": "alice", "changes": {"theme": theme}})

    began = time.monotonic()
    change("dark-0")
    if not arrivals.wait_for("dark-0", n, LIMIT_S):
        raise RuntimeError(f"the change reached only {arrivals.counts.get('dark-0', 0)} of {n}")
    one = [at - began for at in arrivals.of("dark-0")]
    time.sleep(2)  # let the devices' reports of the first change drain
    themes = [f"dark-{i + 1}" for i in range(changes)]
    began = time.monotonic()
    for theme in themes:
        change(theme)
    for theme in themes:
        if not arrivals.wait_for(theme, n, LIMIT_S):
            raise RuntimeError(f"change {theme} reached only {arrivals.counts.get(theme, 0)} of {n}")
    last = max(max(arrivals.of(theme)) for theme in themes)
    return one, changes * n / (last - began)


if __name__ == "__main__":
    raise SystemExit(main())
