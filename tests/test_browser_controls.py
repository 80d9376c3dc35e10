"""A device's controls on its page (issue 15), in real Chromium at 360 px and at
desktop width: each component with its state and when it came, a switch that
toggles, a brightness slider, a number, a select and a button, all plain forms
(they work with JavaScript off), the state refreshing by itself when the device
changes from elsewhere (Home Assistant), and a refused command said plainly.
Simulated devices with profiles answer the commands on the session's real
mosquitto; one device sends a long description of its own."""

# ruff: noqa: F811  (pytest fixtures imported from test_browser are parameters here)

from __future__ import annotations

import html
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import HubFactory, RunningBroker, hub_pages, wait_until
from conftest import csrf_token as csrf_token_of
from device_doubles import RawClient
from playwright.sync_api import Browser, expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    LONG_NAME,
    OWNER,
    PHONE,
    Phone,
    PhoneFactory,
    browser,
    check_phone_page,
    chromium_present,
    owner_hub,
    phone_for,
    serving,
    sign_in,
)
from test_device_control import commands_recorded, device_client, link_profile
from test_unlink import RunThread
from test_web import sign_in as web_sign_in
from test_web import signed_in_client, web_app

import linkhub_protocol as protocol
from hub.core.origin import Origin
from hub.daemon import Hub
from linkhub_protocol import Component, ComponentKind, DeviceDescription, DeviceStatus, StateReport
from web import WebConfig

pytestmark = pytest.mark.timeout(180)

# One poll of the device page with controls on it (web/static/link.js).
POLL_MS = 2000
LONG_OPTION = "The far end of the garden first, then the beds along the house"


@pytest.fixture
def running() -> Iterator[list[RunThread]]:
    threads: list[RunThread] = []
    yield threads
    for thread in threads:
        thread.close()


def start(hub: Hub, broker: RunningBroker, path: Path, profile: str, name: str, runs: list[RunThread]) -> str:
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    device_id = link_profile(hub, broker, path, owner.id, profile, name)
    runs.append(RunThread(path))
    runs[-1].wait_for("online")
    wait_until(lambda: hub.control.state_of(device_id), what=f"{name}'s first state")
    return device_id


def test_a_lamp_switched_and_dimmed_on_a_phone(
    make_hub: HubFactory,
    broker: RunningBroker,
    phone_for: PhoneFactory,
    tmp_path: Path,
    running: list[RunThread],
) -> None:
    hub = owner_hub(make_hub)
    lamp = start(hub, broker, tmp_path / "lamp.json", "lamp", LONG_NAME, running)
    phone = phone_for(hub)
    page = phone.page
    page.clock.install()
    sign_in(phone)
    phone.go(f"/devices/{lamp}")
    light = page.locator('[data-component="light"]')
    expect(light.locator(".component-value")).to_have_text("on, brightness 78%")
    expect(light.locator(".component-at")).to_have_text("· just now")
    check_phone_page(phone, "60-device-controls-lamp")

    light.get_by_role("button", name="Turn Light off").click()
    # "answered" once the lamp answers within the page's wait, else "sent": either way the
    # page's next poll shows the state (polls on Playwright's clock, moved here).
    expect(page.locator("[data-status]").first).to_contain_text("Light: off — ")
    assert running[0].wait_for("command")["state"] == {"on": False, "brightness": 200}
    wait_until(lambda: not hub.control.state_of(lamp)["light"]["on"], what="the lamp off")
    page.clock.run_for(POLL_MS)
    expect(light.locator(".component-value")).to_have_text("off, brightness 78%")
    # Reload is safe: it shows the page, and sends nothing again.
    page.reload()
    expect(light.locator(".component-value")).to_have_text("off, brightness 78%")

    light.get_by_label("Brightness (%)").fill("40")
    light.get_by_role("button", name="Set").click()
    assert running[0].wait_for("command")["state"] == {"on": False, "brightness": 102}
    wait_until(lambda: hub.control.state_of(lamp)["light"]["brightness"] == 102, what="the lamp dimmed")
    page.clock.run_for(POLL_MS)
    expect(light.locator(".component-value")).to_have_text("off, brightness 40%")

    # Switched on elsewhere (Home Assistant goes through the same check): the page follows.
    hub.control.send_command(lamp, "light", {"on": True}, origin=Origin.HOME_ASSISTANT)
    wait_until(lambda: hub.control.state_of(lamp)["light"]["on"], what="the lamp on")
    page.clock.run_for(POLL_MS)
    expect(light.locator(".component-value")).to_have_text("on, brightness 40%")
    expect(light.get_by_role("button", name="Turn Light off")).to_be_visible()
    check_phone_page(phone, "61-device-controls-lamp-after")


def describe_irrigation(hub: Hub, broker: RunningBroker, path: Path) -> str:
    """A device that describes itself with long names and options, through its own login."""
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    device_id = link_profile(
        hub, broker, path, owner.id, "sensor", "Garden Irrigation Controller By The Shed"
    )
    _, client = device_client(broker, path)
    components = (
        Component(
            "zone", ComponentKind.SELECT, "Which zone waters next", True, options=(LONG_OPTION, "Beds")
        ),
        Component("rain", ComponentKind.BINARY_SENSOR, "Rain detected by the sensor on the roof", False),
        Component(
            "minutes", ComponentKind.NUMBER, "Minutes of watering per zone", True, "min", None, 1, 120, 1
        ),
        Component("moisture", ComponentKind.SENSOR, "Soil moisture in the far bed", False, "%", "moisture"),
        Component("valve", ComponentKind.SWITCH, "Main valve", True),
        Component("flush", ComponentKind.BUTTON, "Flush the pipes once", True),
    )
    description = DeviceDescription(components, manufacturer="Garden Works", model="GW-Irrigate 8")
    root = protocol.device_root(device_id)
    assert client.publish(f"{root}/{protocol.DESCRIPTION}", protocol.encode(description))
    state = {"zone": LONG_OPTION, "rain": False, "minutes": 15, "moisture": 31.5, "valve": False}
    assert client.publish(f"{root}/{protocol.STATE}", protocol.encode(StateReport(state)), retain=True)
    assert client.publish(
        protocol.device_status_topic(device_id), protocol.encode(DeviceStatus(True)), retain=True
    )
    client.close()  # its will is not set: it stays "online" for the page
    wait_until(lambda: hub.control.state_of(device_id).get("zone") == LONG_OPTION, what="its state")
    return device_id


def test_a_thermostat_and_a_long_description_on_a_phone(
    make_hub: HubFactory,
    broker: RunningBroker,
    phone_for: PhoneFactory,
    tmp_path: Path,
    running: list[RunThread],
) -> None:
    hub = owner_hub(make_hub)
    thermostat = start(hub, broker, tmp_path / "thermostat.json", "thermostat", "Hall Thermostat", running)
    irrigation = describe_irrigation(hub, broker, tmp_path / "irrigation.json")
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)

    phone.go(f"/devices/{irrigation}")
    expect(page.locator(".component")).to_have_count(6)
    expect(page.locator('[data-component="moisture"] .component-value')).to_have_text("31.5 %")
    expect(page.locator('[data-component="rain"] .component-value')).to_have_text("off")
    check_phone_page(phone, "62-device-controls-long")

    phone.go(f"/devices/{thermostat}")
    target = page.locator('[data-component="target"]')
    expect(target.locator(".component-value")).to_have_text("21 °C")
    target.get_by_label("New value in °C, 5 to 30").fill("22.5")
    target.get_by_role("button", name="Set").click()
    # Shown at once when the thermostat answers within the page's wait, else by the next poll.
    expect(target.locator(".component-value")).to_have_text("22.5 °C", timeout=15_000)
    mode = page.locator('[data-component="mode"]')
    mode.get_by_label("Change to").select_option("eco")
    mode.get_by_role("button", name="Set").click()
    expect(mode.locator(".component-value")).to_have_text("eco", timeout=15_000)
    page.get_by_role("button", name="Press Boost").click()
    expect(target.locator(".component-value")).to_have_text("23.5 °C", timeout=15_000)
    expect(page.locator('[data-component="temperature"] form')).to_have_count(0)  # a sensor has no control
    check_phone_page(phone, "63-device-controls-thermostat")


def test_the_controls_work_without_javascript(
    make_hub: HubFactory, broker: RunningBroker, browser: Browser, tmp_path: Path, running: list[RunThread]
) -> None:
    hub = owner_hub(make_hub)
    plug = start(hub, broker, tmp_path / "plug.json", "plug", "Desk Plug", running)
    app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16)))
    with serving(app) as origin:
        context = browser.new_context(viewport=PHONE, java_script_enabled=False)
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            phone = Phone(page, origin)
            sign_in(phone)
            phone.go(f"/devices/{plug}")
            power = page.locator('[data-component="power"]')
            expect(power.locator(".component-value")).to_have_text("on")
            power.get_by_role("button", name="Turn Power off").click()
            expect(page.locator("[data-status]").first).to_contain_text("Power: off — ")
            wait_until(lambda: not hub.control.state_of(plug)["power"], what="the plug off")
            page.reload()  # without JavaScript a page shows a change when it is loaded
            expect(power.locator(".component-value")).to_have_text("off")
            expect(page.locator('[data-component="power_w"] .component-value')).to_have_text("0 W")
            page.go_back()  # Back, then Reload: the page again, no command sent twice
            page.reload()
            expect(page.locator("h1")).to_have_text("Desk Plug")
        finally:
            context.close()
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    assert len(commands_recorded(hub, owner.id, 1)) == 1


def test_a_refused_command_says_why_and_sends_nothing(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path, running: list[RunThread]
) -> None:
    hub = owner_hub(make_hub)
    thermostat = start(hub, broker, tmp_path / "thermostat.json", "thermostat", "Hall Thermostat", running)
    client = signed_in_client(hub)
    page = client.get(f"/devices/{thermostat}")
    token = csrf_token_of(page)
    cases = {
        (("key", "target"), ("value", "35")): "must be a number from 5 to 30",
        (("key", "target"), ("value", "warm")): "type a number",
        (("key", "mode"), ("value", "turbo")): "must be one of: off, heat, eco",
        (("key", "temperature"), ("value", "20")): "only reports",
        (("key", "fan"), ("value", "on")): "has no control called 'fan'",
    }
    for fields, words in cases.items():
        refused = client.post(f"/devices/{thermostat}/command", data={"csrf_token": token, **dict(fields)})
        assert refused.status_code == 400, fields
        assert words in html.unescape(refused.get_data(as_text=True)), (fields, words)
    running[0].close()
    wait_until(lambda: not hub.links.list_devices()[0].online, what="the thermostat offline")
    offline = client.post(
        f"/devices/{thermostat}/command", data={"csrf_token": token, "key": "target", "value": "22"}
    )
    assert offline.status_code == 400
    assert "is offline: the command was not sent" in offline.get_data(as_text=True)
    assert not [e for e in hub.activity.recent(hub.accounts.find(OWNER).id) if e.kind.value == "command_sent"]  # type: ignore[union-attr]
    status = json.loads(client.get(f"/devices/{thermostat}/status.json").get_data())
    assert set(status["components"]) == {"temperature", "target", "mode", "heating", "boost"}


def test_the_owner_makes_home_assistant_s_login_on_the_settings_page(
    make_hub: HubFactory, broker: RunningBroker, phone_for: PhoneFactory
) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    phone.go("/settings")
    section = page.locator("#home-assistant")
    expect(section).to_have_text("Home Assistant")
    page.get_by_role("button", name="Make Home Assistant's login").click()
    expect(page.locator("[data-status]").first).to_contain_text("Home Assistant's login is made")
    login = page.locator(".ha-login")
    expect(login.locator("dt")).to_have_text(["Broker", "Port", "Username", "Password"])
    password = login.locator("dd").nth(3).inner_text()
    # What the page shows logs in on the broker (and reads the discovery prefix).
    client = RawClient(broker.port, "linkhub-homeassistant", password)
    try:
        assert not client.connack_reason.is_failure
    finally:
        client.close()
    page.reload()  # the same login again, not a new one
    expect(login.locator("dd").nth(3)).to_have_text(password)
    check_phone_page(phone, "64-settings-home-assistant")

    # A member sees no such section, and cannot post it.
    hub.accounts.create("bob", "bob's long password")
    member = web_app(hub).test_client()
    assert web_sign_in(member, "bob", "bob's long password").status_code == 302
    settings = member.get("/settings")
    assert "Home Assistant" not in settings.get_data(as_text=True)
    denied = member.post("/settings/home-assistant", data={"csrf_token": csrf_token_of(settings)})
    assert denied.status_code == 404
