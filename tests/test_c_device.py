"""The reference device in C (issue 17, examples/c-device/) against a real hub
on the session's mosquitto: built with warnings as errors and once with
AddressSanitizer and UndefinedBehaviorSanitizer; its own test vectors (the
document's sealed box, RFC 7396's merge patches); then its whole life on MQTT 5
and on 3.1.1: linked (approved), denied, its code expired, settings both ways
and while it was off, commands for its light, a hub restart, unlinked. What it
publishes is checked against docs/protocol.schema.json, and a run of 100
settings changes under AddressSanitizer leaks nothing.

The device prints one JSON event per line (the same events as `linkhub-device
--json`) and takes "set KEY=VALUE" and "quit" on stdin.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from conftest import FakeClock, HubFactory, RunningBroker, wait_until
from device_doubles import RawClient
from hub_process import LineReader
from test_protocol_schema import problems

from hub.core.origin import Origin
from hub.daemon import HUB_USERNAME_PREFIX, Hub
from hub.services.links import CodeStatus

pytestmark = pytest.mark.timeout(300)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "c-device"
EVENT_DEADLINE_S = 30.0
PASSWORD = "correct horse battery staple"
VERSIONS = ["5", "3.1.1"]


@pytest.fixture(scope="session")
def c_device() -> Path:
    """Built once per run: `make` (warnings as errors), the sanitizer build and the test vectors."""
    built = subprocess.run(
        ["make", "-C", str(EXAMPLE), "lh-device", "lh-device-asan", "check"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "passed: 0 failed" in built.stdout, built.stdout
    return EXAMPLE


@dataclass
class CDevice:
    process: subprocess.Popen[str]
    lines: LineReader
    state_path: Path
    stderr: list[str] = field(default_factory=list)

    def event(self, name: str, timeout_s: float = EVENT_DEADLINE_S) -> dict[str, Any]:
        """The next event called `name` (the ones before it are passed over)."""
        line = self.lines.next_matching(lambda text: json.loads(text).get("event") == name, timeout_s)
        assert line is not None, f"no {name!r} event; the device printed {self.lines.seen[-12:]}"
        return json.loads(line)  # type: ignore[no-any-return]

    def send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()

    def wait(self, timeout_s: float = EVENT_DEADLINE_S) -> int:
        return self.process.wait(timeout=timeout_s)

    def saved(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text())  # type: ignore[no-any-return]


@pytest.fixture
def devices(c_device: Path, broker: RunningBroker) -> Iterator[Callable[..., CDevice]]:
    started: list[CDevice] = []

    def start(
        state_path: Path, mqtt: str = "5", *, binary: str = "lh-device", name: str = "C Lamp"
    ) -> CDevice:
        command = [
            str(c_device / binary), "--hub", f"mqtt://127.0.0.1:{broker.port}", "--state", str(state_path),
            "--name", name, "--model", "LH-C1", "--firmware", "1.0.0", "--mqtt", mqtt,
        ]  # fmt: skip
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert process.stdout is not None and process.stderr is not None
        device = CDevice(process, LineReader(process.stdout), state_path)
        errors = process.stderr
        threading.Thread(target=lambda: device.stderr.extend(errors), daemon=True).start()
        started.append(device)
        return device

    yield start
    for device in started:
        if device.process.poll() is None:
            device.process.kill()
            device.process.wait(timeout=20)


def owner_of(hub: Hub) -> int:
    return hub.accounts.create("alice", PASSWORD).id


def link(hub: Hub, device: CDevice, account_id: int, code: str | None = None) -> str:
    code = code or device.event("code")["user_code"]
    device_id = hub.links.approve(code, account_id).device_id
    assert device.event("linked")["device_id"] == device_id
    assert device.event("online")["device_id"] == device_id
    return device_id


def settings_version(hub: Hub, device_id: str) -> int:
    view = hub.settings.device_view(device_id)
    assert view is not None
    return view.applied_version or 0


class Observer:
    """Everything published under a device's topics, read with the hub's own
    identity (the only one that may), to check it against the schema."""

    def __init__(self, hub: Hub, broker: RunningBroker, device_id: str) -> None:
        data_dir = hub.config.data_dir
        username = HUB_USERNAME_PREFIX + (data_dir / "hub-id").read_text().strip()
        self.client = RawClient(broker.port, username, (data_dir / "hub-password").read_text().strip())
        assert self.client.subscribe(f"linkhub/v1/devices/{device_id}/#")
        self.prefix = f"linkhub/v1/devices/{device_id}/"

    def sent_by_device(self) -> dict[str, list[Any]]:
        """The device's messages so far, by topic leaf (the hub's own are left out)."""
        found: dict[str, list[Any]] = {}
        while True:
            try:
                message: paho.MQTTMessage = self.client.messages.get_nowait()
            except queue.Empty:
                return found
            leaf = message.topic.removeprefix(self.prefix)
            if leaf in (
                "status",
                "settings/get",
                "settings/reported",
                "settings/set",
                "description",
                "state",
            ):
                found.setdefault(leaf, []).append(json.loads(message.payload) if message.payload else None)


@pytest.mark.parametrize("mqtt", VERSIONS)
def test_the_c_device_lives_its_whole_life(
    make_hub: HubFactory, broker: RunningBroker, devices: Callable[..., CDevice], tmp_path: Path, mqtt: str
) -> None:
    hub = make_hub()
    account_id = owner_of(hub)
    state_path = tmp_path / "lamp.json"
    device = devices(state_path, mqtt)
    device_id = link(hub, device, account_id)
    saved = device.saved()
    assert saved["device_id"] == device_id and "pending" not in saved  # the attempt forgotten once saved
    assert device.event("settings")["version"] == 1  # a new device's first full document
    observer = Observer(hub, broker, device_id)

    # Settings from the hub reach it; it reports them; the hub shows it synced.
    hub.settings.set_device_settings(
        device_id, {"brightness": 40, "night": {"from": "22:00"}}, origin=Origin.CLI
    )
    applied = device.event("settings")
    assert applied == {
        "event": "settings",
        "desired": {"brightness": 40, "night": {"from": "22:00"}},
        "version": 2,
    }
    wait_until(lambda: settings_version(hub, device_id) == 2, what="the report of version 2")
    # A change made on the device goes to the hub.
    device.send('set night={"from": "23:00"}')
    assert device.event("set_ok")["version"] == 3
    view = hub.settings.device_view(device_id)
    assert view is not None and view.desired["night"] == {"from": "23:00"}

    # Its light: described, its state retained, a command obeyed.
    wait_until(lambda: hub.control.state_of(device_id), what="the light's first state")
    assert hub.control.state_of(device_id) == {"light": {"on": True, "brightness": 200}}
    hub.control.send_command(
        device_id, "light", {"on": False, "brightness": 51}, origin=Origin.WEB, account_id=account_id
    )
    obeyed = device.event("command")
    assert obeyed["state"] == {"on": False, "brightness": 51}
    wait_until(lambda: hub.control.state_of(device_id)["light"]["on"] is False, what="the new state")

    # Stopped; a change made while it was off reaches it when it is back.
    device.send("quit")
    assert device.wait() == 0
    wait_until(lambda: not hub.links.linked_device(device_id, account_id).online, what="offline")  # type: ignore[union-attr]
    hub.settings.set_device_settings(device_id, {"brightness": None, "mode": "eco"}, origin=Origin.CLI)
    device = devices(state_path, mqtt)
    assert device.event("online")["device_id"] == device_id
    caught_up = device.event("settings")
    assert caught_up["desired"] == {"night": {"from": "23:00"}, "mode": "eco"} and caught_up["version"] == 4

    # The hub restarts; the device goes on, and hears the restarted hub.
    hub.stop()
    hub = make_hub()
    hub.settings.set_device_settings(device_id, {"mode": "comfort"}, origin=Origin.CLI)
    assert device.event("settings")["desired"]["mode"] == "comfort"

    # Everything it published so far is what the schema allows.
    sent = observer.sent_by_device()
    assert {"status", "settings/get", "settings/reported", "settings/set", "description", "state"} <= set(
        sent
    )
    for leaf, messages in sent.items():
        for message in messages:
            if message is not None:  # an emptied retained topic
                assert problems(message) == [], (leaf, message)
    observer.client.close()

    # Unlinked: it forgets its credentials and stops, with status 0.
    hub.links.unlink(device_id, account_id, origin=Origin.WEB)
    assert device.event("unlinked")["device_id"] == device_id
    assert device.wait() == 0
    saved = device.saved()
    assert "device_id" not in saved and "mqtt" not in saved and saved["name"] == "C Lamp"


@pytest.mark.parametrize("mqtt", VERSIONS)
def test_a_denied_code_ends_the_attempt(
    make_hub: HubFactory, devices: Callable[..., CDevice], tmp_path: Path, mqtt: str
) -> None:
    hub = make_hub()
    device = devices(tmp_path / "lamp.json", mqtt)
    code = device.event("code")["user_code"]
    hub.links.deny(code, None)
    assert device.event("error")["error"] == "access_denied"
    assert device.wait() == 1
    assert "pending" not in device.saved()  # final: the next start is a new attempt, with a new code


@pytest.mark.parametrize("mqtt", VERSIONS)
def test_an_expired_code_ends_the_attempt(
    make_hub: HubFactory, devices: Callable[..., CDevice], tmp_path: Path, mqtt: str
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock, code_lifetime_s=60)
    device = devices(tmp_path / "lamp.json", mqtt)
    code = device.event("code")["user_code"]
    clock.advance(60)
    assert hub.links.lookup_code(code).status is CodeStatus.EXPIRED
    assert device.event("error")["error"] == "expired_token"
    assert device.wait() == 1


def test_a_restart_while_pending_resends_the_same_request(
    make_hub: HubFactory, devices: Callable[..., CDevice], tmp_path: Path
) -> None:
    hub = make_hub()
    account_id = owner_of(hub)
    state_path = tmp_path / "lamp.json"
    first = devices(state_path)
    code = first.event("code")["user_code"]
    saved = first.saved()["pending"]
    first.process.kill()  # a power cut
    first.wait()
    again = devices(state_path)
    assert again.event("code")["user_code"] == code  # the same request, so the same code
    assert again.saved()["pending"]["request_id"] == saved["request_id"]
    assert link(hub, again, account_id, code)


def test_a_hundred_settings_changes_leak_nothing(
    make_hub: HubFactory, devices: Callable[..., CDevice], tmp_path: Path
) -> None:
    hub = make_hub()
    account_id = owner_of(hub)
    device = devices(tmp_path / "lamp.json", binary="lh-device-asan")
    device_id = link(hub, device, account_id)
    assert device.event("settings")["version"] == 1
    for n in range(100):
        hub.settings.set_device_settings(
            device_id, {"brightness": n, "label": f"change {n}"}, origin=Origin.CLI
        )
        assert device.event("settings")["desired"]["brightness"] == n
    device.send("quit")
    assert device.wait(timeout_s=60) == 0
    report = "".join(device.stderr)
    assert "ERROR: AddressSanitizer" not in report and "LeakSanitizer" not in report, report[-4000:]
    assert "runtime error" not in report, report[-4000:]  # UndefinedBehaviorSanitizer
