"""What every benchmark needs: a hub of its own on free loopback ports, accounts,
fast approvals, the broker's admin identity for baselines, figures and plots.

The benchmarks are run by hand (`.venv/bin/python bench/link.py`), never by the
test suite. Everything they start listens on 127.0.0.1 only and is stopped on
the way out; every load loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from firmware_sim.fleet import ApprovalError, Approver, Fleet, FleetOptions, IncomingHook
from linkhub import control_client

# `linkhub run` in a subprocess is written once, for the tests and for these (tests/hub_process.py).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from hub_process import LINKHUB, READY, LineReader, linkhub_run_command
from hub_process import LOOPBACK as HOST

ADMIN_USERNAME = "linkhub-admin"  # hub/broker/managed.py's; the bench reads the password from the data dir
HUB_ROLE = "linkhub-hub"  # hub/broker/dynsec.py's: all of linkhub/v1/#
CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
# A benchmark links many devices, or sends many new link requests, as fast as
# it can: the hub's link-request limits (5 per client and 60 in total a minute,
# 100 codes pending; docs/protocol.md section 5.4) would refuse most of that.
BENCH_LINK_LIMITS = (
    "--link-requests-per-client", "1000000 per minute",
    "--link-requests-total", "1000000 per minute",
    "--max-pending-requests", "100000",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def set_nodelay(_client: paho.Client, _userdata: Any, sock: Any) -> None:
    """TCP_NODELAY on every client socket (else Nagle + delayed ACK, RFC 1122 §4.2.3.4: ~40 ms a trip)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# --- the hub ---------------------------------------------------------------------------
@dataclass
class Hub:
    process: subprocess.Popen[str]
    data_dir: Path
    http_port: int
    mqtt_port: int
    command: list[str]

    @property
    def control_socket(self) -> Path:
        return self.data_dir / "hub.sock"

    @property
    def admin_password(self) -> str:
        return (self.data_dir / "broker" / "admin-password").read_text().strip()

    @property
    def mosquitto_pid(self) -> int | None:
        try:
            return int((self.data_dir / "broker" / "mosquitto.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINKHUB, *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def add_account(self, name: str, password: str = "correct horse battery staple") -> None:
        done = self.cli("account", "add", name, "--password-stdin", stdin=password + "\n")
        if done.returncode != 0:
            raise RuntimeError(f"linkhub account add failed: {done.stderr}")

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        return control_client.call(self.control_socket, method, path, body)


def hub_command(data_dir: Path, http_port: int, mqtt_port: int, extra: Sequence[str] = ()) -> list[str]:
    return linkhub_run_command(data_dir, http_port=http_port, mqtt_port=mqtt_port, extra=extra)


@contextlib.contextmanager
def running_hub(extra: Sequence[str] = (), keep: bool = False) -> Iterator[Hub]:
    """`linkhub run` in a temporary data directory, on free loopback ports, with
    the link-request limits out of the way (BENCH_LINK_LIMITS)."""
    tmp = Path(tempfile.mkdtemp(prefix="linkhub-bench-"))
    data_dir = tmp / "data"
    http_port, mqtt_port = free_port(), free_port()
    command = hub_command(data_dir, http_port, mqtt_port, [*BENCH_LINK_LIMITS, *extra])
    with open(tmp / "hub.log", "w") as log:  # the child keeps its own copy
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    try:
        LineReader(process.stdout).until(lambda line: line.startswith(READY), timeout_s=60)
        yield Hub(process, data_dir, http_port, mqtt_port, command)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if not keep:
            shutil.rmtree(tmp, ignore_errors=True)


def control_approver(hub: Hub, account: str) -> Approver:
    """Approve through the control socket (what `linkhub link approve` does, minus
    starting a Python process for each code)."""

    def approve(user_code: str) -> None:
        try:
            hub.control("POST", "/v1/link/approve", {"code": user_code, "account": account})
        except control_client.ControlError as exc:
            raise ApprovalError(str(exc)) from exc

    return approve


# --- a bare MQTT client for baselines ---------------------------------------------------
class BareClient:
    """paho with its own thread, TCP_NODELAY, and a callback per message: the
    least a client can do, for floors and baselines."""

    def __init__(
        self,
        port: int,
        username: str,
        password: str,
        on_message: Callable[[paho.MQTTMessage], None] | None = None,
        client_id: str | None = None,
    ) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"bench-{secrets.token_hex(6)}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(username, password)
        self.client.on_socket_open = set_nodelay
        self.client.max_inflight_messages_set(0)  # no limit: a floor must not queue on our side
        self.client.max_queued_messages_set(0)
        connected = threading.Event()
        self._suback = threading.Event()
        self.client.on_connect = lambda *_a: connected.set()
        self.client.on_subscribe = lambda *_a: self._suback.set()
        if on_message is not None:
            self.client.on_message = lambda _c, _u, msg: on_message(msg)
        self.client.connect(HOST, port, keepalive=60)
        self.client.loop_start()
        if not connected.wait(10):
            raise RuntimeError("the broker did not accept a bench client")

    def subscribe(self, topic: str) -> None:
        self._suback.clear()
        self.client.subscribe(topic, qos=1)
        if not self._suback.wait(10):
            raise RuntimeError(f"no SUBACK for {topic}")

    def publish(
        self, topic: str, payload: bytes, response_topic: str | None = None, correlation: bytes | None = None
    ) -> None:
        props = None
        if response_topic is not None or correlation is not None:
            props = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                props.ResponseTopic = response_topic
            if correlation is not None:
                props.CorrelationData = correlation
        self.client.publish(topic, payload, qos=1, properties=props)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class DynSec:
    """The broker's dynamic-security API, as bare as it gets: publish a command,
    wait for its answer (matched by correlationData)."""

    def __init__(self, hub: Hub) -> None:
        self._waiting: dict[str, tuple[threading.Event, list[dict[str, Any]]]] = {}
        self._lock = threading.Lock()
        self.client = BareClient(hub.mqtt_port, ADMIN_USERNAME, hub.admin_password, self._on_message)
        self.client.subscribe(f"{CONTROL_TOPIC}/response")

    def _on_message(self, msg: paho.MQTTMessage) -> None:
        for response in json.loads(msg.payload).get("responses", []):
            with self._lock:
                waiting = self._waiting.pop(str(response.get("correlationData")), None)
            if waiting is not None:
                waiting[1].append(response)
                waiting[0].set()

    def call(self, command: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        tag = secrets.token_hex(8)
        done: tuple[threading.Event, list[dict[str, Any]]] = (threading.Event(), [])
        with self._lock:
            self._waiting[tag] = done
        body = {"commands": [command | {"correlationData": tag}]}
        self.client.publish(CONTROL_TOPIC, json.dumps(body).encode())
        if not done[0].wait(timeout_s):
            raise RuntimeError(f"dynamic-security did not answer {command['command']}")
        response = done[1][0]
        if response.get("error"):
            raise RuntimeError(f"dynamic-security refused {command['command']}: {response['error']}")
        return response

    def bench_identity(self) -> tuple[str, str]:
        """A client with the hub's role (all of linkhub/v1/#), for floors that must
        go through the same broker and the same kind of ACL check."""
        username, password = f"bench-{secrets.token_hex(4)}", secrets.token_urlsafe(18)
        self.call(
            {
                "command": "createClient",
                "username": username,
                "password": password,
                "roles": [{"rolename": HUB_ROLE}],
            }
        )
        return username, password

    def close(self) -> None:
        self.client.close()


# --- figures ------------------------------------------------------------------------------
def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def describe_ms(values_s: Sequence[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"n={len(ms)} p50={percentile(ms, 50):.2f} ms p90={percentile(ms, 90):.2f} ms "
        f"p99={percentile(ms, 99):.2f} ms max={max(ms, default=math.nan):.2f} ms"
    )


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    try:
        version_text = subprocess.run([mosquitto, "-h"], capture_output=True, text=True, timeout=10).stdout
        found = re.search(r"mosquitto version (\S+)", version_text)
        mosquitto_version = found.group(1) if found else "unknown"
    except OSError:
        mosquitto_version = "not found"
    memory = subprocess.run(["free", "-h"], capture_output=True, text=True).stdout.splitlines()
    return {
        "nproc": str(os.cpu_count()),
        "memory": memory[1].split()[1] if len(memory) > 1 else "?",
        "python": platform.python_version(),
        "mosquitto": mosquitto_version,
        "kernel": platform.release(),
    }


def print_machine() -> None:
    info = machine()
    print("machine: " + ", ".join(f"{k}={v}" for k, v in info.items()))


def plot(path: str, title: str, series: dict[str, Sequence[float]], unit: str = "ms") -> None:
    """Histogram and CDF of each series (values in seconds), on one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (hist, cdf) = plt.subplots(1, 2, figsize=(11, 4.2))
    scale = 1000.0 if unit == "ms" else 1.0
    for label, values_s in series.items():
        values = sorted(v * scale for v in values_s)
        if not values:
            continue
        hist.hist(values, bins=60, alpha=0.55, label=f"{label} (n={len(values)})")
        cdf.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label)
        for p, style in ((50, "--"), (99, ":")):
            colour = cdf.lines[-1].get_color()
            cdf.axvline(percentile(values, p), linestyle=style, linewidth=0.8, color=colour)
    hist.set_xlabel(unit)
    hist.set_ylabel("count")
    hist.legend()
    cdf.set_xlabel(f"{unit} (dashed p50, dotted p99)")
    cdf.set_ylabel("fraction")
    cdf.set_xscale("log")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot written to {path}")


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / (1024 * 1024)


# --- a fleet of linked devices ------------------------------------------------------------
class EventLog:
    """Collects the fleet's events (from its threads) and counts what matters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.synced: set[str] = set()  # devices that applied a full desired document
        self.errors: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> None:
        with self.lock:
            if event.get("event") == "settings" and "device" in event:
                self.synced.add(event["device"])
            elif event.get("event") == "error":
                self.errors.append(event)


def linked_fleet(
    hub: Hub,
    count: int,
    account: str,
    state_dir: Path,
    *,
    on_incoming: IncomingHook | None = None,
    workers: int = 4,
    link_workers: int = 8,
    limit_s: float = 900.0,
) -> tuple[Fleet, EventLog]:
    """`count` devices linked (approved through the control socket) and online,
    each with its full desired document applied. Prints how long each step took."""
    log = EventLog()
    fleet = Fleet(
        FleetOptions(
            host=HOST,
            port=hub.mqtt_port,
            count=count,
            state_dir=state_dir,
            workers=workers,
            link_workers=link_workers,
            link_timeout_s=120,
        ),
        on_event=log,
        approver=control_approver(hub, account),
        on_incoming=on_incoming,
    )
    stop = threading.Event()
    timer = threading.Timer(limit_s, stop.set)  # every setup step is bounded in time
    timer.daemon = True
    timer.start()
    began = time.monotonic()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        if time.monotonic() - shown[0] >= 10 or done == total:
            shown[0] = time.monotonic()
            print(f"  linking {done}/{total} ({time.monotonic() - began:.0f} s)", flush=True)

    if not fleet.link_all(stop, progress):
        raise RuntimeError(f"linking {count} devices took more than {limit_s} s")
    linked_s = time.monotonic() - began
    summary = fleet.summary()
    if summary.linked != count:
        raise RuntimeError(f"only {summary.linked} of {count} linked: {log.errors[:3]}")
    rate = count / linked_s
    print(f"setup: {count} devices linked in {linked_s:.1f} s ({rate:.1f}/s, {link_workers} at once)")
    began = time.monotonic()
    fleet.connect_all(stop)
    connected_s = time.monotonic() - began
    while len(log.synced) < count and not stop.is_set():
        time.sleep(0.1)
    synced_s = time.monotonic() - began
    timer.cancel()
    summary = fleet.summary()
    print(
        f"setup: {summary.online} online in {connected_s:.1f} s, all {len(log.synced)} synced "
        f"(full desired document applied and reported) after {synced_s:.1f} s; errors={len(log.errors)}"
    )
    if summary.online != count or len(log.synced) != count:
        fleet.close()
        raise RuntimeError(f"not all online and synced: {summary}, {log.errors[:3]}")
    return fleet, log
