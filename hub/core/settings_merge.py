"""The settings rules, as plain functions: merging, limits, ownership and version
conflicts. No I/O; the settings service and the account service both use these.

Rules (also in docs/protocol.md, "Settings"):
- A change is a JSON merge patch (RFC 7386): objects merge key by key, any
  other value (arrays included) replaces what was there, `null` deletes.
- A device's desired document is the account's preferences with the device's
  own settings merged over them: the device's setting wins where both name
  the same key (deep, leaf by leaf).
- Top-level keys of the account's preferences belong to the account: a device
  may not change them, unless the device's own settings already override that
  key (then it changes its own override).
- Every accepted change gets the next version. A change from a device names
  the desired version it was based on; if a key it touches changed after that
  version, the change is refused (`version_conflict`) and the newer value stands.
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from hub.errors import LinkHubError
from linkhub_protocol import ErrorCode, escape_hidden, hidden_character

MAX_DOCUMENT_BYTES = 8192  # AWS IoT shadows allow 8 KB for desired + reported
MAX_DEPTH = 6
MAX_KEY_LENGTH = 64
RESERVED_PREFIX = "$"

JsonObject = dict[str, Any]


class SettingsError(LinkHubError, ValueError):
    """A document or change that breaks a rule; `code` is the protocol error code
    the device receives for it."""

    def __init__(self, code: ErrorCode, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description


def merge_patch(document: JsonObject, patch: JsonObject) -> JsonObject:
    """RFC 7386 applied to a copy of `document`."""
    result = copy.deepcopy(document)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict):
            base = result.get(key)
            result[key] = merge_patch(base if isinstance(base, dict) else {}, value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def effective(preferences: JsonObject, device_settings: JsonObject) -> JsonObject:
    """The desired document: preferences, with the device's own settings winning."""
    return merge_patch(preferences, device_settings)


def diff(old: JsonObject, new: JsonObject) -> JsonObject:
    """The merge patch that turns `old` into `new` (empty when they are equal)."""
    patch: JsonObject = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        if key not in old:
            patch[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(old[key], dict):
            nested = diff(old[key], value)
            if nested:
                patch[key] = nested
        elif old[key] != value or type(old[key]) is not type(value):
            patch[key] = copy.deepcopy(value)
    return patch


def delta(desired: JsonObject, reported: JsonObject) -> JsonObject:
    """Desired values the device does not report yet (a shadow's `delta`)."""
    out: JsonObject = {}
    for key, value in desired.items():
        if isinstance(value, dict) and isinstance(reported.get(key), dict):
            nested = delta(value, reported[key])
            if nested:
                out[key] = nested
        elif key not in reported or reported[key] != value:
            out[key] = copy.deepcopy(value)
    return out


def validate_document(document: object, *, what: str = "settings", allow_null: bool = False) -> JsonObject:
    """A JSON object within the limits, or SettingsError naming the broken rule."""
    if not isinstance(document, dict):
        raise SettingsError(ErrorCode.INVALID_REQUEST, f"{what} must be a JSON object")
    _check(document, what, depth=1, allow_null=allow_null)
    size = len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_DOCUMENT_BYTES:
        raise SettingsError(
            ErrorCode.PAYLOAD_TOO_LARGE, f"{what} is {size} bytes; the limit is {MAX_DOCUMENT_BYTES}"
        )
    return document


def _check(value: object, path: str, *, depth: int, allow_null: bool) -> None:
    if isinstance(value, dict | list) and depth > MAX_DEPTH:  # objects and arrays nest; values do not
        raise SettingsError(ErrorCode.INVALID_REQUEST, f"{path} nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH:
                raise SettingsError(
                    ErrorCode.INVALID_REQUEST, f"keys in {path} must be 1-{MAX_KEY_LENGTH} characters"
                )
            hidden = hidden_character(key)
            if hidden is not None:  # the rule of names on the wire (linkhub_protocol/text.py)
                raise SettingsError(
                    ErrorCode.INVALID_REQUEST,
                    f"keys in {path} must not hold control or format characters "
                    f"(one holds {hidden}: '{escape_hidden(key)}')",
                )
            if key.startswith(RESERVED_PREFIX):
                raise SettingsError(
                    ErrorCode.NOT_OWNED, f"{path}.{key}: keys starting with $ belong to the hub"
                )
            _check(item, f"{path}.{key}", depth=depth + 1, allow_null=allow_null)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, f"{path}[{index}]", depth=depth + 1, allow_null=False)
    elif value is None and not allow_null:
        raise SettingsError(
            ErrorCode.INVALID_REQUEST, f"{path}: null is only allowed in a change, to delete a key"
        )
    elif isinstance(value, float) and not math.isfinite(value):  # NaN and Infinity are not JSON
        raise SettingsError(ErrorCode.INVALID_REQUEST, f"{path}: not a JSON number")


def not_owned_by_device(
    changes: JsonObject, preferences: JsonObject, device_settings: JsonObject
) -> list[str]:
    """Top-level keys of `changes` that belong to the account, not the device."""
    return sorted(key for key in changes if key in preferences and key not in device_settings)


def conflicting_keys(changes: JsonObject, key_versions: dict[str, int], base_version: int) -> list[str]:
    """Keys the change touches that were changed after the version it was based on."""
    return sorted(key for key in changes if key_versions.get(key, 0) > base_version)
