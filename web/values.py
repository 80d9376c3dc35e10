"""Settings values as people type and read them, shared by the pages, the control
API and the CLI, so that `volume=7` means the number 7 wherever it is typed.

A typed value is JSON if it parses as JSON, else the text itself: `7` is a
number, `true` a boolean, `{"a": 1}` an object, `dark` the string "dark". JSON
`null` deletes the key (a merge patch, RFC 7386). Plain functions, no request
context, so the CLI uses them too.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hub.core.preferences import check_custom_key, words_for
from hub.core.settings_merge import JsonObject
from hub.errors import SettingsRefused
from hub.services.settings import DeviceSettingsView
from linkhub_protocol import values


def parse_value(text: str) -> Any:
    """The value a person meant (linkhub_protocol.values, shared with the CLI and
    the simulated device); too deep to read is refused as a bad request."""
    try:
        return values.parse_value(text)
    except values.ValueTooDeep as exc:
        raise SettingsRefused("invalid_request", str(exc)) from None


def non_finite_path(value: Any, path: str = "changes") -> str | None:
    """Where a JSON body from a client holds NaN or Infinity (Flask's parser lets them in)."""
    if isinstance(value, float) and not math.isfinite(value):
        return path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = non_finite_path(item, f"{path}.{key}" if isinstance(key, str) else f"{path}[{key}]")
        if found:
            return found
    return None


def show_value(value: Any) -> str:
    """A value as JSON, the way it would be typed back in."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def view_json(view: DeviceSettingsView) -> dict[str, Any]:
    """A device's settings view for JSON clients: every field, plus `synced`."""
    return dataclasses.asdict(view) | {"synced": view.synced}


def view_from_json(body: dict[str, Any]) -> DeviceSettingsView:
    """The view back from `view_json`, so the CLI shows it with the pages' own rules."""
    names = [field.name for field in dataclasses.fields(DeviceSettingsView)]
    return DeviceSettingsView(**{name: body[name] for name in names})


def typed_change(form: Mapping[str, str]) -> JsonObject:
    """The merge patch one settings form asks for: set `key` to `value`, or remove it.

    Both the preferences page and a device's page post the same three fields
    (`key`, `value`, `action`), so they read them here alike. A new key must be
    a plain name (hub/core/preferences.py); removing takes any key, so one made
    before that rule can still go. A value that starts like JSON must be JSON:
    `{"unit": "C"` is a typing mistake, not the text to store.
    """
    key = form.get("key", "").strip()
    if not key:
        raise SettingsRefused("invalid_request", "Name the setting to change.")
    if form.get("action") == "remove":
        return {key: None}
    check_custom_key(key)
    text = form.get("value", "")
    value = parse_value(text)
    if value == text and text.strip()[:1] in JSON_OPENERS:
        # Kept as text although it starts like JSON: it did not parse. Parsed
        # again only here, for the parser's own words and position.
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsRefused(
                "invalid_request",
                f"The value is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}. "
                'Fix it, or type plain text without {, [ or " at the start.',
            ) from None
    return {key: value}


# What JSON objects, arrays and strings start with.
JSON_OPENERS = ("{", "[", '"')


def readable(value: Any) -> str:
    """A value as a person reads it: text without quotes, yes/no, numbers as
    written; objects and lists as JSON with spaces after the commas, so they
    wrap between items rather than mid-word."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return json.dumps(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(", ", ": "))


# Where a desired value comes from (hub/core/settings_merge.py: the device's own wins).
SOURCE_DEVICE = "this device's own setting"
SOURCE_ACCOUNT = "account preference"
SOURCE_REPORTED_ONLY = "reported by the device only"


@dataclass(frozen=True, slots=True)
class SettingRow:
    """One top-level key the hub wants or the device reports, ready to show."""

    key: str
    desired: str | None  # JSON text; None when the hub does not want the key
    reported: str | None  # JSON text; None when the device does not report it
    source: str
    own: bool  # the device's own setting, which this page may remove
    synced: bool
    desired_words: str | None = None  # as a person reads it (readable)
    reported_words: str | None = None

    @property
    def status_words(self) -> str:
        if self.synced:
            return "Up to date"
        if self.desired is None:
            return "Only on the device"
        return "Waiting for the device"


def setting_rows(view: DeviceSettingsView) -> list[SettingRow]:
    """Every key of desired and reported, so a key the device still runs after it
    was removed shows up (waiting) instead of silently disappearing.

    A row is synced when both sides hold the same JSON: compared as JSON text,
    since Python finds `True == 1` and a device reporting `1` for `true` is not.
    """
    reported = view.reported or {}
    rows = []
    for key in sorted(view.desired.keys() | reported.keys()):
        if key in view.settings:
            source = SOURCE_DEVICE
        elif key in view.desired:
            source = SOURCE_ACCOUNT
        else:
            source = SOURCE_REPORTED_ONLY
        desired = show_value(view.desired[key]) if key in view.desired else None
        shown = show_value(reported[key]) if key in reported else None
        rows.append(
            SettingRow(
                key=key,
                desired=desired,
                reported=shown,
                source=source,
                own=key in view.settings,
                synced=desired is not None and desired == shown,
                desired_words=shown_words(key, view.desired[key]) if key in view.desired else None,
                reported_words=shown_words(key, reported[key]) if key in reported else None,
            )
        )
    return rows


def shown_words(key: str, value: Any) -> str:
    """A known preference by its choice's words ("Celsius (°C)"), anything else readable."""
    return words_for(key, value) or readable(value)


def version_status(view: DeviceSettingsView, *, online: bool | None = None) -> str:
    """Where a device's settings are, in words. Versions, not values, decide
    "up to date": a device may run the right values by chance, but only
    reporting the version says it has applied every change. `online` (when
    known) says why it is waiting."""
    if not view.desired and not view.reported:
        return "No settings yet"
    if view.synced:
        return "Up to date"
    if online is False:
        return "Waiting for the device: it is offline, and gets the changes when it connects"
    if view.applied_version is None:
        return "Waiting for the device to confirm its first settings"
    return "Waiting for the device to confirm the latest change"
