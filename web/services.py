"""The hub services the pages use, kept on the app so that views never import a
running hub (or the database) and tests can hand in a real hub's services."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from flask import Flask, current_app

from hub.core.accounts import AccountDirectory
from hub.core.rate_limits import LimitsPolicy
from hub.services.activity import ActivityLog
from hub.services.apps import AppService
from hub.services.device_control import DeviceControl
from hub.services.handover import Handover
from hub.services.home_assistant import HomeAssistantLogin
from hub.services.household import Household
from hub.services.links import LinkService
from hub.services.settings import SettingsService
from web.sessions import SessionRecords

EXTENSION_KEY = "linkhub"


@dataclass(frozen=True, slots=True)
class WebServices:
    links: LinkService
    accounts: AccountDirectory
    settings: SettingsService
    activity: ActivityLog
    household: Household
    handover: Handover
    limits: LimitsPolicy
    clock: Callable[[], float]
    sessions: SessionRecords
    session_lifetime_s: float
    # Monotonic seconds for the limits' windows (WebConfig.limits_clock).
    limits_clock: Callable[[], float] = time.monotonic
    # /link lists the devices waiting to be linked (WebConfig.waiting_list).
    waiting_list: bool = True
    # What devices have and do (their components, state and commands); None in
    # apps built without a hub's device control (the account service's tests).
    control: DeviceControl | None = None
    # Makes Home Assistant's broker login (the Settings page); None: discovery is off.
    home_assistant_login: Callable[[], HomeAssistantLogin] | None = None
    # Apps linked over HTTP (OAuth); None in apps built without them.
    apps: AppService | None = None


def install(app: Flask, services_: WebServices) -> None:
    app.extensions[EXTENSION_KEY] = services_


def services() -> WebServices:
    """The services of the app handling the current request."""
    return cast(WebServices, current_app.extensions[EXTENSION_KEY])
