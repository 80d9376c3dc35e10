"""One linked device sending `settings_set` in a loop at full speed (issue 18 §2).

    .venv/bin/python bench/device_flood.py [--seconds 60] [--quiet 20]

Setup: a hub (`linkhub run`, its own mosquitto, the default per-device limits),
one account, two devices linked through the real flow (firmware_sim.fleet) and
then disconnected; the bench connects as each with its saved credentials.

- Baseline, quiet: device B changes a setting (`settings_set`) every
  --probe-interval seconds for --quiet seconds and times each round trip
  (publish to its `reply`); nothing else runs.
- Flood: device A publishes `settings_set` with the current base_version as
  fast as the broker acknowledges (QoS 1, up to 200 unacknowledged) for
  --seconds, while B goes on as before.

Printed: what A sent and how fast, what the hub accepted and refused, the
database's size (file and WAL) and rows before and after, B's round trips
during the flood against the quiet ones, and the hub's resident memory. Before
the per-device limits, a loop like A's had 60 changes a second accepted and the
database grew by about 470 KB a second.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _common as common
import paho.mqtt.client as paho

import linkhub_protocol as protocol
from firmware_sim import state as state_file
from hub.core.rate_limits import LimitsPolicy, parse_rate
from linkhub_protocol import DeviceReply, SettingsSet

MAX_UNACKNOWLEDGED = 200


class Device:
    """One linked device's own connection: publishes settings_set, reads its replies."""

    def __init__(self, port: int, saved: Path) -> None:
        state = state_file.load(saved)
        assert state.device_id is not None and state.mqtt is not None
        self.device_id = state.device_id
        self.replies: dict[str, int] = {}  # "ok" or the error code: how many
        self.version = 0
        self._waiting: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._window = threading.BoundedSemaphore(MAX_UNACKNOWLEDGED)
        self.bare = common.BareClient(
            port,
            state.mqtt.username,
            state.mqtt.password,
            on_message=self._on_message,
            client_id=state.mqtt.client_id,
        )
        self.bare.client.on_publish = lambda *_a: self._window.release()
        self.bare.subscribe(protocol.device_topic(self.device_id, protocol.DEVICE_REPLY))

    def _on_message(self, message: paho.MQTTMessage) -> None:
        reply = protocol.parse_device_reply(message.payload)
        if not isinstance(reply, DeviceReply):
            return
        with self._lock:
            key = "ok" if reply.ok else str(reply.error)
            self.replies[key] = self.replies.get(key, 0) + 1
            if reply.ok and reply.version is not None:
                self.version = max(self.version, reply.version)
            waiter = self._waiting.pop(reply.request_id or "", None)
        if waiter is not None:
            waiter.set()

    def send_set(self, request_id: str, value: int) -> None:
        self._window.acquire()  # released by the PUBACK: at most MAX_UNACKNOWLEDGED in flight
        # A key of its own each time: no version_conflict, every change within the
        # limit is stored (the worst case for the database).
        message = SettingsSet(request_id, max(1, self.version), {f"k{value}": value})
        self.bare.publish(
            protocol.device_topic(self.device_id, protocol.SETTINGS_SET), protocol.encode(message)
        )

    def round_trip_s(self, request_id: str, value: int, timeout_s: float = 10.0) -> float:
        done = threading.Event()
        with self._lock:
            self._waiting[request_id] = done
        began = time.perf_counter()
        self.send_set(request_id, value)
        if not done.wait(timeout_s):
            raise RuntimeError(f"no reply to {request_id} within {timeout_s} s")
        return time.perf_counter() - began

    def close(self) -> None:
        self.bare.close()


def database(data_dir: Path) -> dict[str, Any]:
    """The SQLite files' size and the rows that grow with changes (read-only)."""
    files = [data_dir / name for name in ("linkhub.db", "linkhub.db-wal")]
    size, wal = (path.stat().st_size if path.exists() else 0 for path in files)
    connection = sqlite3.connect(f"file:{files[0]}?mode=ro", uri=True)
    try:
        rows = {
            table: connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # fixed names
            for table in ("settings_outbox", "activity", "account_change_log", "device_shadow")
        }
    finally:
        connection.close()
    return {"db_bytes": size, "wal_bytes": wal, **rows}


def rss_mb(pid: int) -> float:
    """Resident memory from /proc (psutil is an optional bench extra)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def probe(device: Device, stop: threading.Event, interval_s: float, tag: str, out: list[float]) -> None:
    """A change every `interval_s`, its round trip in `out` (inf: no answer in 10 s)."""
    n = 0
    while not stop.is_set():
        try:
            out.append(device.round_trip_s(f"probe-{tag}-{n:010d}", 1000 + n))
        except RuntimeError as exc:
            print(f"  {exc}", flush=True)
            out.append(float("inf"))
        n += 1
        stop.wait(interval_s)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="how long A floods (60)")
    parser.add_argument("--quiet", type=float, default=20.0, help="quiet baseline before the flood (20)")
    parser.add_argument("--probe-interval", type=float, default=3.0, help="seconds between B's changes (3)")
    args = parser.parse_args()
    common.print_machine()
    limit = parse_rate(LimitsPolicy().device_settings_sets)
    with common.running_hub() as hub, tempfile.TemporaryDirectory(prefix="fleet-") as states:
        hub.add_account("alice")
        fleet, _log = common.linked_fleet(hub, 2, "alice", Path(states))
        fleet.close()
        flooder, other = (Device(hub.mqtt_port, path) for path in sorted(Path(states).glob("*.json")))
        try:
            for device in (flooder, other):  # learn the current version
                device.round_trip_s(f"start-{device.device_id}", 0)
            before = database(hub.data_dir)
            quiet: list[float] = []
            stop = threading.Event()
            timer = threading.Timer(args.quiet, stop.set)
            timer.start()
            probe(other, stop, args.probe_interval, "quiet", quiet)

            during: list[float] = []
            stop = threading.Event()
            prober = threading.Thread(target=probe, args=(other, stop, args.probe_interval, "flood", during))
            prober.start()
            began = time.monotonic()
            sent = 0
            while time.monotonic() - began < args.seconds:
                flooder.send_set(f"flood-{sent:012d}", sent)
                sent += 1
            flood_s = time.monotonic() - began
            stop.set()
            prober.join(timeout=30)
            deadline = time.monotonic() + 30
            while sum(flooder.replies.values()) < sent + 1 and time.monotonic() < deadline:
                time.sleep(0.1)  # the last replies on their way; bounded
            after = database(hub.data_dir)
            rss = rss_mb(hub.process.pid)
        finally:
            flooder.close()
            other.close()
    accepted = flooder.replies.get("ok", 0) - 1  # minus the start-up change
    refused = {k: v for k, v in flooder.replies.items() if k != "ok"}
    windows = int(flood_s // limit.window_s) + 1
    bound = windows * limit.amount
    grown_kb = (after["db_bytes"] - before["db_bytes"]) / 1024
    wal_kb = (after["wal_bytes"] - before["wal_bytes"]) / 1024
    print(f"flood: A sent {sent} settings_set in {flood_s:.1f} s ({sent / flood_s:.0f}/s)")
    print(f"hub: accepted {accepted} (limit {limit}: at most {bound} in {flood_s:.0f} s), refused {refused}")
    print(f"database before: {json.dumps(before)}")
    print(f"database after:  {json.dumps(after)}")
    print(
        f"database file grew {grown_kb:.0f} KB, its WAL {wal_kb:.0f} KB (SQLite reuses the WAL "
        f"after each checkpoint, about 4 MB at most); hub RSS {rss:.0f} MB"
    )
    print(f"B's change round trip, quiet ({len(quiet)}): {common.describe_ms(quiet)}")
    print(f"B's change round trip, during the flood ({len(during)}): {common.describe_ms(during)}")
    p50_quiet, p50_flood = common.percentile(quiet, 50), common.percentile(during, 50)
    p99_flood = common.percentile(during, 99)
    print(
        f"RESULT device_flood: {sent} settings_set in {flood_s:.0f} s ({sent / flood_s:.0f}/s), "
        f"{accepted} accepted (bound {bound}), database +{grown_kb:.0f} KB (WAL +{wal_kb:.0f} KB); "
        f"another device's change p50 {p50_flood * 1000:.1f} ms "
        f"(p99 {p99_flood * 1000:.1f} ms) = {p50_flood / p50_quiet:.1f}x quiet p50 {p50_quiet * 1000:.1f} ms"
    )
    return 0 if accepted <= bound else 1


if __name__ == "__main__":
    raise SystemExit(main())
