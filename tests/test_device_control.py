"""What a linked device has and does (issue 15), against a real hub on a real
mosquitto: simulated devices with a profile describe themselves and report
their state; the hub keeps the last value of each component, checks commands
against the description and sends them; the device obeys and answers with its
new state. Bad descriptions, states and commands are refused with a reason,
and a device cannot speak on another device's topics."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RunningBroker, wait_until
from device_doubles import DeviceThread, RawClient
from test_unlink import RunThread

import linkhub_protocol as protocol
from firmware_sim import state as state_file
from hub.core.origin import Origin
from hub.daemon import Hub
from hub.errors import CommandRefused
from hub.services.activity import ActivityKind

pytestmark = pytest.mark.timeout(120)


def commands_recorded(hub: Hub, account_id: int, count: int) -> list[str]:
    """The account's recorded commands, newest first, once there are `count` of them:
    the hub records commands off their path, a moment later (hub/services/device_control.py)."""

    def recorded() -> list[str]:
        return [e.detail for e in hub.activity.recent(account_id) if e.kind is ActivityKind.COMMAND_SENT]

    wait_until(lambda: len(recorded()) >= count, what=f"{count} command(s) in the activity log")
    return recorded()


def account(hub: Hub) -> int:
    return hub.accounts.create("ann", "correct horse battery staple").id


def link_profile(
    hub: Hub, broker: RunningBroker, path: Path, account_id: int, profile: str, name: str
) -> str:
    device = DeviceThread(broker.port, path, name=name, profile=profile).start()
    device_id = hub.links.approve(device.wait_code(), account_id).device_id
    assert device.join() == 0
    return device_id


@pytest.fixture
def owner(hub: Hub) -> int:
    return account(hub)


@pytest.fixture
def lamp(hub: Hub, broker: RunningBroker, tmp_path: Path, owner: int) -> Iterator[tuple[str, RunThread]]:
    device_id = link_profile(hub, broker, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    running = RunThread(tmp_path / "lamp.json")
    running.wait_for("online")
    wait_until(lambda: hub.control.state_of(device_id), what="the lamp's first state")
    yield device_id, running
    running.close()


def device_client(broker: RunningBroker, path: Path) -> tuple[str, RawClient]:
    """A raw client on a linked device's own identity (from its state file)."""
    st = state_file.load(path)
    assert st.device_id is not None and st.mqtt is not None
    client = RawClient(broker.port, st.mqtt.username, st.mqtt.password, client_id=st.mqtt.client_id)
    assert not client.connack_reason.is_failure
    return st.device_id, client


def test_a_lamp_describes_itself_reports_state_and_obeys_a_command(
    hub: Hub, lamp: tuple[str, RunThread], owner: int
) -> None:
    device_id, running = lamp
    description = hub.control.description(device_id)
    assert description is not None
    assert [(c.key, str(c.kind)) for c in description.components] == [("light", "light")]
    assert description.manufacturer == "LinkHub Simulator"
    assert hub.control.state_of(device_id) == {"light": {"on": True, "brightness": 200}}

    sent = hub.control.send_command(device_id, "light", {"on": False}, origin=Origin.WEB, account_id=owner)
    obeyed = running.wait_for("command")
    assert obeyed["component"] == "light" and obeyed["state"] == {"on": False, "brightness": 200}
    wait_until(lambda: hub.control.state_of(device_id)["light"]["on"] is False, what="the new state")
    views = hub.control.components(device_id)
    assert views[0].value == {"on": False, "brightness": 200} and views[0].known
    assert commands_recorded(hub, owner, 1) == ["Light: off (on the web page)"]
    assert sent.command_id and sent.value == {"on": False}

    hub.control.send_command(device_id, "light", {"brightness": 51}, origin=Origin.WEB, account_id=owner)
    assert running.wait_for("command")["state"] == {"on": False, "brightness": 51}


def test_commands_are_checked_against_the_description(
    hub: Hub, broker: RunningBroker, tmp_path: Path, owner: int
) -> None:
    path = tmp_path / "thermostat.json"
    device_id = link_profile(hub, broker, path, owner, "thermostat", "Hall Thermostat")
    running = RunThread(path)
    try:
        running.wait_for("online")
        wait_until(lambda: hub.control.state_of(device_id), what="the thermostat's state")
        refusals = {
            ("target", 31): "invalid_value",  # above max
            ("target", 20.25): "invalid_value",  # not on a 0.5 step
            ("mode", "turbo"): "invalid_value",  # not an option
            ("temperature", 20): "invalid_value",  # a sensor only reports
            ("boost", True): "invalid_value",  # a press carries no value
            ("fan", True): "unknown_component",
        }
        for (key, value), reason in refusals.items():
            with pytest.raises(CommandRefused) as refused:
                hub.control.send_command(device_id, key, value, origin=Origin.WEB, account_id=owner)
            assert refused.value.reason == reason, (key, value, str(refused.value))
        with pytest.raises(CommandRefused) as refused:
            hub.control.send_command(device_id, "target", 22, origin=Origin.WEB, account_id=owner + 1)
        assert refused.value.reason == "unknown_device"

        hub.control.send_command(device_id, "target", 22.5, origin=Origin.WEB, account_id=owner)
        assert running.wait_for("command")["state"] == 22.5
        hub.control.send_command(device_id, "boost", None, origin=Origin.WEB, account_id=owner)
        assert running.wait_for("command")["component"] == "boost"
        wait_until(lambda: hub.control.state_of(device_id)["target"] == 23.5, what="boost raised the target")
    finally:
        running.close()


def test_a_command_for_an_offline_device_is_refused_at_once(
    hub: Hub, lamp: tuple[str, RunThread], owner: int
) -> None:
    device_id, running = lamp
    assert running.close() == 0
    wait_until(lambda: not hub.links.linked_device(device_id, owner).online, what="the lamp offline")  # type: ignore[union-attr]
    with pytest.raises(CommandRefused) as refused:
        hub.control.send_command(device_id, "light", {"on": True}, origin=Origin.WEB, account_id=owner)
    assert refused.value.reason == "device_offline"
    assert "not kept for later" in str(refused.value)


def reply_after(client: RawClient, device_id: str, topic_leaf: str, payload: bytes) -> dict:
    assert client.publish(protocol.device_topic(device_id, topic_leaf), payload)
    message = client.next_message()
    assert message.topic == protocol.device_topic(device_id, protocol.DEVICE_REPLY)
    reply: dict = json.loads(message.payload)
    return reply


def test_bad_descriptions_and_states_are_refused_with_a_reason(
    hub: Hub, lamp: tuple[str, RunThread], broker: RunningBroker, tmp_path: Path
) -> None:
    device_id, running = lamp
    running.close()
    device_id, client = device_client(broker, tmp_path / "lamp.json")
    try:
        assert client.subscribe(protocol.device_topic(device_id, protocol.DEVICE_REPLY))
        good = json.loads(protocol.encode(hub.control.description(device_id)))  # type: ignore[arg-type]
        cases = {
            "a sensor said to be commandable": {
                **good,
                "components": [{"key": "t", "kind": "sensor", "name": "T", "commandable": True}],
            },
            "an unknown kind": {**good, "components": [{"key": "t", "kind": "toaster", "name": "T"}]},
            "a number without a range": {**good, "components": [{"key": "n", "kind": "number", "name": "N"}]},
            "two components with one key": {**good, "components": [good["components"][0]] * 2},
            "no components": {**good, "components": []},
        }
        for what, body in cases.items():
            reply = reply_after(client, device_id, protocol.DESCRIPTION, json.dumps(body).encode())
            assert reply["status"] == "error" and reply["error"] == "invalid_request", what
            assert reply["error_description"], what
        oversized = {**good, "model": "x" * 9000}
        reply = reply_after(client, device_id, protocol.DESCRIPTION, json.dumps(oversized).encode())
        assert reply["error"] == "payload_too_large"
        assert [c.key for c in hub.control.description(device_id).components] == ["light"]  # type: ignore[union-attr]

        states = {
            "brightness out of range": {"light": {"on": True, "brightness": 300}},
            "a component it does not have": {"light": {"on": True, "brightness": 3}, "fan": True},
            "a light given as a bare switch": {"light": True},
            "a value missing": {},
        }
        for what, state in states.items():
            body = json.dumps({"v": 1, "type": "state", "state": state}).encode()
            reply = reply_after(client, device_id, protocol.STATE, body)
            assert reply["status"] == "error" and reply["error"] == "invalid_request", what
        assert hub.control.state_of(device_id) == {"light": {"on": True, "brightness": 200}}
        # The broker retained the last refused one; the hub puts the last good state back,
        # so that Home Assistant (which reads the topic itself) never shows a refused value.
        assert client.subscribe(protocol.device_topic(device_id, protocol.STATE))
        deadline = time.monotonic() + 10
        retained = None
        while retained != {"light": {"on": True, "brightness": 200}} and time.monotonic() < deadline:
            message = client.next_message()
            if message.topic.endswith("/state"):
                retained = json.loads(message.payload)["state"]
        assert retained == {"light": {"on": True, "brightness": 200}}
    finally:
        client.close()


def test_a_device_cannot_publish_on_another_devices_topics(
    hub: Hub, broker: RunningBroker, tmp_path: Path, owner: int
) -> None:
    lamp_id = link_profile(hub, broker, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    plug_id = link_profile(hub, broker, tmp_path / "plug.json", owner, "plug", "Desk Plug")
    _, plug = device_client(broker, tmp_path / "plug.json")
    try:
        forged = protocol.encode(protocol.StateReport({"light": {"on": False, "brightness": 0}}))
        assert not plug.publish(protocol.device_topic(lamp_id, protocol.STATE), forged)
        description = protocol.encode(hub.control.description(plug_id) or _plug_description())
        assert not plug.publish(protocol.device_topic(lamp_id, protocol.DESCRIPTION), description)
        assert plug.publish(protocol.device_topic(plug_id, protocol.DESCRIPTION), description)
        # Commands come only from the hub.
        command = protocol.encode(protocol.Command("c" * 22, "light", {"on": False}))
        assert not plug.publish(protocol.device_topic(lamp_id, protocol.COMMAND), command)
        assert not plug.publish(protocol.device_topic(plug_id, protocol.COMMAND), command)
    finally:
        plug.close()


def _plug_description() -> protocol.DeviceDescription:
    from firmware_sim.profiles import PROFILES

    return PROFILES["plug"].description("PLG-1")
