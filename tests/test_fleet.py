"""`linkhub-device fleet` against a real `linkhub run`: many devices from one
process, each linked through the shell path with its own identity, kept online,
and reconnected (not linked again) by a second run with the same state directory."""

from __future__ import annotations

import json
import os
import queue
import resource
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port, wait_until
from device_doubles import RawClient
from hub_process import DEVICE, LINKHUB, READY, linkhub_run_command, read_lines_until

from firmware_sim import keys
from firmware_sim.fleet import FleetMqttClient, NetLoop
from firmware_sim.mqtt_client import Message
from linkhub_protocol import (
    BOOTSTRAP_PASSWORD,
    BOOTSTRAP_USERNAME,
    DeviceInfo,
    LinkRequest,
    PendingReply,
    encode,
    link_request_topic,
    parse_link_reply,
    reply_topic,
)

COUNT = 5


@dataclass
class Hub:
    process: subprocess.Popen[str]
    data_dir: Path
    mqtt_port: int

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINKHUB, *args, "--data-dir", str(self.data_dir)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def devices(self) -> list[dict[str, Any]]:
        listed = self.cli("devices", "--json")
        assert listed.returncode == 0, listed.stderr
        devices: list[dict[str, Any]] = json.loads(listed.stdout)
        return devices


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[Hub]:
    """`linkhub run` with its own mosquitto on free loopback ports, and an account."""
    data_dir, http_port, mqtt_port = tmp_path / "data", free_port(), free_port()
    command = linkhub_run_command(data_dir, http_port=http_port, mqtt_port=mqtt_port)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    read_lines_until(process.stdout, lambda line: line.startswith(READY))
    running = Hub(process, data_dir, mqtt_port)
    added = running.cli("account", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
    assert added.returncode == 0, added.stderr
    yield running
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0


def fleet_command(hub: Hub, state_dir: Path, duration_s: float) -> list[str]:
    return [
        DEVICE, "fleet", "--count", str(COUNT),
        "--hub", f"mqtt://127.0.0.1:{hub.mqtt_port}",
        "--auto-approve", "alice", "--data-dir", str(hub.data_dir),
        "--state-dir", str(state_dir), "--json", "--duration", str(duration_s),
    ]  # fmt: skip


def by_kind(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def test_fleet_links_every_device_then_a_second_run_only_reconnects(hub: Hub, tmp_path: Path) -> None:
    state_dir = tmp_path / "fleet"
    first = subprocess.Popen(
        fleet_command(hub, state_dir, 3), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert first.stdout is not None and first.stderr is not None
    events: list[dict[str, Any]] = []
    while len(by_kind(events, "online")) < COUNT:
        line = first.stdout.readline()
        assert line, f"fleet ended early: {events}"
        events.append(json.loads(line))
    # While the fleet runs, the hub sees all of them online, each under its own identity.
    wait_until(
        lambda: (listed := hub.devices()) and all(d["online"] for d in listed) and len(listed) == COUNT,
        timeout_s=10,
        what=f"the hub to list {COUNT} devices online",
    )
    rest, stderr = first.communicate(timeout=60)
    assert first.returncode == 0, stderr
    events += [json.loads(line) for line in rest.splitlines()]

    linked = {e["device"]: e["device_id"] for e in by_kind(events, "linked")}
    assert sorted(linked) == [f"device-{i:04d}" for i in range(1, COUNT + 1)]
    assert len(set(linked.values())) == COUNT, "each device has its own id"
    assert {e["device"]: e["device_id"] for e in by_kind(events, "online")} == linked
    assert not by_kind(events, "error")
    assert {(e["linked"], e["new"], e["online"], e["errors"]) for e in events if e.get("final")} == {
        (COUNT, COUNT, COUNT, 0)
    }
    assert f"linked={COUNT} online={COUNT} errors=0" in stderr
    assert "linking [" in stderr  # the progress bar

    states = {path.stem: json.loads(path.read_text()) for path in sorted(state_dir.glob("device-*.json"))}
    assert {key: st["device_id"] for key, st in states.items()} == linked
    assert all(st["mqtt"]["username"] == st["device_id"] == st["mqtt"]["client_id"] for st in states.values())
    assert len({st["mqtt"]["password"] for st in states.values()}) == COUNT, "each has its own password"
    assert all("pending" not in st for st in states.values())
    # A clean stop: each said so on its status topic.
    assert {(d["device_id"], d["online"]) for d in hub.devices()} == {(i, False) for i in linked.values()}

    second = subprocess.run(fleet_command(hub, state_dir, 1), capture_output=True, text=True, timeout=60)
    assert second.returncode == 0, second.stderr
    events = [json.loads(line) for line in second.stdout.splitlines()]
    assert not by_kind(events, "code") and not by_kind(events, "linked"), "nothing is linked again"
    assert {e["device"]: e["device_id"] for e in by_kind(events, "online")} == linked
    assert {(e["linked"], e["new"], e["online"], e["errors"]) for e in events if e.get("final")} == {
        (COUNT, 0, COUNT, 0)
    }
    assert f"linked={COUNT} online={COUNT} errors=0" in second.stderr
    assert sorted(d["device_id"] for d in hub.devices()) == sorted(linked.values())
    again = {path.stem: json.loads(path.read_text())["mqtt"] for path in state_dir.glob("device-*.json")}
    assert again == {key: st["mqtt"] for key, st in states.items()}, "the credentials were kept"


def test_fleet_client_works_above_descriptor_1023(hub: Hub) -> None:
    """paho's own loop waits in select(), which cannot watch descriptors above 1023:
    a process holding a thousand devices is past that. The fleet's client is
    driven by epoll: it connects, subscribes and gets the hub's answer there."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"the descriptor limit ({hard}) is too low to test this")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
    fillers = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    net = NetLoop()
    token = secrets.token_urlsafe(24)
    client_id = f"lh-boot-{secrets.token_hex(8)}"
    client = FleetMqttClient(
        net,
        client_id=client_id,
        username=BOOTSTRAP_USERNAME,
        password=BOOTSTRAP_PASSWORD,
        mqtt5=True,
        will=None,
        inbox=queue.Queue(),
    )
    try:
        client.connect("127.0.0.1", hub.mqtt_port)
        sock = client.paho.socket()
        assert sock is not None and sock.fileno() > 1023
        client.subscribe(reply_topic(token))
        public_key = keys.public_key(keys.new_private_key())
        request = LinkRequest(
            secrets.token_urlsafe(24), reply_topic(token), DeviceInfo("Far Lamp", "FD-1"), public_key
        )
        client.publish(link_request_topic(client_id), encode(request), response_topic=request.reply_to)
        item = client.get(10)
        assert isinstance(item, Message), item
        reply = parse_link_reply(item.payload)
        assert isinstance(reply, PendingReply) and reply.request_id == request.request_id
        assert len(reply.user_code) == 9
    finally:
        client.close()
        net.stop()
        for fd in fillers:
            os.close(fd)


def test_a_fleet_of_plugs_describes_itself_and_reports_state(hub: Hub, tmp_path: Path) -> None:
    """Fleet mode takes a profile (issue 15): every device describes itself and
    retains its state, so Home Assistant's login reads them all."""
    command = [*fleet_command(hub, tmp_path / "fleet", 30), "--profile", "plug"]
    fleet = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert fleet.stdout is not None
    try:
        seen = 0
        while seen < COUNT:
            line = fleet.stdout.readline()
            assert line, "fleet ended early"
            seen += json.loads(line)["event"] == "online"
        login = json.loads(hub.cli("homeassistant", "--json").stdout)
        reader = RawClient(hub.mqtt_port, login["username"], login["password"])
        try:
            assert reader.subscribe("linkhub/v1/devices/+/state")
            assert reader.subscribe("homeassistant/+/+/+/config")
            states: dict[str, dict[str, Any]] = {}
            configs: set[str] = set()
            while len(states) < COUNT or len(configs) < 2 * COUNT:
                message = reader.next_message(timeout_s=15)
                if message.topic.endswith("/state") and message.payload:
                    states[message.topic] = json.loads(message.payload)["state"]
                elif message.topic.endswith("/config") and "linkhub-dev-" in message.topic:
                    configs.add(message.topic)
        finally:
            reader.close()
        assert all(set(state) == {"power", "power_w"} for state in states.values()), states
        assert {topic.split("/")[1] for topic in configs} == {"switch", "sensor"}
    finally:
        fleet.send_signal(signal.SIGINT)
        fleet.wait(timeout=30)
