"""Where a change was made: one set of words for the activity log, whichever
service records it (links, settings, the household)."""

from __future__ import annotations

from enum import StrEnum


class Origin(StrEnum):
    """Where a person (or a device) made a change. Stored as its value in the
    activity log and the change log, so the values never change."""

    SETUP = "setup"  # the first-run page that makes the owner
    WEB = "web"  # a page, by the signed-in person
    API = "api"  # the pages' JSON API (/api/v1), by the signed-in person
    CLI = "cli"  # the `linkhub` command: the hub's operator
    DEVICE = "device"  # the device itself (a change made on it)
    HOME_ASSISTANT = "home_assistant"  # Home Assistant, on the command topics the hub gives it
    APP = "app"  # an app linked over HTTP (OAuth), with its token, for the account that approved it


_WORDS = {
    Origin.SETUP: "on the first-run setup page",
    Origin.WEB: "on the web page",
    Origin.API: "through the web API",
    Origin.CLI: "with the linkhub command",
    Origin.DEVICE: "on the device itself",
    Origin.HOME_ASSISTANT: "from Home Assistant",
    Origin.APP: "by a linked app",
}


def origin_words(origin: str) -> str:
    """"on the web page", ...; a value stored by another version is named as it is."""
    try:
        return _WORDS[Origin(origin)]
    except ValueError:
        return f"by {origin}"
