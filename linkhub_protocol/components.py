"""What a linked device has (its components), what each one's state looks like,
and what a command to it may carry (docs/protocol.md, "Components, state and
commands"). The device and the hub check values with the same functions, so a
value one side sends is a value the other side takes.

A component is one thing a person can see or use: a switch, a light with
brightness, a sensor reading, a binary sensor, a number, a select, a button.
Its kind fixes the shape of its value:

    switch         true | false
    light          {"on": true|false, "brightness": 0-255}
    sensor         a finite number, or a string of at most 64 characters
    binary_sensor  true | false
    number         a number from `min` to `max`, on a `step` from `min`
    select         one of `options`
    button         no state; a command's value is null (a press)

A command carries the same shape, except a light's, which may name `on`,
`brightness` or both (turning the brightness up need not say "on").
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from linkhub_protocol.constants import MAX_COMPONENTS, MAX_OPTIONS
from linkhub_protocol.errors import ErrorCode, ProtocolError
from linkhub_protocol.text import checked_text

# A component's key is one level of a topic and one name in a JSON object (and
# in Home Assistant's object ids): lowercase ASCII, digits and `_`.
_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
# Home Assistant's device classes are such words; the hub passes them on as given.
_DEVICE_CLASS = re.compile(r"[a-z][a-z0-9_]{0,31}")
MAX_SENSOR_TEXT_CHARS = 64
BRIGHTNESS_MAX = 255
_COMPONENT_MEMBERS = frozenset(
    {"key", "kind", "name", "commandable", "unit", "device_class", "min", "max", "step", "options"}
)


class ComponentKind(StrEnum):
    SWITCH = "switch"
    LIGHT = "light"
    SENSOR = "sensor"
    BINARY_SENSOR = "binary_sensor"
    NUMBER = "number"
    SELECT = "select"
    BUTTON = "button"


# Kinds that only report: a command to one is refused whatever the description says.
READ_ONLY_KINDS = frozenset({ComponentKind.SENSOR, ComponentKind.BINARY_SENSOR})
# A button is pressed, never read.
STATELESS_KINDS = frozenset({ComponentKind.BUTTON})


def _invalid(description: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, description)


def _is_number(value: object) -> bool:
    # bool is an int in Python: `true` is not the number 1 here.
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def check_key(value: object, name: str = "key") -> str:
    if not isinstance(value, str) or not _KEY.fullmatch(value):
        raise _invalid(f"{name} must be 1-32 characters of a-z 0-9 _, starting with a letter")
    return value


@dataclass(frozen=True, slots=True)
class Component:
    """One entry of a description; validated when built."""

    key: str
    kind: ComponentKind
    name: str
    commandable: bool
    unit: str | None = None
    device_class: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_key(self.key)
        where = f"component {self.key}"
        if not isinstance(self.kind, ComponentKind):
            raise _invalid(f"{where}: kind must be one of {', '.join(k.value for k in ComponentKind)}")
        checked_text(self.name, f"{where}: name", 64)
        if not isinstance(self.commandable, bool):
            raise _invalid(f"{where}: commandable must be true or false")
        if self.kind in READ_ONLY_KINDS and self.commandable:
            raise _invalid(f"{where}: a {self.kind} only reports; it cannot be commandable")
        if self.kind in STATELESS_KINDS and not self.commandable:
            raise _invalid(f"{where}: a button is there to be pressed; it must be commandable")
        checked_text(self.unit, f"{where}: unit", 16, required=False)
        if self.unit is not None and self.kind not in (ComponentKind.SENSOR, ComponentKind.NUMBER):
            raise _invalid(f"{where}: only a sensor or a number has a unit")
        if self.device_class is not None and (
            not isinstance(self.device_class, str) or not _DEVICE_CLASS.fullmatch(self.device_class)
        ):
            raise _invalid(f"{where}: device_class must be 1-32 characters of a-z 0-9 _")
        self._check_range(where)
        self._check_options(where)

    def _check_range(self, where: str) -> None:
        bounds = (self.minimum, self.maximum, self.step)
        if self.kind is not ComponentKind.NUMBER:
            if any(b is not None for b in bounds):
                raise _invalid(f"{where}: only a number has min, max and step")
            return
        if not all(_is_number(b) for b in bounds):
            raise _invalid(f"{where}: a number needs min, max and step (finite numbers)")
        assert self.minimum is not None and self.maximum is not None and self.step is not None
        if not self.minimum < self.maximum:
            raise _invalid(f"{where}: min must be less than max")
        if not 0 < self.step <= self.maximum - self.minimum:
            raise _invalid(f"{where}: step must be more than 0 and at most max - min")

    def _check_options(self, where: str) -> None:
        if self.kind is not ComponentKind.SELECT:
            if self.options:
                raise _invalid(f"{where}: only a select has options")
            return
        if not isinstance(self.options, tuple) or not 0 < len(self.options) <= MAX_OPTIONS:
            raise _invalid(f"{where}: a select needs 1 to {MAX_OPTIONS} options")
        for option in self.options:
            checked_text(option, f"{where}: each option", 64)
        if len(set(self.options)) != len(self.options):
            raise _invalid(f"{where}: options must differ from each other")

    @property
    def has_state(self) -> bool:
        return self.kind not in STATELESS_KINDS

    def check_state(self, value: object) -> Any:
        """`value` if it is a state this component can be in; ProtocolError if not."""
        where = f"state of {self.key} ({self.kind})"
        match self.kind:
            case ComponentKind.SWITCH | ComponentKind.BINARY_SENSOR:
                if not isinstance(value, bool):
                    raise _invalid(f"{where} must be true or false")
            case ComponentKind.LIGHT:
                if (
                    not isinstance(value, dict)
                    or set(value) != {"on", "brightness"}
                    or not isinstance(value["on"], bool)
                ):
                    raise _invalid(f'{where} must be {{"on": true|false, "brightness": 0-{BRIGHTNESS_MAX}}}')
                _check_brightness(value["brightness"], where)
            case ComponentKind.SENSOR:
                if not _is_number(value) and not (
                    isinstance(value, str) and len(value) <= MAX_SENSOR_TEXT_CHARS
                ):
                    raise _invalid(
                        f"{where} must be a finite number or a string of at most "
                        f"{MAX_SENSOR_TEXT_CHARS} characters"
                    )
            case ComponentKind.NUMBER:
                self._check_number(value, where)
            case ComponentKind.SELECT:
                if value not in self.options:
                    raise _invalid(f"{where} must be one of its options")
            case ComponentKind.BUTTON:
                raise _invalid(f"{self.key} is a button: it has no state")
        return value

    def check_command(self, value: object) -> Any:
        """`value` if it is a command this component takes; ProtocolError if not."""
        where = f"command to {self.key} ({self.kind})"
        if not self.commandable:
            raise _invalid(f"{self.key} cannot be commanded: it only reports")
        match self.kind:
            case ComponentKind.SWITCH:
                if not isinstance(value, bool):
                    raise _invalid(f"{where} must be true or false")
            case ComponentKind.LIGHT:
                if not isinstance(value, dict) or not value or not set(value) <= {"on", "brightness"}:
                    raise _invalid(f'{where} must be an object with "on", "brightness" or both')
                if "on" in value and not isinstance(value["on"], bool):
                    raise _invalid(f"{where}: on must be true or false")
                if "brightness" in value:
                    _check_brightness(value["brightness"], where)
            case ComponentKind.NUMBER:
                self._check_number(value, where)
            case ComponentKind.SELECT:
                if value not in self.options:
                    raise _invalid(f"{where} must be one of: {', '.join(self.options)}")
            case ComponentKind.BUTTON:
                if value is not None:
                    raise _invalid(f"{where} carries no value (null): it is a press")
        return value

    def _check_number(self, value: object, where: str) -> None:
        assert self.minimum is not None and self.maximum is not None and self.step is not None
        if not _is_number(value) or not self.minimum <= value <= self.maximum:  # type: ignore[operator]
            raise _invalid(f"{where} must be a number from {self.minimum:g} to {self.maximum:g}")
        steps = (value - self.minimum) / self.step  # type: ignore[operator]
        # Within a millionth of a step: 0.1 + 0.2 is on a 0.1 step from 0.
        if abs(steps - round(steps)) > 1e-6:
            raise _invalid(f"{where} must be on a step of {self.step:g} from {self.minimum:g}")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "key": self.key,
            "kind": str(self.kind),
            "name": self.name,
            "commandable": self.commandable,
        }
        if self.unit is not None:
            out["unit"] = self.unit
        if self.device_class is not None:
            out["device_class"] = self.device_class
        if self.kind is ComponentKind.NUMBER:
            out |= {"min": self.minimum, "max": self.maximum, "step": self.step}
        if self.options:
            out["options"] = list(self.options)
        return out

    @classmethod
    def from_json(cls, obj: object, index: int) -> Component:
        """One entry of a description's `components`; ProtocolError if it is not one."""
        if not isinstance(obj, dict):
            raise _invalid(f"components[{index}] must be an object")
        unknown = sorted(set(obj) - _COMPONENT_MEMBERS)
        if unknown:
            raise _invalid(f"components[{index}]: unknown member {unknown[0]!r}")
        try:
            kind = ComponentKind(str(obj.get("kind")))
        except ValueError:
            raise _invalid(
                f"components[{index}]: kind must be one of {', '.join(k.value for k in ComponentKind)}"
            ) from None
        options = obj.get("options", [])
        if not isinstance(options, list):
            raise _invalid(f"components[{index}]: options must be a list of strings")
        commandable = obj.get("commandable", kind not in READ_ONLY_KINDS)
        return cls(
            key=check_key(obj.get("key"), f"components[{index}].key"),
            kind=kind,
            name=obj.get("name"),  # type: ignore[arg-type]  # checked in __post_init__
            commandable=commandable,
            unit=obj.get("unit"),
            device_class=obj.get("device_class"),
            minimum=obj.get("min"),
            maximum=obj.get("max"),
            step=obj.get("step"),
            options=tuple(options),
        )


def _check_brightness(value: object, where: str) -> None:
    if type(value) is not int or not 0 <= value <= BRIGHTNESS_MAX:
        raise _invalid(f"{where}: brightness must be an integer from 0 to {BRIGHTNESS_MAX}")


def check_components(components: tuple[Component, ...]) -> None:
    if not isinstance(components, tuple) or not 0 < len(components) <= MAX_COMPONENTS:
        raise _invalid(f"components must list 1 to {MAX_COMPONENTS} components")
    keys = [component.key for component in components]
    if len(set(keys)) != len(keys):
        raise _invalid("each component needs a key of its own")
