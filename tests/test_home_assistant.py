"""Linked devices in a real Home Assistant (issue 15): a simulated lamp and
sensor appear with no typing, Home Assistant shows their state and switches the
lamp, a rename shows there, an unlink removes every entity and the device, and
restarting the hub or Home Assistant leaves no duplicate or stale entity. Home
Assistant core 2024.3.3 runs in its own environment (tests/home_assistant.py),
on the hub's broker with the identity `linkhub homeassistant` makes, and
separately behind mosquitto's bridge to a second mosquitto playing "the
Mosquitto add-on"."""

from __future__ import annotations

import getpass
import queue
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import HubFactory, RunningBroker, free_port, wait_until
from device_doubles import DeviceThread, RawClient
from home_assistant import HomeAssistant
from test_device_control import commands_recorded
from test_unlink import RunThread

import linkhub_protocol as protocol
from hub.config.model import ExternalBroker, HubConfig
from hub.core.origin import Origin
from hub.daemon import Hub

pytestmark = pytest.mark.timeout(600)

LAMP = "light.kitchen_lamp_light"
TEMPERATURE = "sensor.bedroom_sensor_temperature"
HUMIDITY = "sensor.bedroom_sensor_humidity"


def link_profile(hub: Hub, port: int, path: Path, account_id: int, profile: str, name: str) -> str:
    device = DeviceThread(port, path, name=name, profile=profile).start()
    device_id = hub.links.approve(device.wait_code(), account_id).device_id
    assert device.join() == 0
    return device_id


@pytest.fixture
def home_assistant(tmp_path: Path) -> Iterator[HomeAssistant]:
    instance = HomeAssistant(tmp_path / "ha", free_port())
    yield instance
    instance.stop()


def state_of(home: HomeAssistant, entity_id: str) -> str | None:
    found = home.state(entity_id)
    return None if found is None else str(found["state"])


def test_a_lamp_and_a_sensor_in_home_assistant_from_link_to_unlink(
    make_hub: HubFactory, own_broker: RunningBroker, tmp_path: Path, home_assistant: HomeAssistant
) -> None:
    # A broker of its own: the session's holds other tests' hubs and devices, which
    # Home Assistant would show too (a second "Kitchen Lamp" is light.kitchen_lamp_light_2).
    broker = own_broker
    hub = make_hub(data_dir=tmp_path / "hub", on_broker=broker)
    owner = hub.accounts.create("ann", "correct horse battery staple").id
    login = hub.home_assistant_login()
    assert login.username == "linkhub-homeassistant" and login.port == broker.port
    home_assistant.configure(broker_port=broker.port, username=login.username, password=login.password)
    home_assistant.start()

    lamp_id = link_profile(hub, broker.port, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
    sensor_id = link_profile(hub, broker.port, tmp_path / "sensor.json", owner, "sensor", "Bedroom Sensor")
    lamp = RunThread(tmp_path / "lamp.json")
    sensor = RunThread(tmp_path / "sensor.json")
    try:
        lamp.wait_for("online")
        sensor.wait_for("online")
        # Home Assistant's own view, from the discovery configs and the devices' own topics.
        home_assistant.wait_for("the lamp on", lambda: state_of(home_assistant, LAMP) == "on")
        shown = home_assistant.state(LAMP)
        assert shown is not None and shown["attributes"]["brightness"] == 200
        assert shown["attributes"]["friendly_name"] == "Kitchen Lamp Light"
        home_assistant.wait_for("temperature", lambda: state_of(home_assistant, TEMPERATURE) == "21.0")
        temperature = home_assistant.state(TEMPERATURE)
        assert temperature is not None and temperature["attributes"]["unit_of_measurement"] == "°C"
        assert temperature["attributes"]["device_class"] == "temperature"
        assert state_of(home_assistant, HUMIDITY) == "45.0"
        hub_count = "sensor.linkhub_linked_devices"
        home_assistant.wait_for("the hub's count", lambda: state_of(home_assistant, hub_count) == "2")
        assert state_of(home_assistant, "binary_sensor.linkhub_problem") == "off"

        # Switched off from Home Assistant: the device obeys, Home Assistant shows it.
        home_assistant.call("light", "turn_off", {"entity_id": LAMP})
        obeyed = lamp.wait_for("command")
        assert obeyed["state"] == {"on": False, "brightness": 200}
        home_assistant.wait_for("the lamp off", lambda: state_of(home_assistant, LAMP) == "off")
        home_assistant.call("light", "turn_on", {"entity_id": LAMP, "brightness": 100})
        home_assistant.wait_for(
            "the lamp dimmed",
            lambda: (home_assistant.state(LAMP) or {}).get("attributes", {}).get("brightness") == 100,
        )
        assert "Light: off (from Home Assistant)" in commands_recorded(hub, owner, 2)

        # A rename on the hub is the device's name in Home Assistant (same entity).
        device_ha_id = home_assistant.template(f"{{{{ device_id('{LAMP}') }}}}")
        hub.links.rename(lamp_id, owner, "Living Room Lamp")
        home_assistant.wait_for(
            "the new name",
            lambda: (
                home_assistant.template(f"{{{{ device_attr('{device_ha_id}', 'name') }}}}")
                == "Living Room Lamp"
            ),
        )
        assert home_assistant.template(f"{{{{ device_id('{LAMP}') }}}}") == device_ha_id
        entities = home_assistant.mqtt_entities()
        assert {LAMP, TEMPERATURE, HUMIDITY, hub_count} <= set(entities), entities

        # Restarts: the hub, then Home Assistant. Nothing doubled, nothing stale.
        hub.stop()
        home_assistant.wait_for(
            "the lamp unavailable", lambda: state_of(home_assistant, LAMP) == "unavailable"
        )
        hub = make_hub(data_dir=tmp_path / "hub", on_broker=broker)
        home_assistant.wait_for("the lamp back", lambda: state_of(home_assistant, LAMP) == "on")
        assert home_assistant.mqtt_entities() == entities
        home_assistant.stop()
        home_assistant.start()
        home_assistant.wait_for("the lamp after a restart", lambda: state_of(home_assistant, LAMP) == "on")
        home_assistant.wait_for(
            "the sensor", lambda: state_of(home_assistant, TEMPERATURE) not in (None, "unavailable")
        )
        assert home_assistant.mqtt_entities() == entities

        # Unlinked: every entity of it, and the device, leave Home Assistant.
        hub.links.unlink(lamp_id, owner, origin=Origin.WEB)
        home_assistant.wait_for("the lamp gone", lambda: home_assistant.state(LAMP) is None)
        home_assistant.wait_for(
            "the lamp's device gone",
            lambda: home_assistant.template(f"{{{{ device_attr('{device_ha_id}', 'name') }}}}") == "None",
        )
        assert state_of(home_assistant, TEMPERATURE) is not None
        assert not [e for e in home_assistant.mqtt_entities() if e.startswith("light.")]
        home_assistant.wait_for("the hub's count", lambda: state_of(home_assistant, hub_count) == "1")
        assert sensor_id in {d.device_id for d in hub.links.list_devices()}
    finally:
        lamp.close()
        sensor.close()
        home_assistant.stop()


# --- the other direction: Home Assistant's own mosquitto, bridged to -----------------------------
@dataclass
class AddOnBroker:
    """A plain mosquitto with its own users (a password file), as the Mosquitto
    add-on of Home Assistant OS runs: the hub does not administer it."""

    port: int
    process: subprocess.Popen[bytes]
    users: dict[str, str]


@pytest.fixture
def add_on_broker(tmp_path: Path) -> Iterator[AddOnBroker]:
    directory = tmp_path / "add-on"
    directory.mkdir()
    users = {"linkhub-bridge": secrets.token_urlsafe(12), "homeassistant": secrets.token_urlsafe(12)}
    passwords = directory / "passwd"
    for user, password in users.items():
        subprocess.run(
            [
                "mosquitto_passwd",
                "-b",
                *(["-c"] if not passwords.exists() else []),
                str(passwords),
                user,
                password,
            ],
            check=True,
            capture_output=True,
        )
    port = free_port()
    (directory / "mosquitto.conf").write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n"
        f"persistence false\nlog_dest stderr\nuser {getpass.getuser()}\n"
    )
    process = subprocess.Popen(
        ["mosquitto", "-c", str(directory / "mosquitto.conf")], stderr=(directory / "log").open("wb")
    )
    def accepts_a_login() -> bool:
        try:
            client = RawClient(port, "homeassistant", users["homeassistant"])
        except OSError:
            return False  # not listening yet
        client.close()
        return not client.connack_reason.is_failure

    wait_until(accepts_a_login, what="the add-on broker up")
    yield AddOnBroker(port, process, users)
    process.terminate()
    process.wait(timeout=10)


def bridged_hub(tmp_path: Path, add_on: AddOnBroker, mqtt_port: int) -> Hub:
    """A hub on its own mosquitto, which bridges Home Assistant's topics to the add-on's."""
    data_dir = tmp_path / "hub"
    config = HubConfig(
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / 'linkhub.db'}",
        http_host="127.0.0.1",
        mqtt_host="127.0.0.1",
        mqtt_port=mqtt_port,
        mdns=False,
        poll_interval_s=1,
        home_assistant_broker=ExternalBroker(
            "127.0.0.1", add_on.port, "linkhub-bridge", add_on.users["linkhub-bridge"]
        ),
    )
    hub = Hub(config)
    hub.start()
    return hub


def test_through_mosquittos_bridge_to_home_assistants_own_broker(
    add_on_broker: AddOnBroker, tmp_path: Path, home_assistant: HomeAssistant
) -> None:
    port = free_port()
    hub = bridged_hub(tmp_path, add_on_broker, port)
    lamp: RunThread | None = None
    try:
        owner = hub.accounts.create("ann", "correct horse battery staple").id
        home_assistant.configure(
            broker_port=add_on_broker.port,
            username="homeassistant",
            password=add_on_broker.users["homeassistant"],
        )
        home_assistant.start()
        lamp_id = link_profile(hub, port, tmp_path / "lamp.json", owner, "lamp", "Kitchen Lamp")
        lamp = RunThread(tmp_path / "lamp.json")
        lamp.wait_for("online")
        home_assistant.wait_for("the lamp on", lambda: state_of(home_assistant, LAMP) == "on")
        home_assistant.call("light", "turn_off", {"entity_id": LAMP})
        assert lamp.wait_for("command")["state"] == {"on": False, "brightness": 200}
        home_assistant.wait_for("the lamp off", lambda: state_of(home_assistant, LAMP) == "off")

        # Only Home Assistant's topics cross: no settings, no link requests, no commands to devices.
        watcher = RawClient(add_on_broker.port, "homeassistant", add_on_broker.users["homeassistant"])
        try:
            assert watcher.subscribe("#")
            hub.settings.set_device_settings(lamp_id, {"night_mode": True}, origin=Origin.WEB)
            lamp.wait_for("settings")
            hub.control.send_command(lamp_id, "light", {"on": True}, origin=Origin.WEB, account_id=owner)
            lamp.wait_for("command")
            home_assistant.wait_for("the lamp on again", lambda: state_of(home_assistant, LAMP) == "on")
            seen = set()
            while True:
                try:
                    seen.add(watcher.next_message(0.5).topic)
                except queue.Empty:
                    break
        finally:
            watcher.close()
        crossed = {topic.rsplit("/", 1)[-1] for topic in seen if topic.startswith("linkhub/")}
        assert crossed <= {"state", "status"}, seen
        assert protocol.device_topic(lamp_id, protocol.STATE) in seen

        entities = home_assistant.mqtt_entities()
        hub.stop()  # its mosquitto stops with it, and starts again empty
        hub = bridged_hub(tmp_path, add_on_broker, port)
        home_assistant.wait_for("the lamp back", lambda: state_of(home_assistant, LAMP) == "on")
        assert home_assistant.mqtt_entities() == entities

        hub.links.unlink(lamp_id, owner, origin=Origin.WEB)
        home_assistant.wait_for("the lamp gone", lambda: home_assistant.state(LAMP) is None)
    finally:
        if lamp is not None:
            lamp.close()
        hub.stop()
