# ruff: noqa: F811  (the fixtures imported from test_device_control are parameters here)
"""Home Assistant discovery on the real broker, without Home Assistant (which
tests/test_home_assistant.py drives): the retained configs the hub publishes,
the stale ones it removes at start (a crash between an unlink and its clean-up),
what Home Assistant's identity may and may not do, commands on its topics
checked like a person's, components a new description dropped, and the switch
that turns it all off."""

from __future__ import annotations

import json
import queue
import secrets
import time
from pathlib import Path

import pytest
from conftest import HubFactory, RunningBroker, wait_until
from device_doubles import RawClient
from test_device_control import (  # noqa: F401  (owner and lamp are fixtures, used by name)
    commands_recorded,
    device_client,
    lamp,
    link_profile,
    owner,
)
from test_unlink import RunThread, hub_client

import linkhub_protocol as protocol
from hub.core import home_assistant as ha
from hub.core.origin import Origin
from hub.daemon import Hub
from hub.services.home_assistant import HomeAssistantLogin
from linkhub_protocol import Component, ComponentKind, DeviceDescription

pytestmark = pytest.mark.timeout(120)


def retained_configs(hub: Hub, broker: RunningBroker) -> dict[str, dict]:
    """Every discovery config the broker retains, as a new subscriber (Home Assistant)
    sees it: the retained ones come before a marker published after the SUBACK."""
    client = hub_client(hub, broker)
    try:
        assert client.subscribe(ha.config_subscription())
        marker = ha.config_topic("sensor", "test-marker", secrets.token_hex(8))
        assert client.publish(marker, b"")
        found: dict[str, dict] = {}
        while (message := client.next_message(15)).topic != marker:
            if message.retain and message.payload:
                found[message.topic] = json.loads(message.payload)
        return found
    finally:
        client.close()


def test_a_described_device_and_the_hub_have_retained_configs(
    hub: Hub, broker: RunningBroker, lamp: tuple[str, RunThread]
) -> None:
    device_id, _ = lamp
    topic = ha.config_topic("light", ha.node_id(device_id), "light")
    configs = retained_configs(hub, broker)
    config = configs[topic]
    assert config["unique_id"] == f"linkhub_{device_id}_light"
    assert config["device"]["identifiers"] == [f"linkhub_{device_id}"]
    assert config["device"]["name"] == "Kitchen Lamp" and config["device"]["model"] == "LMP-1"
    assert config["device"]["manufacturer"] == "LinkHub Simulator"
    assert config["device"]["configuration_url"].endswith(f"/devices/{device_id}")
    assert config["device"]["via_device"].startswith("linkhub_hub_")
    assert config["origin"]["name"] == "LinkHub"
    assert config["state_topic"] == protocol.device_topic(device_id, protocol.STATE)
    assert config["command_topic"] == ha.command_topic(device_id, "light")
    assert config["brightness_command_topic"] == ha.command_topic(device_id, "light", ha.BRIGHTNESS)
    assert [a["topic"] for a in config["availability"]] == [
        protocol.device_status_topic(device_id),
        ha.hub_status_topic((hub.config.data_dir / "hub-id").read_text().strip()),
    ]
    hub_node = ha.hub_node_id((hub.config.data_dir / "hub-id").read_text().strip())
    hub_nodes = {t for t in configs if ha.config_node(t) == hub_node}
    assert len(hub_nodes) == 2


def test_the_hub_removes_stale_configs_at_start_and_leaves_others_alone(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """What a crash can leave: a config of a component the device no longer has.
    Another hub's devices and entities (hubs with their own databases may share
    a broker) and other integrations' are not the hub's to remove."""
    hub = make_hub(data_dir=tmp_path / "hub")
    owner = hub.accounts.create("ann", "correct horse battery staple").id
    device_id = link_profile(hub, broker, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    running = RunThread(tmp_path / "lamp.json")
    running.wait_for("online")
    wait_until(lambda: hub.control.description(device_id), what="the lamp's description")
    running.close()
    client = hub_client(hub, broker)
    stale = ha.config_topic("switch", ha.node_id(device_id), "night_mode")
    other_hub = ha.config_topic("sensor", ha.hub_node_id("0a0b0c0d0e0f"), "linked_devices")
    other_hubs_device = ha.config_topic("switch", ha.node_id("dev-0123456789ab"), "power")
    not_ours = ha.config_topic("switch", "zigbee2mqtt_0x00158d0001", "state")
    try:
        for topic in (stale, other_hub, other_hubs_device, not_ours):
            assert client.publish(topic, b'{"name": "x"}', retain=True)
    finally:
        client.close()
    hub.stop()
    hub = make_hub(data_dir=tmp_path / "hub")
    configs = retained_configs(hub, broker)
    assert stale not in configs
    assert ha.config_topic("light", ha.node_id(device_id), "light") in configs
    assert {other_hub, other_hubs_device, not_ours} <= set(configs)
    for topic in (other_hub, other_hubs_device, not_ours):  # the broker is shared: leave it clean
        cleaner = hub_client(hub, broker)
        try:
            cleaner.publish(topic, b"", retain=True)
        finally:
            cleaner.close()


def test_home_assistant_s_identity_reads_and_commands_through_the_hub_only(
    hub: Hub, broker: RunningBroker, lamp: tuple[str, RunThread], owner: int
) -> None:
    device_id, running = lamp
    login = hub.home_assistant_login()
    client = RawClient(broker.port, login.username, login.password)
    assert not client.connack_reason.is_failure
    try:
        assert client.subscribe(ha.config_subscription())
        assert client.subscribe(protocol.device_topic(device_id, protocol.STATE))
        assert client.subscribe(protocol.device_status_topic(device_id))
        assert not client.subscribe(protocol.device_topic(device_id, protocol.SETTINGS_DESIRED))
        assert not client.subscribe(f"{protocol.DEVICES_ROOT}/#")
        # Not on the device's own command topic, not settings, not link requests.
        command = protocol.encode(protocol.Command("c" * 22, "light", {"on": False}))
        assert not client.publish(protocol.device_topic(device_id, protocol.COMMAND), command)
        assert not client.publish(protocol.device_topic(device_id, protocol.SETTINGS_SET), b"{}")
        assert not client.publish(protocol.link_request_topic("lh-boot-1"), b"{}")
        # Its command topic: checked and sent by the hub.
        assert client.publish(ha.command_topic(device_id, "light"), b"OFF")
        assert running.wait_for("command")["state"] == {"on": False, "brightness": 200}
        assert client.publish(ha.command_topic(device_id, "light", ha.BRIGHTNESS), b"64")
        assert running.wait_for("command")["state"] == {"on": False, "brightness": 64}
        refused_before = hub.home_assistant.commands_refused  # type: ignore[union-attr]
        for topic, payload in (
            (ha.command_topic(device_id, "light"), b"MAYBE"),
            (ha.command_topic(device_id, "light", ha.BRIGHTNESS), b"300"),
            (ha.command_topic(device_id, "fan"), b"ON"),
            (ha.command_topic("dev-0123456789ab", "light"), b"ON"),
        ):
            assert client.publish(topic, payload)
        wait_until(
            lambda: hub.home_assistant.commands_refused == refused_before + 4,  # type: ignore[union-attr]
            what="four refusals",
        )
        assert hub.control.state_of(device_id)["light"] == {"on": False, "brightness": 64}
    finally:
        client.close()
    commands = commands_recorded(hub, owner, 2)
    assert commands[:2] == ["Light: brightness 25% (from Home Assistant)", "Light: off (from Home Assistant)"]


def test_a_component_dropped_by_a_new_description_leaves_home_assistant(
    hub: Hub, broker: RunningBroker, lamp: tuple[str, RunThread], tmp_path: Path
) -> None:
    device_id, running = lamp
    running.close()
    _, device = device_client(broker, tmp_path / "lamp.json")
    try:
        assert device.subscribe(protocol.device_topic(device_id, protocol.DEVICE_REPLY))
        two = DeviceDescription(
            (
                Component("light", ComponentKind.LIGHT, "Light", True),
                Component("night", ComponentKind.SWITCH, "Night mode", True),
            ),
            manufacturer="LinkHub Simulator",
            model="LMP-2",
            firmware="2.0",
        )
        assert device.publish(protocol.device_topic(device_id, protocol.DESCRIPTION), protocol.encode(two))
        assert json.loads(device.next_message().payload)["status"] == "ok"
        night = ha.config_topic("switch", ha.node_id(device_id), "night")
        wait_until(lambda: night in retained_configs(hub, broker), what="the new component's config")
        one = DeviceDescription(two.components[:1], manufacturer="LinkHub Simulator", model="LMP-2")
        assert device.publish(protocol.device_topic(device_id, protocol.DESCRIPTION), protocol.encode(one))
        assert json.loads(device.next_message().payload)["status"] == "ok"
        configs = retained_configs(hub, broker)
        assert night not in configs
        assert configs[ha.config_topic("light", ha.node_id(device_id), "light")]["device"]["model"] == "LMP-2"
    finally:
        device.close()


def test_with_home_assistant_off_nothing_is_published_and_its_topics_are_ignored(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub(data_dir=tmp_path / "hub", home_assistant=False)
    owner = hub.accounts.create("ann", "correct horse battery staple").id
    device_id = link_profile(hub, broker, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    running = RunThread(tmp_path / "lamp.json")
    try:
        running.wait_for("online")
        wait_until(lambda: hub.control.description(device_id), what="the lamp's description")
        assert hub.home_assistant is None
        assert not [t for t in retained_configs(hub, broker) if device_id in t]
        client = hub_client(hub, broker)
        try:
            assert client.publish(ha.command_topic(device_id, "light"), b"OFF")
        finally:
            client.close()
        # The lamp keeps its state: the hub neither listens there nor forwards.
        with pytest.raises(AssertionError):
            running.wait_for("command", timeout_s=1.5)
    finally:
        running.close()


def test_a_restart_empties_the_configs_of_devices_unlinked_lately_again(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """With --home-assistant-broker the empties of an unlink may have died with the
    hub's mosquitto before the bridge passed them on: each start sends them again."""
    hub = make_hub(data_dir=tmp_path / "hub")
    owner = hub.accounts.create("ann", "correct horse battery staple").id
    device_id = link_profile(hub, broker, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    running = RunThread(tmp_path / "lamp.json")
    running.wait_for("online")
    wait_until(lambda: hub.control.description(device_id), what="the lamp's description")
    running.close()
    hub.links.unlink(device_id, owner, origin=Origin.WEB)
    # Home Assistant's login: the hub's own would be kicked when the next hub sets its password.
    login = hub.home_assistant_login()
    watcher = RawClient(broker.port, login.username, login.password)
    try:
        assert watcher.subscribe(ha.config_subscription())
        hub.stop()
        make_hub(data_dir=tmp_path / "hub")
        topic = ha.config_topic("light", ha.node_id(device_id), "light")
        deadline = time.monotonic() + 10
        emptied = False
        while not emptied and time.monotonic() < deadline:
            message = watcher.next_message(max(deadline - time.monotonic(), 0.01))
            emptied = message.topic == topic and message.payload == b""
        assert emptied
    finally:
        watcher.close()


def test_home_assistant_saying_it_is_online_gets_every_config_again(
    hub: Hub, broker: RunningBroker, lamp: tuple[str, RunThread]
) -> None:
    """Home Assistant's birth message (`homeassistant/status` = online, sent when it
    starts): the hub publishes every config again, as live messages too."""
    device_id, _ = lamp
    login = hub.home_assistant_login()
    client = RawClient(broker.port, login.username, login.password)
    try:
        assert client.subscribe(ha.config_subscription())
        topic = ha.config_topic("light", ha.node_id(device_id), "light")
        while True:  # the retained ones first, then nothing
            try:
                client.next_message(0.5)
            except queue.Empty:
                break
        assert client.publish(ha.BIRTH_TOPIC, b"online")
        again = client.next_message()
        while again.topic != topic:
            again = client.next_message()
        assert not again.retain and json.loads(again.payload)["unique_id"] == f"linkhub_{device_id}_light"
    finally:
        client.close()


def test_the_login_to_type_into_home_assistant_names_tls_when_it_is_on() -> None:
    plain = HomeAssistantLogin("192.168.1.10", 1884, "linkhub-homeassistant", "secret")
    assert plain.fields() == [
        ("Broker", "192.168.1.10"),
        ("Port", "1884"),
        ("Username", "linkhub-homeassistant"),
        ("Password", "secret"),
    ]
    with_tls = HomeAssistantLogin("hub.home.arpa", 1884, "linkhub-homeassistant", "secret", tls_port=8883)
    assert ("Port", "8883") in with_tls.fields()
    assert any(
        label == "Broker certificate validation" and "/ca.pem" in value for label, value in with_tls.fields()
    )
    assert "secret" not in repr(with_tls)
