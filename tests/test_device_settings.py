"""Device settings end to end: the simulated firmware's `run` and `set` against an
in-process hub on a real mosquitto. The person's changes are made through the
hub's own service functions; every wait is a bounded poll, never a fixed sleep."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RunningBroker, wait_until
from device_doubles import DeviceThread

from firmware_sim import cli
from firmware_sim.run import run
from hub.daemon import Hub
from hub.services.settings import DeviceSettingsView

Event = dict[str, Any]


class RunThread:
    """`firmware_sim.run.run` in a thread, its events in a queue."""

    def __init__(self, state_path: Path) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.exit_code: int | None = None
        self.seen: list[Event] = []
        self._thread = threading.Thread(target=self._run, args=(state_path,), daemon=True)

    def _run(self, state_path: Path) -> None:
        self.exit_code = run(state_path, on_event=self.events.put, stop=self.stop)

    def start(self) -> RunThread:
        self._thread.start()
        return self

    def wait_for(self, predicate: Callable[[Event], bool], what: str, timeout_s: float = 15) -> Event:
        """The next event that matches; the ones before it are kept in `seen`."""
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                event = self.events.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {what}; events so far: {self.seen}") from None
            self.seen.append(event)
            if predicate(event):
                return event

    def close(self, timeout_s: float = 15) -> int:
        self.stop.set()
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "run did not stop"
        assert self.exit_code is not None
        return self.exit_code


def settings_event(version: int | None = None) -> Callable[[Event], bool]:
    return lambda e: e["event"] == "settings" and (version is None or e["version"] == version)


def view(hub: Hub, device_id: str) -> DeviceSettingsView:
    found = hub.settings.device_view(device_id)
    assert found is not None
    return found


def wait_synced(hub: Hub, device_id: str) -> DeviceSettingsView:
    """Until the hub records that the device reports exactly what it desires."""

    def synced() -> bool:
        v = view(hub, device_id)
        return v.applied_version == v.desired_version and v.reported == v.desired

    wait_until(synced, what="the device to report the desired document")
    return view(hub, device_id)


def cli_set(path: Path, capsys: pytest.CaptureFixture[str], *assignments: str) -> tuple[int, Event]:
    capsys.readouterr()
    rc = cli.main(["set", "--state", str(path), *assignments, "--json"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1, lines
    return rc, json.loads(lines[0])


def test_device_settings_round_trip(
    hub: Hub, broker: RunningBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    account_id = hub.accounts.create("alice", "correct horse battery").id
    path = tmp_path / "lamp.json"
    device = DeviceThread(broker.port, path).start()
    code = device.wait_code()
    device_id = hub.links.approve(code, account_id).device_id
    assert device.join() == 0

    runner = RunThread(path).start()
    try:
        # The full document after connecting.
        first = runner.wait_for(settings_event(), "the first settings event")
        hub_view = view(hub, device_id)
        assert first["desired"] == hub_view.desired and first["version"] == hub_view.desired_version
        wait_synced(hub, device_id)

        # An account preference reaches the device as the next version.
        hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")
        event = runner.wait_for(settings_event(first["version"] + 1), "the preference change")
        assert event["desired"] == {"theme": "dark"}

        # So does a setting of this device alone.
        hub.settings.set_device_settings(device_id, {"brightness": 40}, origin="test")
        event = runner.wait_for(settings_event(first["version"] + 2), "the device setting")
        assert event["desired"] == {"theme": "dark", "brightness": 40}
        synced = wait_synced(hub, device_id)
        assert synced.reported == {"theme": "dark", "brightness": 40}
        assert synced.applied_version == synced.desired_version == first["version"] + 2

        # A button on the device, through the running `run`.
        rc, outcome = cli_set(path, capsys, "volume=7")
        assert rc == 0, outcome
        assert outcome["event"] == "set_ok" and outcome["version"] == first["version"] + 3
        assert view(hub, device_id).settings["volume"] == 7
        ran = runner.wait_for(lambda e: e["event"] == "set_ok", "run's set_ok")
        assert ran == outcome
        # The hub sends the change back as desired before its reply.
        assert runner.seen[-2] == {
            "event": "settings",
            "desired": {"theme": "dark", "brightness": 40, "volume": 7},
            "version": first["version"] + 3,
        }
        wait_synced(hub, device_id)

        # The account's preferences are not the device's to change.
        rc, refused = cli_set(path, capsys, "theme=light")
        assert rc == 1
        assert refused["event"] == "error" and refused["error"] == "not_owned", refused
        ran = runner.wait_for(lambda e: e["event"] == "error", "run's refusal")
        assert ran["error"] == "not_owned"
        assert view(hub, device_id).desired["theme"] == "dark"
    finally:
        assert runner.close() == 0
    assert not any(e["event"] == "error" and e["error"] != "not_owned" for e in runner.seen), runner.seen

    # Offline: two changes the device cannot hear.
    hub.settings.set_preferences(account_id, {"theme": "light"}, origin="test")
    hub.settings.set_preferences(account_id, {"font": "large"}, origin="test")
    offline = view(hub, device_id)
    assert offline.desired_version == first["version"] + 5
    assert offline.applied_version == first["version"] + 3

    runner = RunThread(path).start()
    try:
        caught_up = runner.wait_for(settings_event(), "the settings after reconnecting")
        assert caught_up["version"] == offline.desired_version
        assert caught_up["desired"] == offline.desired
        assert caught_up["desired"] == {"theme": "light", "font": "large", "brightness": 40, "volume": 7}
        wait_synced(hub, device_id)
    finally:
        assert runner.close() == 0
    saved = json.loads(path.read_text())["settings"]
    assert saved == {"desired": offline.desired, "version": offline.desired_version}

    # No `run`: `set` connects as the device itself.
    rc, outcome = cli_set(path, capsys, "volume=9", 'eq={"bass": 2}')
    assert rc == 0, outcome
    assert outcome["event"] == "set_ok" and outcome["version"] == offline.desired_version + 1
    assert view(hub, device_id).settings == {"brightness": 40, "volume": 9, "eq": {"bass": 2}}
    after = wait_synced(hub, device_id)  # it reported what it applied before disconnecting
    assert json.loads(path.read_text())["settings"]["version"] == after.desired_version
