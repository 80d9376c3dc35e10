"""The account preferences the hub knows by name: what each may hold, and the
words for it, so the pages can offer a proper control instead of a JSON box and
refuse a wrong value with a reason. Any other key is a custom setting, sent to
devices as typed.

Pure: the zone names are handed in (the shell reads the system's zoneinfo), so
these rules run the same in a test without a tz database.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from hub.errors import SettingsRefused

TIME_ZONE = "time_zone"
TEMPERATURE_UNIT = "temperature_unit"
LOCALE = "locale"
THEME = "theme"


@dataclass(frozen=True, slots=True)
class Choice:
    value: str
    words: str


@dataclass(frozen=True, slots=True)
class KnownPreference:
    key: str
    label: str
    hint: str
    # The values offered; empty for the time zone, whose list is the system's.
    choices: tuple[Choice, ...] = ()


TEMPERATURE_UNITS = (Choice("C", "Celsius (°C)"), Choice("F", "Fahrenheit (°F)"))
THEMES = (Choice("auto", "Like the phone or computer"), Choice("light", "Light"), Choice("dark", "Dark"))
# Languages with regions the way devices and browsers name them (BCP 47, RFC 5646):
# a short list people pick from; a device shows dates and numbers in this style.
LOCALES = (
    Choice("en-GB", "English (United Kingdom)"),
    Choice("en-US", "English (United States)"),
    Choice("de-DE", "Deutsch (Deutschland)"),
    Choice("es-ES", "Español (España)"),
    Choice("fr-FR", "Français (France)"),
    Choice("it-IT", "Italiano (Italia)"),
    Choice("nl-NL", "Nederlands (Nederland)"),
    Choice("pl-PL", "Polski (Polska)"),
    Choice("pt-BR", "Português (Brasil)"),
    Choice("sv-SE", "Svenska (Sverige)"),
)

KNOWN: tuple[KnownPreference, ...] = (
    KnownPreference(
        TIME_ZONE, "Time zone", "Devices show their clocks in it; these pages show times in it too."
    ),
    KnownPreference(
        TEMPERATURE_UNIT, "Temperature unit", "How devices show temperatures.", TEMPERATURE_UNITS
    ),
    KnownPreference(LOCALE, "Language and region", "How devices show dates and numbers.", LOCALES),
    KnownPreference(THEME, "Theme", "Light or dark screens on devices that have one.", THEMES),
)
KNOWN_KEYS = frozenset(preference.key for preference in KNOWN)

# A custom key as people and firmware can both type it: lower case, digits and
# underscores, starting with a letter (no spaces, no capitals that look alike).
CUSTOM_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")


def check_custom_key(key: str) -> str:
    """The key as given, if a person may make a custom setting of it."""
    if not CUSTOM_KEY.fullmatch(key):
        raise SettingsRefused(
            "invalid_request",
            f"{key[:64]!r} cannot be a setting name: use 1-64 lower-case letters, digits and "
            "underscores, starting with a letter (like night_mode).",
        )
    return key


def checked_known(form: Mapping[str, str], zones: Collection[str]) -> dict[str, Any]:
    """The known preferences a form sets, each checked; a blank field removes it
    (the device then uses its own default). SettingsRefused names the first wrong one."""
    change: dict[str, Any] = {}
    for preference in KNOWN:
        if preference.key not in form:
            continue
        value = form[preference.key].strip()
        if not value:
            change[preference.key] = None
            continue
        allowed = {choice.value for choice in preference.choices} if preference.choices else zones
        if value not in allowed:
            raise SettingsRefused(
                "invalid_request", f"{preference.label}: {value[:64]!r} is not one of the choices offered."
            )
        change[preference.key] = value
    return change


def words_for(key: str, value: object) -> str | None:
    """A known preference's value as its choice's words; None for anything else."""
    for preference in KNOWN:
        if preference.key == key:
            for choice in preference.choices:
                if choice.value == value:
                    return choice.words
            return value if isinstance(value, str) else None
    return None
