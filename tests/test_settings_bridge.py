"""The settings bridge on a real mosquitto: desired documents, reports, refusals,
fan-out to many devices, and the outbox to the (built-in) account service."""

from __future__ import annotations

import json
import queue
import threading
import time
from pathlib import Path

import pytest
from conftest import HubFactory, RunningBroker, wait_until
from device_doubles import DeviceThread, RawClient

import linkhub_protocol as protocol
from hub.core.accounts import ChangeKind
from hub.daemon import Hub
from linkhub_protocol import DeviceReply, SettingsDesired, SettingsGet, SettingsReported, SettingsSet


def link_devices(hub: Hub, broker: RunningBroker, directory: Path, account_id: int, count: int) -> list[dict]:
    """Link `count` devices through the real flow; their saved state files' contents."""
    devices = [
        DeviceThread(broker.port, directory / f"device-{n}.json", name=f"Lamp {n}").start()
        for n in range(count)
    ]
    for device in devices:
        hub.links.approve(device.wait_code(), account_id)
    for device in devices:
        assert device.join() == 0
    return [device.saved_state() for device in devices]


class DeviceClient:
    """A linked device speaking the settings protocol by hand (MQTT 5)."""

    def __init__(self, broker: RunningBroker, state: dict) -> None:
        self.device_id: str = state["device_id"]
        self.client = RawClient(
            broker.port, state["mqtt"]["username"], state["mqtt"]["password"], client_id=self.device_id
        )
        assert not self.client.connack_reason.is_failure
        for leaf in (protocol.SETTINGS_DESIRED, protocol.DEVICE_REPLY):
            assert self.client.subscribe(protocol.device_topic(self.device_id, leaf))

    def send(self, leaf: str, payload: bytes) -> None:
        assert self.client.publish(protocol.device_topic(self.device_id, leaf), payload)

    def get(self) -> SettingsDesired:
        """The documented reconnect order: subscribed already, then get; changes
        that arrive before the full document are not newer than it, so dropped."""
        self.send(protocol.SETTINGS_GET, protocol.encode(SettingsGet("g1")))
        desired = self.desired()
        while not desired.full:
            desired = self.desired()
        return desired

    def desired(self, timeout_s: float = 10) -> SettingsDesired:
        message = self.next_on(protocol.SETTINGS_DESIRED, timeout_s)
        parsed = protocol.parse_settings_desired(message)
        assert isinstance(parsed, SettingsDesired), parsed
        return parsed

    def reply(self, timeout_s: float = 10) -> DeviceReply:
        parsed = protocol.parse_device_reply(self.next_on(protocol.DEVICE_REPLY, timeout_s))
        assert isinstance(parsed, DeviceReply), parsed
        return parsed

    def next_on(self, leaf: str, timeout_s: float) -> bytes:
        deadline = time.monotonic() + timeout_s
        while True:
            message = self.client.next_message(max(0.01, deadline - time.monotonic()))
            if message.topic == protocol.device_topic(self.device_id, leaf):
                return bytes(message.payload)

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def account_id(hub: Hub) -> int:
    return hub.accounts.create("alice", "correct horse battery").id


@pytest.fixture
def lamp(hub: Hub, broker: RunningBroker, tmp_path: Path, account_id: int) -> DeviceClient:
    (state,) = link_devices(hub, broker, tmp_path, account_id, 1)
    device = DeviceClient(broker, state)
    yield device
    device.close()


def test_a_device_gets_its_whole_document_then_changes(hub: Hub, lamp: DeviceClient, account_id: int) -> None:
    hub.settings.set_preferences(account_id, {"theme": "dark", "tz": "Europe/Oslo"}, origin="test")
    full = lamp.get()
    assert full.desired == {"theme": "dark", "tz": "Europe/Oslo"}

    hub.settings.set_device_settings(lamp.device_id, {"theme": "light", "brightness": 40}, origin="test")
    change = lamp.desired()
    assert (change.full, change.version) == (False, full.version + 1)
    assert change.desired == {"theme": "light", "brightness": 40}

    hub.settings.set_preferences(
        account_id, {"theme": "solarized"}, origin="test"
    )  # hidden by the device's own
    hub.settings.set_preferences(account_id, {"tz": None}, origin="test")
    removal = lamp.desired()
    assert (removal.version, removal.desired) == (change.version + 1, {"tz": None})

    lamp.send(
        protocol.SETTINGS_REPORTED, protocol.encode(SettingsReported(removal.version, {"theme": "light"}))
    )
    wait_until(lambda: hub.settings.device_view(lamp.device_id).applied_version == removal.version)
    view = hub.settings.device_view(lamp.device_id)
    assert view.synced and view.reported == {"theme": "light"}
    assert view.delta == {"brightness": 40}


def test_a_change_made_on_the_device_is_recorded_and_acknowledged(
    hub: Hub, lamp: DeviceClient, account_id: int
) -> None:
    hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")
    version = lamp.get().version
    lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("button-1", version, {"volume": 7})))
    echo = lamp.desired()
    assert echo.desired == {"volume": 7} and echo.version == version + 1
    reply = lamp.reply()
    assert reply.ok and reply.request_id == "button-1" and reply.version == version + 1
    assert hub.settings.device_view(lamp.device_id).settings == {"volume": 7}


TOO_LARGE = {"blob": "x" * 9000}
SEVEN_LEVELS = {"a": {"b": {"c": {"d": {"e": {"f": {"g": 1}}}}}}}


@pytest.mark.parametrize(
    ("leaf", "payload", "error"),
    [
        (protocol.SETTINGS_REPORTED, b"{not json", "invalid_request"),
        (protocol.SETTINGS_REPORTED, b'{"v":1,"type":"reported","applied_version":"x","reported":{}}',
         "invalid_request"),
        (protocol.SETTINGS_REPORTED, protocol.encode(SettingsReported(1, TOO_LARGE)), "payload_too_large"),
        (protocol.SETTINGS_REPORTED, protocol.encode(SettingsReported(99, {})), "invalid_request"),
        (protocol.SETTINGS_REPORTED, protocol.encode(SettingsReported(1, {"$hub": 1})), "not_owned"),
        (protocol.SETTINGS_SET, protocol.encode(SettingsSet("r1", 1, {"theme": "light"})), "not_owned"),
        (protocol.SETTINGS_SET, protocol.encode(SettingsSet("r2", 1, SEVEN_LEVELS)), "invalid_request"),
        (protocol.SETTINGS_SET, b'{"v":2,"type":"settings_set"}', "unsupported_version"),
        (protocol.SETTINGS_GET, b"[]", "invalid_request"),
    ],
    ids=["not-json", "bad-version-field", "too-large", "future-version", "reserved-key", "account-key",
         "too-deep", "protocol-version", "not-an-object"],
)  # fmt: skip
def test_bad_device_messages_are_refused_on_the_reply_topic(
    hub: Hub, lamp: DeviceClient, account_id: int, leaf: str, payload: bytes, error: str
) -> None:
    hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")
    before = hub.settings.device_view(lamp.device_id)
    lamp.send(leaf, payload)
    reply = lamp.reply()
    assert not reply.ok and reply.error == error, reply
    assert hub.settings.device_view(lamp.device_id) == before  # nothing else changed
    assert lamp.get().version == before.desired_version  # and the hub still answers


def test_a_stale_change_from_the_device_loses_to_a_newer_one(hub: Hub, lamp: DeviceClient) -> None:
    base = lamp.get().version
    hub.settings.set_device_settings(lamp.device_id, {"volume": 3}, origin="web")
    newer = lamp.desired().version
    lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("late", base, {"volume": 9})))
    reply = lamp.reply()
    assert not reply.ok and reply.error == "version_conflict"
    assert hub.settings.device_view(lamp.device_id).settings == {"volume": 3}
    # Based on the newer version, the same change is accepted.
    lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("fresh", newer, {"volume": 9})))
    assert lamp.desired().desired == {"volume": 9}
    assert lamp.reply().ok


def test_an_offline_device_catches_up_on_reconnect(
    hub: Hub, broker: RunningBroker, tmp_path: Path, account_id: int
) -> None:
    (state,) = link_devices(hub, broker, tmp_path, account_id, 1)
    device_id = state["device_id"]
    hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")  # nobody connected
    hub.settings.set_device_settings(device_id, {"volume": 4}, origin="test")
    hub.settings.set_preferences(account_id, {"locale": "nb_NO"}, origin="test")
    device = DeviceClient(broker, state)
    full = device.get()
    assert full.desired == {"theme": "dark", "volume": 4, "locale": "nb_NO"}
    assert full.version == hub.settings.device_view(device_id).desired_version
    with pytest.raises(queue.Empty):  # nothing was retained or queued to replay
        device.client.next_message(0.3)
    device.close()


def test_fifty_devices_on_one_account_all_receive_a_change(
    hub: Hub, broker: RunningBroker, tmp_path: Path, account_id: int
) -> None:
    states = link_devices(hub, broker, tmp_path, account_id, 50)
    devices = [DeviceClient(broker, state) for state in states]
    try:
        versions = {device.device_id: device.get().version for device in devices}
        hub.settings.set_preferences(account_id, {"temperature_unit": "C"}, origin="test")
        for device in devices:
            change = device.desired()
            assert change.desired == {"temperature_unit": "C"}
            assert change.version == versions[device.device_id] + 1
    finally:
        for device in devices:
            device.close()


def test_every_change_reaches_the_built_in_account_service_once_in_order(
    hub: Hub, lamp: DeviceClient, account_id: int
) -> None:
    hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="web")
    for volume in range(5):
        hub.settings.set_device_settings(lamp.device_id, {"volume": volume}, origin="cli")
    wait_until(lambda: hub.outbox.pending() == 0, what="outbox drained")
    log = [entry.change for entry in hub.accounts.changes()]
    assert [(c.kind, c.patch) for c in log] == [(ChangeKind.PREFERENCES, {"theme": "dark"})] + [
        (ChangeKind.DEVICE_SETTINGS, {"volume": v}) for v in range(5)
    ]
    assert len({c.change_id for c in log}) == len(log)
    assert hub.accounts.device_settings(lamp.device_id).document == {"volume": 4}
    assert hub.accounts.preferences(account_id).document == {"theme": "dark"}


def test_pending_changes_survive_a_hub_restart(make_hub: HubFactory, tmp_path: Path) -> None:
    first = make_hub(data_dir=tmp_path / "hub")
    account_id = first.accounts.create("alice", "correct horse battery").id
    first.outbox.stop()  # as if the account service had been away
    first.settings.set_preferences(account_id, {"theme": "dark"}, origin="web")
    first.settings.set_preferences(account_id, {"locale": "en_GB"}, origin="web")
    assert first.outbox.pending() == 2
    first.stop()
    second = make_hub(data_dir=tmp_path / "hub")
    wait_until(lambda: second.outbox.pending() == 0, what="outbox drained after restart")
    assert [json.dumps(e.change.patch) for e in second.accounts.changes()] == [
        '{"theme": "dark"}',
        '{"locale": "en_GB"}',
    ]


def test_a_preference_that_would_overfill_a_device_is_refused_whole(
    hub: Hub, lamp: DeviceClient, account_id: int
) -> None:
    from hub.errors import SettingsRefused

    hub.settings.set_device_settings(lamp.device_id, {"notes": "x" * 5000}, origin="test")
    before = hub.settings.preferences(account_id)
    with pytest.raises(SettingsRefused) as info:
        hub.settings.set_preferences(account_id, {"wallpaper": "y" * 5000}, origin="test")
    assert info.value.code == "payload_too_large" and "Lamp 0" in str(info.value)
    assert hub.settings.preferences(account_id) == before


def test_a_change_sent_just_before_the_hub_stops_gets_its_answer(
    hub: Hub, lamp: DeviceClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM (Hub.stop): unsubscribe, answer what had arrived, then disconnect."""
    version = lamp.get().version
    handling, go_on = threading.Event(), threading.Event()
    handle = hub.settings.handle_device_message

    def slow_handle(device_id: str, leaf: str, payload: bytes) -> None:
        if leaf == protocol.SETTINGS_SET:
            handling.set()
            go_on.wait(15)
        handle(device_id, leaf, payload)

    monkeypatch.setattr(hub.settings, "handle_device_message", slow_handle)
    lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("just-before", version, {"volume": 3})))
    assert handling.wait(10), "the change did not arrive"
    stopping = threading.Thread(target=hub.stop, daemon=True)
    stopping.start()
    connection = hub.main_connection
    assert connection is not None
    # The stop has begun: the hub no longer listens (new), or is disconnected (old).
    wait_until(
        lambda: not connection._subscriptions or not connection.connected.is_set(), what="the stop to begin"
    )
    go_on.set()
    reply = lamp.reply()
    assert reply.ok and reply.request_id == "just-before" and reply.version == version + 1
    stopping.join(15)
    assert not stopping.is_alive()
    assert hub.settings.device_view(lamp.device_id).settings == {"volume": 3}
