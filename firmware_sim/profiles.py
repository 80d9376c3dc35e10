"""What a simulated device is: a lamp, a sensor, a plug or a thermostat, each
with the components it describes to the hub (docs/protocol.md section 13), the
state it starts in, what a command does to it, and the readings it takes.

Pure: a profile turns a state and a command (or a tick of its reading clock)
into the next state; firmware_sim/run.py publishes it. `rng` makes readings
repeatable in tests.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from linkhub_protocol import Command, Component, ComponentKind, DeviceDescription

MANUFACTURER = "LinkHub Simulator"
# How often a profile with readings takes them, unless told otherwise.
DEFAULT_READING_INTERVAL_S = 5.0

State = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    components: tuple[Component, ...]
    initial: State
    # A command's effect on the state, beyond setting the component's value.
    effect: Callable[[State, Command, random.Random], State]
    # New readings (None: this profile takes none).
    read: Callable[[State, random.Random], State] | None = None

    def description(self, model: str, firmware: str = "sim-1") -> DeviceDescription:
        return DeviceDescription(self.components, manufacturer=MANUFACTURER, model=model, firmware=firmware)

    def component(self, key: str) -> Component | None:
        return next((c for c in self.components if c.key == key), None)

    def apply(self, state: State, command: Command, rng: random.Random) -> State:
        """The state after `command`, which Component.check_command accepted."""
        component = self.component(command.component)
        assert component is not None
        new = dict(state)
        if component.kind is ComponentKind.LIGHT:
            new[component.key] = {**state[component.key], **command.value}
        elif component.has_state:
            new[component.key] = command.value
        return self.effect(new, command, rng)


def _no_effect(state: State, _command: Command, _rng: random.Random) -> State:
    return state


def _sensor_read(state: State, rng: random.Random) -> State:
    return {
        "temperature": round(state["temperature"] + rng.uniform(-0.2, 0.2), 1),
        "humidity": round(min(100.0, max(0.0, state["humidity"] + rng.uniform(-0.5, 0.5))), 1),
    }


def _plug_power(state: State, rng: random.Random) -> State:
    watts = round(rng.uniform(55.0, 65.0), 1) if state["power"] else 0.0
    return {**state, "power_w": watts}


def _plug_effect(state: State, _command: Command, rng: random.Random) -> State:
    return _plug_power(state, rng)


def _thermostat_read(state: State, rng: random.Random) -> State:
    """The room drifts towards the target while heating, away from it otherwise."""
    heating = state["mode"] != "off" and state["temperature"] < state["target"]
    drift = 0.1 if heating else -0.05
    temperature = round(state["temperature"] + drift + rng.uniform(-0.02, 0.02), 2)
    return {**state, "temperature": temperature, "heating": heating}


def _thermostat_effect(state: State, command: Command, rng: random.Random) -> State:
    if command.component == "boost":
        state = {**state, "target": min(30.0, state["target"] + 1.0), "mode": "heat"}
    return {**state, "heating": state["mode"] != "off" and state["temperature"] < state["target"]}


PROFILES: dict[str, Profile] = {
    "lamp": Profile(
        "lamp",
        (Component("light", ComponentKind.LIGHT, "Light", True),),
        {"light": {"on": True, "brightness": 200}},
        _no_effect,
    ),
    "sensor": Profile(
        "sensor",
        (
            Component("temperature", ComponentKind.SENSOR, "Temperature", False, "°C", "temperature"),
            Component("humidity", ComponentKind.SENSOR, "Humidity", False, "%", "humidity"),
        ),
        {"temperature": 21.0, "humidity": 45.0},
        _no_effect,
        _sensor_read,
    ),
    "plug": Profile(
        "plug",
        (
            Component("power", ComponentKind.SWITCH, "Power", True),
            Component("power_w", ComponentKind.SENSOR, "Power use", False, "W", "power"),
        ),
        {"power": True, "power_w": 60.0},
        _plug_effect,
        _plug_power,
    ),
    "thermostat": Profile(
        "thermostat",
        (
            Component("temperature", ComponentKind.SENSOR, "Room temperature", False, "°C", "temperature"),
            Component("target", ComponentKind.NUMBER, "Target", True, "°C", minimum=5, maximum=30, step=0.5),
            Component("mode", ComponentKind.SELECT, "Mode", True, options=("off", "heat", "eco")),
            Component("heating", ComponentKind.BINARY_SENSOR, "Heating", False, device_class="heat"),
            Component("boost", ComponentKind.BUTTON, "Boost", True),
        ),
        {"temperature": 19.5, "target": 21.0, "mode": "heat", "heating": True},
        _thermostat_effect,
        _thermostat_read,
    ),
}
