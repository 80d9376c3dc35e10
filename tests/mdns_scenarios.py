"""mDNS scenarios for tests/test_mdns.py, run INSIDE a fresh network namespace.

    unshare --net -- sh -c 'ip link set lo up && exec PYTHON tests/mdns_scenarios.py SCENARIO'

SCENARIO is one of: one, two, none, stop, follow, end_to_end. Each prints what it
observed as JSON objects, one per line, and finally {"done": true}; the test
makes the assertions. Internal helpers, run as separate processes (a device
is never in the hub's process): `_discover TIMEOUT` and `_watch SECONDS`.

Zeroconf is bound to 127.0.0.1 here, except in `follow`, which adds
addresses to this namespace's own loopback and lets the hub's default rule
pick them. The script refuses to run at all when it sees any interface but
loopback: it must never multicast on a real network. Every wait has a bound.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ifaddr
from hub_process import LineReader

LOOPBACK = "127.0.0.1"
BIN = Path(sys.executable).parent
LINKHUB = str(BIN / "linkhub")
DEVICE = str(BIN / "linkhub-device")


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def inside_fresh_namespace() -> bool:
    """No interface but loopback: what `unshare --net` gives (a real machine
    has at least one more). Addresses `follow` adds to lo stay in here."""
    return all(adapter.nice_name == "lo" for adapter in ifaddr.get_adapters())


def json_events(lines: list[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


# --- the hub side -------------------------------------------------------------------------
def start_advertisers(*hubs: tuple[str, int]) -> list[Any]:
    """HubAdvertisers on 127.0.0.1 only (no interface polling), registered in parallel."""
    from hub.net.mdns import HubAdvertiser, HubAnnouncement

    advertisers = [
        HubAdvertiser(
            HubAnnouncement(
                label=label, hub_id=f"id-{label}", mqtt_port=port, http_port=8080, http_host=LOOPBACK
            ),
            [LOOPBACK],
        )
        for label, port in hubs
    ]
    started = time.monotonic()
    for advertiser in advertisers:
        advertiser.start()
    registered = all(advertiser.wait_advertised(10) for advertiser in advertisers)
    emit(advertised=registered, seconds=round(time.monotonic() - started, 2))
    return advertisers


# --- separate processes: the device side ----------------------------------------------------
def run_helper(*args: str, timeout_s: float) -> list[dict[str, Any]]:
    done = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout_s
    )
    return json_events(done.stdout.splitlines())


def discover_elsewhere(timeout_s: float, *interfaces: str) -> dict[str, Any]:
    """Browse from another process, as a device would; from 127.0.0.1 unless
    told otherwise, from the home-network addresses when told "default"."""
    started = time.monotonic()
    (result,) = run_helper("_discover", str(timeout_s), *(interfaces or [LOOPBACK]), timeout_s=timeout_s + 15)
    result["discover_seconds"] = round(time.monotonic() - started, 2)
    return result


def run_device(state: Path, *extra: str, timeout_s: float) -> dict[str, Any]:
    """`linkhub-device link --json` without --hub; its events and exit status."""
    started = time.monotonic()
    done = subprocess.run(
        [DEVICE, "link", "--name", "Lamp", "--model", "L1", "--state", str(state), "--json",
         "--mdns-interface", LOOPBACK, *extra],
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip
    return {
        "device_events": json_events(done.stdout.splitlines()),
        "device_exit": done.returncode,
        "device_seconds": round(time.monotonic() - started, 2),
        "device_stderr": done.stderr[-2000:],
    }


def helper_discover(timeout_s: float, interfaces: list[str]) -> None:
    from firmware_sim.discovery import discover

    hubs = discover(timeout_s, None if interfaces == ["default"] else interfaces)
    emit(
        found=[
            {"name": hub.name, "host": hub.host, "port": hub.port, "hub_id": hub.hub_id,
             "server": hub.server, "addresses": list(hub.addresses), "txt": dict(hub.txt)}
            for hub in hubs
        ]
    )  # fmt: skip


def helper_watch(seconds: float) -> None:
    """Keep browsing and say when a hub appears and when it says goodbye."""
    from zeroconf import DNSQuestionType, IPVersion, ServiceBrowser, ServiceStateChange, Zeroconf

    from linkhub_protocol import MDNS_SERVICE_TYPE

    removed = threading.Event()

    def on_change(zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Added:
            emit(watch="added", name=name)
        elif state_change is ServiceStateChange.Removed:
            emit(watch="removed", name=name)
            removed.set()

    zeroconf = Zeroconf(interfaces=[LOOPBACK], ip_version=IPVersion.V4Only)
    browser = ServiceBrowser(
        zeroconf, MDNS_SERVICE_TYPE, handlers=[on_change], question_type=DNSQuestionType.QM
    )
    removed.wait(seconds)
    browser.cancel()
    zeroconf.close()


# --- scenarios ------------------------------------------------------------------------------
def scenario_one() -> None:
    (advertiser,) = start_advertisers(("alpha", 18831))
    try:
        emit(**discover_elsewhere(5))
    finally:
        advertiser.stop()


def scenario_two(tmp: Path) -> None:
    advertisers = start_advertisers(("zulu", 18832), ("alpha", 18831))
    try:
        # Nothing listens on those ports: the device reports the hub it chose,
        # then fails to connect, which is all this scenario needs.
        emit(**run_device(tmp / "lamp.json", "--discover-timeout", "5", "--timeout", "2", timeout_s=30))
    finally:
        for advertiser in advertisers:
            advertiser.stop()


def scenario_none(tmp: Path) -> None:
    emit(**run_device(tmp / "lamp.json", "--discover-timeout", "1", "--timeout", "2", timeout_s=20))


def scenario_stop() -> None:
    (advertiser,) = start_advertisers(("alpha", 18831))
    watcher = subprocess.Popen([sys.executable, __file__, "_watch", "15"], stdout=subprocess.PIPE, text=True)
    assert watcher.stdout is not None
    lines = LineReader(watcher.stdout)
    try:
        emit(watch_saw_added=lines.next_matching(lambda line: '"added"' in line, 5) is not None)
        started = time.monotonic()
        advertiser.stop()
        emit(stop_seconds=round(time.monotonic() - started, 2))
        emit(watch_saw_removed=lines.next_matching(lambda line: '"removed"' in line, 5) is not None,
             removed_after_s=round(time.monotonic() - started, 2))  # fmt: skip
        emit(after_stop=discover_elsewhere(1))
    finally:
        watcher.kill()
        watcher.wait(timeout=5)


def ip(*args: str) -> None:
    """Change this namespace's own loopback (never anything outside it)."""
    subprocess.run(["ip", *args], check=True, timeout=10)


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def scenario_follow() -> None:
    """The hub's default rule and address changes, for real: no RFC 1918
    address at first, then 10.9.0.1 appears (with a 192.0.2.9 that must be
    ignored), then it becomes 10.9.0.7. The device browses with its own
    default rule too."""
    from hub.net import mdns
    from hub.net.mdns import HubAnnouncement, advertise_hub

    # The advertiser's looks at the interfaces, counted: "three polls, still
    # nothing" is waited for as three calls, not slept for.
    looks = threading.Semaphore(0)
    real = mdns.interface_addresses

    def counted() -> Any:
        found = real()
        looks.release()
        return found

    mdns.interface_addresses = counted  # type: ignore[assignment]
    log = Collect()
    logging.getLogger("hub.net.mdns").addHandler(log)
    logging.getLogger("hub.net.mdns").setLevel(logging.INFO)
    announcement = HubAnnouncement(label="alpha", hub_id="id-alpha", mqtt_port=18831, http_port=8080)
    advertiser = advertise_hub(announcement, (), poll_interval_s=0.2)

    def wait_for(addresses: list[str], timeout_s: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout_s
        while advertiser.addresses != addresses and time.monotonic() < deadline:
            time.sleep(0.05)
        return advertiser.addresses

    try:
        for _ in range(4):  # the first look at start, then three polls
            assert looks.acquire(timeout=10), "the advertiser stopped looking at the interfaces"
        emit(initial=advertiser.addresses)
        ip("addr", "add", "192.0.2.9/32", "dev", "lo")
        ip("addr", "add", "10.9.0.1/32", "dev", "lo")
        emit(after_add=wait_for(["10.9.0.1"]))
        emit(first=discover_elsewhere(3, "default"))
        ip("addr", "del", "10.9.0.1/32", "dev", "lo")
        ip("addr", "add", "10.9.0.7/32", "dev", "lo")
        emit(after_change=wait_for(["10.9.0.7"]))
        emit(second=discover_elsewhere(3, "default"))
    finally:
        advertiser.stop()
        emit(log=log.messages)


def scenario_end_to_end(tmp: Path) -> None:
    """`linkhub run` with its own mosquitto and mDNS on loopback; the device finds it."""
    data_dir = tmp / "data"
    mqtt_port, http_port = free_port(), free_port()
    hub_log = (tmp / "hub.log").open("w")
    hub = subprocess.Popen(
        [LINKHUB, "run", "--data-dir", str(data_dir), "--http-host", LOOPBACK, "--mqtt-host", LOOPBACK,
         "--mqtt-port", str(mqtt_port), "--http-port", str(http_port), "--mdns-interface", LOOPBACK,
         "--poll-interval", "1"],
        stdout=subprocess.PIPE, stderr=hub_log, text=True,
    )  # fmt: skip
    assert hub.stdout is not None
    banner = LineReader(hub.stdout)
    device: subprocess.Popen[str] | None = None
    try:
        emit(
            hub_ready=banner.next_matching(lambda line: line.startswith("Stop with"), 30) is not None,
            mqtt_port=mqtt_port,
        )

        def linkhub(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [LINKHUB, *args, "--data-dir", str(data_dir)],
                input=stdin, capture_output=True, text=True, timeout=30,
            )  # fmt: skip

        added = linkhub("account", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
        emit(account_add_exit=added.returncode, account_add_stderr=added.stderr[-500:])
        device = subprocess.Popen(
            [DEVICE, "link", "--name", "Lamp", "--model", "L1", "--state", str(tmp / "lamp.json"), "--json",
             "--mdns-interface", LOOPBACK, "--discover-timeout", "10", "--timeout", "60"],
            stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert device.stdout is not None
        events = LineReader(device.stdout)
        code_line = events.next_matching(
            lambda line: '"event":"code"' in line or '"event":"error"' in line, 20
        )
        emit(device_events_before_code=json_events(events.seen))
        if code_line is None or '"code"' not in code_line:
            return
        code = json.loads(code_line)["user_code"]
        approved = linkhub("link", "approve", code, "--account", "alice")
        emit(approve_exit=approved.returncode, approve_stderr=approved.stderr[-500:])
        events.next_matching(lambda line: '"event":"linked"' in line or '"event":"error"' in line, 20)
        emit(device_events=json_events(events.seen))
        try:
            emit(device_exit=device.wait(timeout=10))
        except subprocess.TimeoutExpired:
            emit(device_exit=None)
    finally:
        if device is not None and device.poll() is None:
            device.kill()
            device.wait(timeout=5)
        hub.send_signal(signal.SIGTERM)
        try:
            hub_exit = hub.wait(timeout=20)
        except subprocess.TimeoutExpired:
            hub.kill()
            hub_exit = hub.wait(timeout=5)
        hub_log.close()
        log_lines = (tmp / "hub.log").read_text().splitlines()
        emit(hub_exit=hub_exit, hub_mdns_log=[line for line in log_lines if "mDNS" in line])


def main(argv: list[str]) -> int:
    if not inside_fresh_namespace():
        emit(error="refusing to run: this is not a fresh network namespace (see the module docstring)")
        return 3
    name, *rest = argv
    if name == "_discover":
        helper_discover(float(rest[0]), rest[1:])
        return 0
    if name == "_watch":
        helper_watch(float(rest[0]))
        return 0
    with tempfile.TemporaryDirectory(prefix="mdns-scenario-") as tmp:
        match name:
            case "one":
                scenario_one()
            case "two":
                scenario_two(Path(tmp))
            case "none":
                scenario_none(Path(tmp))
            case "stop":
                scenario_stop()
            case "follow":
                scenario_follow()
            case "end_to_end":
                scenario_end_to_end(Path(tmp))
            case _:
                emit(error=f"unknown scenario {name!r}")
                return 2
    emit(done=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main(sys.argv[1:]))
