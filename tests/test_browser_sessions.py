"""Sessions that end on the hub, in real Chromium (issue 19, item 3): the cookie
of a phone, copied into another browser as someone on the Wi-Fi could, opens
nothing once the phone signed out; "Sign out everywhere" on the account page
ends every session of the account. The page checks of tests/test_browser.py
apply, at 360 px and at desktop width."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from conftest import HubFactory, RunningBroker, hub_pages
from device_doubles import BootstrapDevice
from playwright.sync_api import Browser, BrowserContext, expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    OWNER,
    PASSWORD,
    PHONE,
    SCREENSHOTS,
    Phone,
    browser,
    check_phone_page,
    chromium_present,
    message,
    owner_hub,
    serving,
    sign_in,
)

from hub.services.links import CodeStatus
from linkhub_protocol import DeviceInfo
from web import WebConfig

pytestmark = pytest.mark.usefixtures("chromium_present")
DESKTOP = {"width": 1280, "height": 800}


@pytest.fixture
def contexts(browser: Browser) -> Iterator[ExitStack]:  # noqa: F811
    with ExitStack() as stack:
        yield stack


def open_on(browser: Browser, stack: ExitStack, origin: str, viewport: dict[str, int]) -> Phone:  # noqa: F811
    context: BrowserContext = browser.new_context(viewport=viewport)
    stack.callback(context.close)
    phone = Phone(context.new_page(), origin)
    phone.page.set_default_timeout(15_000)
    phone.page.on("request", lambda request: phone.requests.append(request.url))
    return phone


def check_desktop_page(phone: Phone, name: str) -> None:
    """The desktop-width version of check_phone_page: no sideways scroll; a screenshot to look at."""
    page = phone.page
    page.wait_for_load_state()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= DESKTOP["width"], f"{name} scrolls sideways"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_a_copied_cookie_is_signed_out_with_its_owner_and_everywhere_ends_all(
    make_hub: HubFactory,
    browser: Browser,  # noqa: F811
    contexts: ExitStack,
) -> None:
    hub = owner_hub(make_hub)
    app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16)))
    origin = contexts.enter_context(serving(app))
    phone = open_on(browser, contexts, origin, PHONE)
    sign_in(phone)

    # Someone on the Wi-Fi copies the phone's cookie into their own browser.
    thief = open_on(browser, contexts, origin, DESKTOP)
    thief.page.context.add_cookies(phone.page.context.cookies())
    thief.go("/devices")
    expect(thief.page.locator("h1")).to_have_text("Your devices")  # the copy works while the session lives

    phone.page.get_by_role("button", name="Sign out").click()
    expect(phone.page).to_have_url(re.compile(r"/login$"))
    thief.page.reload()
    expect(thief.page).to_have_url(re.compile(r"/login\?next=/devices$"))
    assert thief.page.request.get(origin + "/api/v1/devices").status == 401

    # Two sessions of the account, then "Sign out everywhere" on the phone's account page.
    sign_in(phone)
    laptop = open_on(browser, contexts, origin, DESKTOP)
    sign_in(laptop)
    laptop.go("/settings")
    check_desktop_page(laptop, "60-settings-sign-out-everywhere-desktop")
    phone.go("/account")
    check_phone_page(phone, "61-account-sign-out-everywhere")
    phone.page.get_by_role("button", name="Sign out everywhere").click()
    expect(phone.page).to_have_url(re.compile(r"/login$"))
    assert message(phone.page) == ("ok", "You are signed out everywhere: on this device and every other one.")
    check_phone_page(phone, "62-signed-out-everywhere")
    phone.page.reload()  # Reload after the post: nothing is sent again, the page just loads
    expect(phone.page.locator("h1")).to_have_text("Sign in")
    laptop.page.reload()
    expect(laptop.page).to_have_url(re.compile(r"/login\?next=/settings$"))
    # And the account signs in again as before.
    sign_in(laptop, OWNER, PASSWORD)
    expect(laptop.page.locator("h1")).not_to_have_text("Sign in")


LONG_NAME = "Maximilian-Alexander Featherstonehaugh-Montgomery of Little Snoring"[:64]
LONG_LAMP = DeviceInfo(
    name="Living room ceiling light above the big sofa by the window",
    model="LH-Lamp 2 Pro Max (2026 revision, warm white and colour)",
    address="192.168.178.254",
    firmware="1.0.3",
)


def test_a_planted_cookie_is_refused_and_the_confirm_page_names_the_account(
    make_hub: HubFactory,
    browser: Browser,  # noqa: F811
    contexts: ExitStack,
    broker: RunningBroker,
) -> None:
    hub = make_hub()
    hub.accounts.create(LONG_NAME, PASSWORD)
    hub.accounts.create("mallory", PASSWORD)
    app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16)))
    origin = contexts.enter_context(serving(app))
    device = BootstrapDevice(broker.port, LONG_LAMP)
    contexts.callback(device.close)
    code = device.request().user_code

    for viewport in (PHONE, DESKTOP):
        phone = open_on(browser, contexts, origin, viewport)
        sign_in(phone, LONG_NAME, PASSWORD)
        phone.go(f"/link?code={code}")
        phone.page.get_by_role("button", name="Continue").click()
        expect(phone.page.locator(".link-account-name")).to_have_text(LONG_NAME)
        expect(phone.page.get_by_role("button", name=f"Approve for {LONG_NAME}")).to_be_visible()
        # The account is on the first screen, above the code, without scrolling.
        box = phone.page.locator(".link-account-name").bounding_box()
        assert box is not None and box["y"] + box["height"] <= viewport["height"], box
        if viewport is PHONE:
            check_phone_page(phone, "63-confirm-names-the-account")
        else:
            check_desktop_page(phone, "63-confirm-names-the-account-desktop")

    # A page on another port of this host plants the planter's session for /link.
    planter = open_on(browser, contexts, origin, PHONE)
    sign_in(planter, "mallory", PASSWORD)
    planted = next(c for c in planter.page.context.cookies() if c["name"] == "linkhub_session")
    phone.page.context.add_cookies([{**planted, "path": "/link"}])
    phone.go(f"/link?code={code}")
    expect(phone.page.locator("h1")).to_have_text("Clear this site's cookies")
    assert "mallory" not in phone.page.content()
    check_desktop_page(phone, "64-planted-cookie-refused-desktop")
    # Nothing was linked, and the code still waits for its person.
    assert hub.links.lookup_code(code).status is CodeStatus.PENDING
