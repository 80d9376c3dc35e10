"""Settings values as a person types them (`KEY=VALUE` on a command line, a value
in a form), read the same way by the hub's CLI and pages and by the simulated
device, so that `volume=7` means the number 7 wherever it is typed.

A typed value is JSON if it is strict JSON, else the text itself: `7` is a
number, `true` a boolean, `{"a": 1}` an object, `dark` the string "dark". Python's
json accepts NaN, Infinity and 1e999 (as inf), which a device's JSON parser
cannot read back (RFC 8259 §6 has no such numbers): those stay text. Standard
library only, like the rest of the protocol package.
"""

from __future__ import annotations

import json
import math
from typing import Any


class ValueTooDeep(ValueError):
    """A value nested deeper than the JSON parser can read. Refused rather than
    kept as text: stored silently as a string, it would not be what was meant."""

    def __init__(self) -> None:
        super().__init__("the value nests too deeply to read")


class AssignmentError(ValueError):
    """Text that is not KEY=VALUE."""


class _NotStrictJson(ValueError):
    """NaN, Infinity or 1e999: JSON to Python, not to a device."""


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NotStrictJson(text)
    return number


def _no_constant(text: str) -> Any:
    raise _NotStrictJson(text)


def parse_value(text: str) -> Any:
    """The value a person meant: strict JSON if it is, else the text as typed;
    ValueTooDeep if it nests too deeply to read."""
    try:
        return json.loads(text, parse_float=_finite, parse_constant=_no_constant)
    except ValueError:
        # Not JSON, not strict JSON, or an integer longer than Python reads
        # (4300 digits, a plain ValueError): the text itself.
        return text
    except RecursionError:
        raise ValueTooDeep() from None


def parse_assignment(text: str) -> tuple[str, Any]:
    """KEY=VALUE, split at the first `=` so values may hold `=`; the key without
    surrounding spaces. AssignmentError or ValueTooDeep, with a message to show."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise AssignmentError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.strip(), parse_value(value)
    except ValueTooDeep as exc:
        raise AssignmentError(f"{key.strip()}: {exc}") from None
