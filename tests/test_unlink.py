"""Unlinking a device, against a real hub on a real mosquitto 2.0: the broker
drops it at once and refuses its credentials afterwards, its retained topics
are emptied, its settings stay as history, and the simulated firmware reports
`unlinked`, forgets its credentials and links again. Through the service, the
web page, the JSON API and the `linkhub` command."""

from __future__ import annotations

import json
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import HubFactory, RunningBroker, wait_until
from device_doubles import BootstrapDevice, DeviceThread, RawClient
from sqlalchemy import event, update
from sqlmodel import Session, select
from test_shell_path import DEVICE, RunningHub, device_link, events, read_lines_until, started_hub
from test_web import PASSWORD, page, sign_in, token, web_app

import linkhub_protocol as protocol
from firmware_sim import cli as device_cli
from firmware_sim import state as state_file
from firmware_sim.link import link
from firmware_sim.mqtt_client import ConnectionLost, DeviceMqttClient
from firmware_sim.run import EXIT_UNLINKED, run
from hub.broker.connection import BrokerAddress
from hub.broker.dynsec import DynSecAdmin, device_role
from hub.broker.managed import ADMIN_USERNAME
from hub.daemon import Hub
from hub.errors import BrokerAdminError, SettingsRefused, UnlinkRefused
from hub.services.activity import ActivityKind
from hub.store.models import (
    ChangeLogEntry,
    Device,
    DeviceSettingsRecord,
    DeviceShadow,
    LinkRequestRecord,
    OutboxEntry,
)
from linkhub_protocol import DeviceInfo, ErrorCode, ErrorReply

Event = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------
class RunThread:
    """`linkhub-device run` (firmware_sim.run.run) in a thread, its events in a queue."""

    def __init__(self, state_path: Path, *, mqtt5: bool = True) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        self.stop = threading.Event()
        self.exit_code: int | None = None
        self.seen: list[Event] = []
        self._thread = threading.Thread(
            target=lambda: setattr(
                self, "exit_code", run(state_path, on_event=self.events.put, stop=self.stop, mqtt5=mqtt5)
            ),
            daemon=True,
        )
        self._thread.start()

    def wait_for(self, kind: str, timeout_s: float = 15) -> Event:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"no {kind} event; events so far: {self.seen}") from None
            self.seen.append(event)
            if event["event"] == kind:
                return event

    def join(self, timeout_s: float = 15) -> int:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "run did not stop"
        assert self.exit_code is not None
        return self.exit_code

    def close(self) -> int:
        self.stop.set()
        return self.join()


def link_device(
    hub: Hub, broker: RunningBroker, path: Path, account_id: int, name: str = "Kitchen Lamp"
) -> str:
    """Link the simulated firmware (state in `path`) for `account_id`; its device id."""
    device = DeviceThread(broker.port, path, name=name).start()
    device_id = hub.links.approve(device.wait_code(), account_id).device_id
    assert device.join() == 0
    return device_id


def hub_client(hub: Hub, broker: RunningBroker) -> RawClient:
    """A client on the hub's own identity (it may read the whole LinkHub tree)."""
    data_dir = hub.config.data_dir
    username = "linkhub-hub-" + (data_dir / "hub-id").read_text().strip()
    client = RawClient(broker.port, username, (data_dir / "hub-password").read_text().strip())
    assert not client.connack_reason.is_failure
    return client


def retained_under(
    hub: Hub, broker: RunningBroker, device_id: str, settle_s: float = 1.0
) -> dict[str, bytes]:
    """What the broker retains under the device's topics, as a new subscriber sees it."""
    client = hub_client(hub, broker)
    try:
        assert client.subscribe(f"{protocol.device_root(device_id)}/#")
        found: dict[str, bytes] = {}
        deadline = time.monotonic() + settle_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                message = client.next_message(left)
            except queue.Empty:
                break
            if message.retain:
                found[message.topic] = bytes(message.payload)
        return found
    finally:
        client.close()


def rows(hub: Hub, model: Any, device_id: str) -> list[dict[str, Any]]:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        return [
            row.model_dump() for row in session.exec(select(model).where(model.device_id == device_id)).all()
        ]


def accounts(hub: Hub) -> tuple[int, int]:
    return hub.accounts.create("alice", PASSWORD).id, hub.accounts.create("bob", PASSWORD).id


# --- the service, on the real broker -------------------------------------------------------------
@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_unlink_drops_the_device_at_once_and_run_reports_it(
    hub: Hub, broker: RunningBroker, tmp_path: Path, mqtt5: bool
) -> None:
    alice, _bob = accounts(hub)
    path = tmp_path / "lamp.json"
    device_id = link_device(hub, broker, path, alice)
    password = state_file.load(path).mqtt.password  # type: ignore[union-attr]
    runner = RunThread(path, mqtt5=mqtt5)
    runner.wait_for("online")
    wait_until(lambda: hub.links.list_devices(alice)[0].online, what="the hub to see it online")

    unlinked = hub.links.unlink(device_id, alice, origin="web", address="192.168.1.7")
    assert (unlinked.device_id, unlinked.name, unlinked.online) == (device_id, "Kitchen Lamp", False)

    # Dropped, then refused on its first reconnect (no error before it). A deadline,
    # not a speed goal: a newcomer's loaded run once took longer than the 5 s it had
    # here. The drop itself is shown at once by the next test, on the broker.
    assert runner.wait_for("unlinked") == {"event": "unlinked", "device_id": device_id}
    assert runner.join() == EXIT_UNLINKED
    assert not any(e["event"] == "error" for e in runner.seen), runner.seen
    # It forgot the dead credentials and the old settings, and kept what it is.
    saved = state_file.load(path)
    assert (saved.device_id, saved.mqtt, saved.settings, saved.pending) == (None, None, None, None)
    assert (saved.name, saved.model) == ("Kitchen Lamp", "LMP-1")

    # The broker refuses the old credentials from now on (0x86/0x87; 4/5 on 3.1.1).
    stale = RawClient(broker.port, device_id, password, client_id=device_id, mqtt5=mqtt5)
    stale.close()
    assert stale.connack_reason.is_failure and stale.connack_reason.value in (0x86, 0x87)

    assert hub.links.list_devices() == [] and hub.links.list_devices(alice) == []
    (entry,) = [e for e in hub.activity.recent(alice) if e.kind is ActivityKind.DEVICE_UNLINKED]
    assert (entry.device_id, entry.address) == (device_id, "192.168.1.7")
    assert "Kitchen Lamp" in entry.detail and "web page" in entry.detail


def test_a_connected_client_is_disconnected_by_the_unlink_itself(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    alice, _ = accounts(hub)
    path = tmp_path / "lamp.json"
    device_id = link_device(hub, broker, path, alice)
    creds = state_file.load(path).mqtt
    assert creds is not None
    client = DeviceMqttClient(client_id=device_id, username=device_id, password=creds.password)
    client.connect("127.0.0.1", broker.port)
    try:
        assert client.get(0.3) is None  # connected, nothing happening
        hub.links.unlink(device_id, None, origin="cli")
        lost = client.get(2.0)  # the broker drops it while unlinking, before any reconnect
        assert isinstance(lost, ConnectionLost), lost
    finally:
        client.close()
    # Both the client and its role are gone from dynamic security.
    admin = DynSecAdmin(BrokerAddress("127.0.0.1", broker.port), ADMIN_USERNAME, broker.broker.admin_password)
    admin.start()
    try:
        for command in (
            {"command": "getClient", "username": device_id},
            {"command": "getRole", "rolename": device_role(device_id)},
        ):
            with pytest.raises(BrokerAdminError, match="not found"):
                admin.call([command])
    finally:
        admin.stop()


def test_unlink_clears_every_retained_topic_of_the_device(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    creds = state_file.load(tmp_path / "lamp.json").mqtt
    assert creds is not None
    root = protocol.device_root(device_id)
    reported = protocol.device_topic(device_id, protocol.SETTINGS_REPORTED)
    device = RawClient(broker.port, device_id, creds.password, client_id=device_id)
    try:
        assert device.publish(reported, b'{"on": true}', retain=True)  # one of its own topics
        assert not device.publish(f"{root}/sensors/temp", b"21.5", retain=True)  # not one
    finally:
        device.close()
    # Retained by a device linked by an older hub, whose role allowed its whole subtree.
    older = hub_client(hub, broker)
    try:
        assert older.publish(f"{root}/sensors/temp", b"21.5", retain=True)
    finally:
        older.close()
    before = retained_under(hub, broker, device_id)
    assert set(before) == {protocol.device_status_topic(device_id), reported, f"{root}/sensors/temp"}
    assert json.loads(before[protocol.device_status_topic(device_id)])["type"] == "status"

    hub.links.unlink(device_id, alice, origin="web")
    assert retained_under(hub, broker, device_id) == {}
    # The empty status that cleared it was not taken for a status of the device.
    assert rows(hub, Device, device_id)[0]["online"] is False


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # two hubs: PostgreSQL only
def test_a_retained_status_of_an_unlinked_device_is_cleared_when_seen(
    make_hub: HubFactory, database_url: str, broker: RunningBroker, tmp_path: Path
) -> None:
    """A ghost left behind (say, the broker was away while unlinking) is cleared by the hub."""
    hub = make_hub(database_url=database_url)
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    hub.links.unlink(device_id, alice, origin="web")
    ghost = hub_client(hub, broker)
    try:
        online = protocol.encode(protocol.DeviceStatus(online=True))
        assert ghost.publish(protocol.device_status_topic(device_id), online, retain=True)
    finally:
        ghost.close()
    assert set(retained_under(hub, broker, device_id)) == {protocol.device_status_topic(device_id)}
    # Another hub process on the same database subscribes now: it gets the ghost as retained.
    later = make_hub(data_dir=tmp_path / "hub2", database_url=hub.config.database_url)
    wait_until(lambda: retained_under(later, broker, device_id, settle_s=0.3) == {}, what="the ghost cleared")
    assert later.links.list_devices() == [] and rows(hub, Device, device_id)[0]["online"] is False


def test_settings_are_kept_as_history_and_nothing_reaches_them_any_more(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    hub.settings.set_preferences(alice, {"theme": "dark"}, origin="test")
    hub.settings.set_device_settings(device_id, {"brightness": 40}, origin="test")
    assert hub.engine is not None

    def delivered() -> bool:
        with Session(hub.engine) as session:
            return all(e.delivered_at_s is not None for e in session.exec(select(OutboxEntry)).all())

    wait_until(delivered, what="the account service to have every change")
    history = {
        model: rows(hub, model, device_id) for model in (DeviceShadow, DeviceSettingsRecord, ChangeLogEntry)
    }
    assert history[DeviceShadow] and history[DeviceSettingsRecord] and history[ChangeLogEntry]

    hub.links.unlink(device_id, alice, origin="web")

    assert hub.settings.device_view(device_id) is None
    assert hub.settings.list_views(alice) == []
    with pytest.raises(SettingsRefused) as refused:
        hub.settings.set_device_settings(device_id, {"brightness": 70}, origin="test")
    assert refused.value.code == "unknown_device"
    hub.settings.set_preferences(alice, {"theme": "light"}, origin="test")  # not sent to it, not stored on it
    wait_until(delivered, what="the account service to have the preference")
    assert {model: rows(hub, model, device_id) for model in history} == history
    assert rows(hub, Device, device_id)[0]["unlinked_at_s"] is not None


def test_only_the_owner_may_unlink_and_only_once(
    make_hub: HubFactory, database_url: str, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub(database_url=database_url)  # SQLite and PostgreSQL
    alice, bob = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)

    with pytest.raises(UnlinkRefused) as other:
        hub.links.unlink(device_id, bob, origin="web")
    with pytest.raises(UnlinkRefused) as unknown:
        hub.links.unlink("dev-000000000000", bob, origin="web")
    # Bob learns nothing from Alice's device id: the same refusal as an id that does not exist.
    assert other.value.reason == unknown.value.reason == "unknown_device"
    assert str(other.value) == str(unknown.value).replace("dev-000000000000", device_id)
    assert [d.device_id for d in hub.links.list_devices(alice)] == [device_id]

    hub.links.unlink(device_id, alice, origin="web")
    with pytest.raises(UnlinkRefused) as again:
        hub.links.unlink(device_id, alice, origin="web")
    assert again.value.reason == "already_unlinked" and "already unlinked" in str(again.value)
    with pytest.raises(UnlinkRefused) as bob_again:  # still nothing for Bob to learn
        hub.links.unlink(device_id, bob, origin="web")
    assert bob_again.value.reason == "unknown_device"


def test_a_device_unlinked_before_it_connected_is_never_handed_its_dead_credentials(
    hub: Hub, broker: RunningBroker
) -> None:
    alice, _ = accounts(hub)
    device = BootstrapDevice(broker.port, DeviceInfo(name="Desk Fan", model="FAN-2"))
    try:
        pending = device.request()
        approved = hub.links.approve(pending.user_code, alice)
        device.wait_reply()  # the pushed approval, which this device "loses"
        hub.links.unlink(approved.device_id, alice, origin="web")
        device.send()  # its poll
        reply = device.wait_reply()
        assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.ALREADY_LINKED, reply
    finally:
        device.close()
    (record,) = rows(hub, LinkRequestRecord, approved.device_id)
    assert record["issued_password"] is None


def test_the_same_device_links_again_with_a_new_id(hub: Hub, broker: RunningBroker, tmp_path: Path) -> None:
    alice, _ = accounts(hub)
    path = tmp_path / "lamp.json"
    old_id = link_device(hub, broker, path, alice)
    runner = RunThread(path)
    runner.wait_for("online")
    hub.links.unlink(old_id, alice, origin="web")
    assert runner.join() == EXIT_UNLINKED

    new_id = link_device(hub, broker, path, alice)  # the same state file, as `linkhub-device link` does
    assert new_id != old_id
    runner = RunThread(path)
    assert runner.wait_for("online")["device_id"] == new_id
    runner.wait_for("settings")
    assert runner.close() == 0
    assert [d.device_id for d in hub.links.list_devices(alice)] == [new_id]


def test_a_device_unlinked_while_off_links_again_without_deleting_its_file(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    """Issue 14 item 4: `link` on a state file whose credentials the hub has since
    deleted finds out from the broker, forgets them and links anew; credentials
    that still work are kept, and `link` says to run the device instead."""
    alice, _ = accounts(hub)
    path = tmp_path / "lamp.json"
    old_id = link_device(hub, broker, path, alice)
    refused: list[dict[str, Any]] = []
    lamp = DeviceInfo("Kitchen Lamp", "LMP-1", address="127.0.0.1")
    assert link("127.0.0.1", broker.port, lamp, path, mqtt5=True, on_event=refused.append) == 1
    assert [e.get("error") for e in refused] == ["already_linked_locally"]
    assert "the broker takes them" in refused[0]["error_description"]

    hub.links.unlink(old_id, alice, origin="web")  # the device is off: it hears nothing
    new_id = link_device(hub, broker, path, alice)
    assert new_id != old_id
    assert [d.device_id for d in hub.links.list_devices(alice)] == [new_id]


def test_a_button_press_on_an_unlinked_device_finds_out_too(
    hub: Hub, broker: RunningBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`linkhub-device set` connects on its own when no `run` does: refused, it says so the same way."""
    alice, _ = accounts(hub)
    path = tmp_path / "lamp.json"
    device_id = link_device(hub, broker, path, alice)
    hub.links.unlink(device_id, alice, origin="web")
    capsys.readouterr()
    assert device_cli.main(["set", "--state", str(path), "volume=7", "--json"]) == EXIT_UNLINKED
    printed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert printed == [{"event": "unlinked", "device_id": device_id}]
    assert not state_file.load(path).linked


# --- the web page and the JSON API -----------------------------------------------------------
def test_unlink_from_the_device_page(hub: Hub, broker: RunningBroker, tmp_path: Path) -> None:
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    client = web_app(hub).test_client()
    assert sign_in(client, "alice").status_code == 302

    device_page = client.get(f"/devices/{device_id}")
    assert f'action="/devices/{device_id}/unlink"' in page(device_page)
    confirm = client.get(f"/devices/{device_id}/unlink")
    assert confirm.status_code == 200
    assert "Unlink Kitchen Lamp?" in page(confirm) and 'name="confirm" value="yes"' in page(confirm)

    # A post without the confirmation only shows the confirm step.
    unconfirmed = client.post(f"/devices/{device_id}/unlink", data={"csrf_token": token(confirm)})
    assert unconfirmed.status_code == 200 and "Unlink Kitchen Lamp?" in page(unconfirmed)
    # Without the CSRF token nothing happens either.
    forged = client.post(f"/devices/{device_id}/unlink", data={"confirm": "yes"})
    assert forged.status_code == 400
    assert [d.device_id for d in hub.links.list_devices(alice)] == [device_id]

    done = client.post(f"/devices/{device_id}/unlink", data={"csrf_token": token(confirm), "confirm": "yes"})
    assert done.status_code == 303 and done.headers["Location"] == "/devices"
    listed = client.get("/devices")
    assert "Kitchen Lamp is unlinked" in page(listed) and device_id not in page(listed)
    assert hub.links.list_devices(alice) == []
    assert client.get(f"/devices/{device_id}").status_code == 404
    assert client.get(f"/devices/{device_id}/unlink").status_code == 404
    (entry,) = [e for e in hub.activity.recent(alice) if e.kind is ActivityKind.DEVICE_UNLINKED]
    assert entry.device_id == device_id and entry.address == "127.0.0.1"


def test_another_members_device_is_not_found_on_the_page_or_the_api(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    # A member on the owner's device (the owner may unlink a member's on the pages:
    # tests/test_households.py), as on any other account's.
    alice, _bob = accounts(hub)
    alices_device = link_device(hub, broker, tmp_path / "fan.json", alice, name="Desk Fan")
    client = web_app(hub).test_client()
    assert sign_in(client, "bob").status_code == 302
    csrf = token(client.get("/devices"))

    assert client.get(f"/devices/{alices_device}/unlink").status_code == 404
    posted = client.post(f"/devices/{alices_device}/unlink", data={"csrf_token": csrf, "confirm": "yes"})
    assert posted.status_code == 404
    deleted = client.delete(f"/api/v1/devices/{alices_device}", headers={"X-CSRFToken": csrf})
    unknown = client.delete("/api/v1/devices/dev-000000000000", headers={"X-CSRFToken": csrf})
    assert deleted.status_code == unknown.status_code == 404
    assert (
        deleted.get_json()
        == unknown.get_json()
        == {"error": "not_found", "message": "You have no device with that id."}
    )
    assert [d.device_id for d in hub.links.list_devices(alice)] == [alices_device]


def test_the_delete_api_needs_the_csrf_header(hub: Hub, broker: RunningBroker, tmp_path: Path) -> None:
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    client = web_app(hub).test_client()
    assert client.delete(f"/api/v1/devices/{device_id}").status_code == 400  # no session, no token
    assert sign_in(client, "alice").status_code == 302

    # The session cookie alone, as a page of another app on this host could send it: refused.
    forged = client.delete(f"/api/v1/devices/{device_id}")
    assert forged.status_code == 400 and forged.get_json()["error"] == "csrf_failed"
    wrong = client.delete(f"/api/v1/devices/{device_id}", headers={"X-CSRFToken": secrets.token_hex(20)})
    assert wrong.status_code == 400
    assert [d.device_id for d in hub.links.list_devices(alice)] == [device_id]

    csrf = token(client.get("/devices"))
    done = client.delete(f"/api/v1/devices/{device_id}", headers={"X-CSRFToken": csrf})
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert (body["device_id"], body["name"], body["unlinked"], body["online"]) == (
        device_id,
        "Kitchen Lamp",
        True,
        False,
    )
    assert hub.links.list_devices(alice) == []
    assert client.get("/api/v1/devices").get_json() == {"devices": []}
    again = client.delete(f"/api/v1/devices/{device_id}", headers={"X-CSRFToken": csrf})
    assert again.status_code == 409 and again.get_json()["error"] == "already_unlinked"
    (entry,) = [e for e in hub.activity.recent(alice) if e.kind is ActivityKind.DEVICE_UNLINKED]
    assert "web API" in entry.detail


# --- the shell, as a person runs it ------------------------------------------------------------
@pytest.fixture
def shell_hub(tmp_path: Path) -> Iterator[RunningHub]:
    with started_hub(tmp_path / "data") as running:
        added = running.cli("account", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
        yield running


def shell_link(hub: RunningHub, state: Path) -> str:
    device = device_link(hub, state)
    (code,) = events(device, until="code")
    approved = hub.cli("link", "approve", code["user_code"], "--account", "alice")
    assert approved.returncode == 0, approved.stderr
    (linked,) = events(device, until="linked")
    assert device.wait(timeout=10) == 0
    return str(linked["device_id"])


def test_unlink_from_the_shell_and_link_again(shell_hub: RunningHub, tmp_path: Path) -> None:
    state = tmp_path / "lamp.json"
    device_id = shell_link(shell_hub, state)
    runner = subprocess.Popen(
        [DEVICE, "run", "--state", str(state), "--json"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert runner.stdout is not None
        (online,) = events(runner, until="online")
        assert online["device_id"] == device_id

        unlinked = shell_hub.cli("devices", "unlink", device_id)
        assert unlinked.returncode == 0, unlinked.stderr
        assert unlinked.stdout.startswith(f"unlinked: Kitchen Lamp (LMP-1) {device_id} from alice")
        assert "disconnected" in unlinked.stdout and "credentials are deleted" in unlinked.stdout

        lines = read_lines_until(runner.stdout, lambda line: json.loads(line)["event"] != "settings")
        assert json.loads(lines[-1]) == {"event": "unlinked", "device_id": device_id}
        assert runner.wait(timeout=10) == EXIT_UNLINKED
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert json.loads(shell_hub.cli("devices", "--json").stdout) == []

    again = shell_hub.cli("devices", "unlink", device_id)
    assert again.returncode == 1 and "already unlinked" in again.stderr
    unknown = shell_hub.cli("devices", "unlink", "dev-000000000000")
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "linkhub: There is no linked device 'dev-000000000000'. [unknown_device]"

    # `run` on the forgotten credentials says what to do; `link` links it again.
    rerun = subprocess.run(
        [DEVICE, "run", "--state", str(state), "--json"], capture_output=True, text=True, timeout=30
    )
    assert rerun.returncode == 1 and json.loads(rerun.stdout)["error"] == "not_linked"
    new_id = shell_link(shell_hub, state)
    assert new_id != device_id
    listed = json.loads(shell_hub.cli("devices", "--json").stdout)
    assert [(d["device_id"], d["name"]) for d in listed] == [(new_id, "Kitchen Lamp")]


def test_the_human_output_of_run_says_it_was_unlinked(shell_hub: RunningHub, tmp_path: Path) -> None:
    state = tmp_path / "lamp.json"
    device_id = shell_link(shell_hub, state)
    runner = subprocess.Popen([DEVICE, "run", "--state", str(state)], stdout=subprocess.PIPE, text=True)
    try:
        assert runner.stdout is not None
        read_lines_until(runner.stdout, lambda line: "is online" in line)
        assert shell_hub.cli("devices", "unlink", device_id).returncode == 0
        out, _ = runner.communicate(timeout=15)
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()
    assert runner.returncode == EXIT_UNLINKED
    assert f"The hub unlinked this device ({device_id})" in out and "linkhub-device link" in out


def test_an_approval_that_is_not_stored_leaves_no_broker_identity(
    hub: Hub, broker: RunningBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The broker learns a device's credentials inside the approval's transaction;
    if that transaction then fails, the identity is removed again: otherwise the
    broker would keep credentials no device row names, which nothing could unlink."""
    alice, _ = accounts(hub)
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    issued: list[tuple[str, str]] = []
    issue_device = hub.links.context.issuer.issue_device

    def issue_and_remember(device_id: str, password: str) -> None:
        issue_device(device_id, password)
        issued.append((device_id, password))

    def failing_record(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(hub.links.context.issuer, "issue_device", issue_and_remember)
    monkeypatch.setattr(hub.links.context.activity, "add", failing_record)
    with pytest.raises(RuntimeError, match="disk is full"):
        hub.links.approve(code, alice)
    [(device_id, password)] = issued
    client = RawClient(broker.port, device_id, password, client_id=device_id)
    try:
        assert client.connack_reason.is_failure  # the identity is gone
    finally:
        client.close()
    assert hub.links.list_devices(alice) == []
    monkeypatch.undo()
    # Nothing was stored, so the same code can still be approved.
    assert hub.links.approve(code, alice).account_id == alice
    assert device.join() == 0


def test_a_status_handled_during_the_unlink_does_not_leave_the_device_online(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    """The device's "online" status committed between the unlink's read and its
    write (the hub handles statuses on another thread) must not survive it."""
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    assert hub.engine is not None
    with Session(hub.engine) as session:  # the device went offline when its link procedure ended
        session.execute(update(Device).where(Device.device_id == device_id).values(online=False))
        session.commit()
    raced: list[bool] = []

    def status_arrives_meanwhile(session: Session, _context: Any, _instances: Any) -> None:
        if raced or not any(isinstance(obj, Device) and obj.unlinked_at_s for obj in session.dirty):
            return
        with hub.engine.begin() as elsewhere:  # type: ignore[union-attr]
            elsewhere.execute(update(Device).where(Device.device_id == device_id).values(online=True))
        raced.append(True)

    event.listen(Session, "before_flush", status_arrives_meanwhile)
    try:
        hub.links.unlink(device_id, alice, origin="web")
    finally:
        event.remove(Session, "before_flush", status_arrives_meanwhile)
    assert raced == [True]
    assert rows(hub, Device, device_id)[0]["online"] is False
