"""Home Assistant's MQTT discovery for linked devices, as pure data: which
retained config goes on which topic, and what a payload Home Assistant sends on
a command topic means as a LinkHub command.

The format is Home Assistant's (https://www.home-assistant.io/integrations/mqtt/,
"MQTT Discovery"): one retained config per entity on
`<prefix>/<component>/<node_id>/<object_id>/config`, an empty retained message
removes the entity, and Home Assistant says `online` on `<prefix>/status` when
it starts, which is when every config is published again. 2024.3 (the version
tested here) has no device-wide discovery message, so each component is one
entity of its own, tied to its device by the `device` block.

Home Assistant reads each device's state and status on the device's own topics
(docs/protocol.md section 13): nothing is copied, so a state reaches it as fast
as it reaches the hub. Commands go the other way through the hub, which checks
them against the description: Home Assistant may publish only under
COMMAND_ROOT, never on a device's topics (hub/broker/dynsec.py).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

import linkhub_protocol as protocol
from linkhub_protocol import Component, ComponentKind, DeviceDescription, ErrorCode, ProtocolError

DISCOVERY_PREFIX = "homeassistant"
BIRTH_TOPIC = f"{DISCOVERY_PREFIX}/status"
BIRTH_ONLINE = b"online"
# Home Assistant publishes commands here: <root>/<device_id>/<component key>/<attribute>.
COMMAND_ROOT = f"{protocol.TOPIC_ROOT}/ha"
# The hub's own entities: its availability and its state (health, linked devices).
HUB_ROOT = f"{protocol.TOPIC_ROOT}/hub"
HUB_ONLINE = b"online"
HUB_OFFLINE = b"offline"
# Every node id the hub uses starts so: on start, a retained config under such a
# node that no linked device has is a stale one to remove.
NODE_PREFIX = "linkhub-"
HUB_NODE_PREFIX = f"{NODE_PREFIX}hub-"
ORIGIN_NAME = "LinkHub"
SUPPORT_URL = "https://github.com/linkhub/linkhub"

# The attribute level of a command topic: `set` for the component's own value,
# `brightness` for a light's brightness.
SET = "set"
BRIGHTNESS = "brightness"

_HA_COMPONENT = {
    ComponentKind.SWITCH: "switch",
    ComponentKind.LIGHT: "light",
    ComponentKind.SENSOR: "sensor",
    ComponentKind.BINARY_SENSOR: "binary_sensor",
    ComponentKind.NUMBER: "number",
    ComponentKind.SELECT: "select",
    ComponentKind.BUTTON: "button",
}
_CONFIG_TOPIC = re.compile(rf"{DISCOVERY_PREFIX}/([a-z_]+)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config")
_COMMAND_TOPIC = re.compile(
    rf"{re.escape(COMMAND_ROOT)}/([a-z0-9][a-z0-9-]{{2,39}})/([a-z][a-z0-9_]{{0,31}})/({SET}|{BRIGHTNESS})"
)
_AVAILABLE = "{{ 'online' if value_json.online else 'offline' }}"


@dataclass(frozen=True, slots=True)
class DeviceCard:
    """What Home Assistant shows of a linked device besides its components."""

    device_id: str
    name: str  # the name people gave it on the hub (a rename is a new config)
    page_url: str  # its page on the hub: Home Assistant's "Visit device"


@dataclass(frozen=True, slots=True)
class HubCard:
    hub_id: str
    version: str
    page_url: str


Configs = dict[str, dict[str, Any]]


def node_id(device_id: str) -> str:
    return f"{NODE_PREFIX}{device_id}"


def hub_node_id(hub_id: str) -> str:
    return f"{HUB_NODE_PREFIX}{hub_id}"


def config_topic(ha_component: str, node: str, object_id: str) -> str:
    return f"{DISCOVERY_PREFIX}/{ha_component}/{node}/{object_id}/config"


def config_subscription() -> str:
    return f"{DISCOVERY_PREFIX}/+/+/+/config"


def config_node(topic: str) -> str | None:
    """The node id of a discovery config topic; None if `topic` is not one."""
    match = _CONFIG_TOPIC.fullmatch(topic)
    return match.group(2) if match else None


def command_topic(device_id: str, key: str, attribute: str = SET) -> str:
    return f"{COMMAND_ROOT}/{device_id}/{key}/{attribute}"


def command_subscription() -> str:
    return f"{COMMAND_ROOT}/+/+/+"


def parse_command_topic(topic: str) -> tuple[str, str, str] | None:
    """(device_id, component key, attribute) of a command topic; None if not one."""
    match = _COMMAND_TOPIC.fullmatch(topic)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def bridge_topics() -> list[tuple[str, str]]:
    """What the hub's mosquitto bridges to Home Assistant's own broker, and which
    way (mosquitto.conf(5), "topic pattern [[[out | in | both] qos-level]"):
    the discovery configs, the devices' state and status and the hub's own, out;
    Home Assistant's birth and its commands, in. Nothing else: not settings, not
    link requests, not a device's command topic (the hub's check stays in the way)."""
    return [
        (f"{DISCOVERY_PREFIX}/+/+/+/config", "out"),
        (f"{protocol.DEVICES_ROOT}/+/{protocol.STATE}", "out"),
        (f"{protocol.DEVICES_ROOT}/+/{protocol.STATUS}", "out"),
        (f"{HUB_ROOT}/+/status", "out"),
        (f"{HUB_ROOT}/+/state", "out"),
        (BIRTH_TOPIC, "in"),
        (command_subscription(), "in"),
    ]


def hub_status_topic(hub_id: str) -> str:
    return f"{HUB_ROOT}/{hub_id}/status"


def hub_state_topic(hub_id: str) -> str:
    return f"{HUB_ROOT}/{hub_id}/state"


def hub_state(healthy: bool, linked_devices: int) -> bytes:
    return json.dumps({"healthy": healthy, "linked_devices": linked_devices}).encode()


def _origin(hub: HubCard) -> dict[str, Any]:
    return {"name": ORIGIN_NAME, "sw_version": hub.version, "support_url": SUPPORT_URL}


def _hub_identifier(hub: HubCard) -> str:
    return f"linkhub_hub_{hub.hub_id}"


def device_configs(card: DeviceCard, description: DeviceDescription, hub: HubCard) -> Configs:
    """Every retained config for one linked device, by topic.

    `unique_id` is made of the device id and the component key, which never
    change: a rename or a restart updates the entity, never makes a second one.
    """
    device_block = {
        "identifiers": [f"linkhub_{card.device_id}"],
        "name": card.name,
        "manufacturer": description.manufacturer,
        "model": description.model,
        "via_device": _hub_identifier(hub),
        "configuration_url": card.page_url,
    }
    if description.firmware is not None:
        device_block["sw_version"] = description.firmware
    state_topic = protocol.device_topic(card.device_id, protocol.STATE)
    configs: Configs = {}
    for component in description.components:
        config: dict[str, Any] = {
            "name": component.name,
            "unique_id": f"linkhub_{card.device_id}_{component.key}",
            "device": device_block,
            "origin": _origin(hub),
            # Both the device and the hub must be up: commands go through the hub.
            "availability": [
                {"topic": protocol.device_status_topic(card.device_id), "value_template": _AVAILABLE},
                {"topic": hub_status_topic(hub.hub_id)},
            ],
            "availability_mode": "all",
            "qos": 1,
        }
        config |= _entity(component, card.device_id, state_topic)
        topic = config_topic(_HA_COMPONENT[component.kind], node_id(card.device_id), component.key)
        configs[topic] = config
    return configs


def _value(key: str) -> str:
    return f"value_json.state.{key}"


def _on_off(expression: str) -> str:
    return f"{{{{ 'ON' if {expression} else 'OFF' }}}}"


def _entity(component: Component, device_id: str, state_topic: str) -> dict[str, Any]:
    """The part of a config that depends on the component's kind."""
    key = component.key
    commands: dict[str, Any] = {}
    if component.commandable:
        commands["command_topic"] = command_topic(device_id, key)
    entity: dict[str, Any]
    match component.kind:
        case ComponentKind.SWITCH | ComponentKind.BINARY_SENSOR:
            entity = {"state_topic": state_topic, "value_template": _on_off(_value(key))} | commands
        case ComponentKind.LIGHT:
            entity = {
                "state_topic": state_topic,
                "state_value_template": _on_off(f"{_value(key)}.on"),
                "brightness_state_topic": state_topic,
                "brightness_value_template": f"{{{{ {_value(key)}.brightness }}}}",
                "brightness_scale": protocol.BRIGHTNESS_MAX,
            } | commands
            if component.commandable:
                entity["brightness_command_topic"] = command_topic(device_id, key, BRIGHTNESS)
        case ComponentKind.SENSOR:
            entity = {"state_topic": state_topic, "value_template": f"{{{{ {_value(key)} }}}}"}
            if component.unit is not None:
                entity |= {"unit_of_measurement": component.unit, "state_class": "measurement"}
        case ComponentKind.NUMBER:
            entity = {
                "state_topic": state_topic,
                "value_template": f"{{{{ {_value(key)} }}}}",
                "min": component.minimum,
                "max": component.maximum,
                "step": component.step,
            } | commands
            if component.unit is not None:
                entity["unit_of_measurement"] = component.unit
        case ComponentKind.SELECT:
            entity = {
                "state_topic": state_topic,
                "value_template": f"{{{{ {_value(key)} }}}}",
                "options": list(component.options),
            } | commands
        case ComponentKind.BUTTON:
            entity = {"payload_press": "PRESS"} | commands
    if component.device_class is not None:
        entity["device_class"] = component.device_class
    return entity


def hub_configs(hub: HubCard) -> Configs:
    """The hub as a device of its own: whether it is healthy, and how many devices it links."""
    node = hub_node_id(hub.hub_id)
    device_block = {
        "identifiers": [_hub_identifier(hub)],
        "name": "LinkHub",
        "manufacturer": "LinkHub",
        "model": "Hub",
        "sw_version": hub.version,
        "configuration_url": hub.page_url,
    }
    common = {
        "device": device_block,
        "origin": _origin(hub),
        "availability_topic": hub_status_topic(hub.hub_id),
        "state_topic": hub_state_topic(hub.hub_id),
        "qos": 1,
    }
    return {
        config_topic("binary_sensor", node, "problem"): common
        | {
            "name": "Problem",
            "unique_id": f"linkhub_hub_{hub.hub_id}_problem",
            "device_class": "problem",
            "value_template": "{{ 'OFF' if value_json.healthy else 'ON' }}",
            "entity_category": "diagnostic",
        },
        config_topic("sensor", node, "linked_devices"): common
        | {
            "name": "Linked devices",
            "unique_id": f"linkhub_hub_{hub.hub_id}_linked_devices",
            "value_template": "{{ value_json.linked_devices }}",
            "state_class": "measurement",
            "icon": "mdi:link-variant",
        },
    }


def encode_config(config: dict[str, Any]) -> bytes:
    return json.dumps(config, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


def command_value(component: Component, attribute: str, payload: bytes) -> Any:
    """The LinkHub command value Home Assistant's `payload` stands for, on the
    component's command topic `attribute`. ProtocolError if it stands for none."""
    text = payload.decode("utf-8", errors="replace").strip()
    where = f"Home Assistant's command to {component.key}"
    if attribute == BRIGHTNESS:
        if component.kind is not ComponentKind.LIGHT:
            raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where}: only a light has a brightness")
        return {"brightness": _whole_number(text, where)}
    match component.kind:
        case ComponentKind.SWITCH:
            return _on_off_payload(text, where)
        case ComponentKind.LIGHT:
            return {"on": _on_off_payload(text, where)}
        case ComponentKind.NUMBER:
            return _number(text, where)
        case ComponentKind.SELECT:
            return text
        case ComponentKind.BUTTON:
            if text != "PRESS":
                raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where} must be PRESS")
            return None
    raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where}: a {component.kind} takes no commands")


def _on_off_payload(text: str, where: str) -> bool:
    if text not in ("ON", "OFF"):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where} must be ON or OFF, not {text[:20]!r}")
    return text == "ON"


def _whole_number(text: str, where: str) -> int:
    number = _number(text, where)
    if number != int(number):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where} must be a whole number")
    return int(number)


def _number(text: str, where: str) -> float | int:
    try:
        number = float(text)
    except ValueError:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where} must be a number") from None
    if not math.isfinite(number):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{where} must be a finite number")
    return int(number) if number.is_integer() else number
