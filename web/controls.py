"""A device's components on its page (what it has, its state, its controls), and
the command a control's form stands for. Plain forms, so every control works
without JavaScript; static/link.js refreshes the states as they change.

POST /devices/<id>/command takes `key` and, by the component's kind:
`value` = on|off (switch), `on` = on|off or `brightness` = 0-100 % (light),
`value` = a number (number), `value` = an option (select), nothing (button).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from werkzeug.datastructures import MultiDict

from hub.errors import CommandRefused
from hub.services.device_control import ComponentView, brightness_percent, value_words
from linkhub_protocol import BRIGHTNESS_MAX, Component, ComponentKind


@dataclass(frozen=True, slots=True)
class ComponentRow:
    """One component as the template shows it."""

    key: str
    name: str
    kind: str
    words: str  # its value in words, or "not reported yet"
    known: bool
    at_s: float | None
    commandable: bool
    # A switch's or a light's: whether it is on now (None: not known yet).
    on: bool | None = None
    brightness_pct: int | None = None
    value: Any = None
    unit: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    options: tuple[str, ...] = ()


def component_rows(views: list[ComponentView]) -> list[ComponentRow]:
    return [_row(view) for view in views]


def _row(view: ComponentView) -> ComponentRow:
    component, value = view.component, view.value
    if component.kind is ComponentKind.BUTTON:
        words = ""  # a button has no state: only its control shows
    elif view.known:
        words = value_words(component, value)
    else:
        words = "not reported yet"
    on: bool | None = None
    brightness: int | None = None
    if view.known and component.kind is ComponentKind.SWITCH:
        on = bool(value)
    if view.known and component.kind is ComponentKind.LIGHT:
        on, brightness = bool(value["on"]), brightness_percent(value["brightness"])
    return ComponentRow(
        key=component.key,
        name=component.name,
        kind=str(component.kind),
        words=words,
        known=view.known,
        at_s=view.at_s,
        commandable=component.commandable,
        on=on,
        brightness_pct=brightness,
        value=value,
        unit=component.unit,
        minimum=component.minimum,
        maximum=component.maximum,
        step=component.step,
        options=component.options,
    )


class BadControl(CommandRefused):
    """A control's form that says nothing a component takes; the message says what."""

    def __init__(self, message: str) -> None:
        super().__init__("invalid_value", message)


def command_from_form(component: Component, form: MultiDict[str, str]) -> Any:
    """The command value a control's form stands for (checked against the
    component later, by DeviceControl). BadControl with what to fix."""
    match component.kind:
        case ComponentKind.SWITCH:
            return _on_off(form.get("value", ""))
        case ComponentKind.LIGHT:
            if "brightness" in form:
                percent = _number(form["brightness"], "brightness")
                if not 0 <= percent <= 100:
                    raise BadControl("The brightness is a percentage, from 0 to 100.")
                return {"brightness": round(percent * BRIGHTNESS_MAX / 100)}
            return {"on": _on_off(form.get("on", ""))}
        case ComponentKind.NUMBER:
            number = _number(form.get("value", ""), component.name)
            return int(number) if number.is_integer() else number
        case ComponentKind.SELECT:
            return form.get("value", "")
        case ComponentKind.BUTTON:
            return None
    raise BadControl(f"{component.name} only reports; it has no controls.")


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise BadControl("Choose on or off.")
    return text == "on"


def _number(text: str, what: str) -> float:
    try:
        return float(text.strip().replace(",", "."))
    except ValueError:
        raise BadControl(f"{what}: type a number, such as 21.5.") from None
