"""The pages in a real browser on a phone-sized screen: Debian's Chromium driven
by Playwright, against the real web app served by waitress for a real hub on a
real mosquitto, with link requests from `BootstrapDevice` (the wire protocol,
as firmware speaks it).

Every page visited is also checked for what a phone needs (no sideways scroll,
one primary button, a label on every input, readable contrast, nothing loaded
from outside the hub) and saved as a screenshot in test-artifacts/screenshots/,
for a person to look at.

Chromium comes from apt (`LINKHUB_BOOTSTRAP_TEST=1 scripts/bootstrap`, which
`scripts/test` runs); Playwright cannot download its own browser here, so it
launches /usr/bin/chromium. A missing browser fails these tests: skipping them
would hide that the phone pages went untested.
"""

from __future__ import annotations

import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pyotp
import pytest
from conftest import FakeClock, HubFactory, RunningBroker, hub_pages
from device_doubles import BootstrapDevice
from flask import Flask
from playwright.sync_api import Browser, Page, expect, sync_playwright
from waitress.server import create_server

from hub.core.origin import Origin
from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.links import DECISION_MESSAGES, CodeStatus
from linkhub_protocol import ApprovedReply, DeviceInfo, ErrorCode, ErrorReply, PendingReply
from web import WebConfig

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium tries to reach Google and is refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"width": 360, "height": 740}
DESKTOP = {"width": 1280, "height": 800}
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"

OWNER = "alice"
PASSWORD = "correct horse battery"
LAMP = DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2", address="192.168.1.42", firmware="1.0.3")


@pytest.fixture(scope="session")
def chromium_present() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing, so the phone pages cannot be tested. Install it with "
            "`LINKHUB_BOOTSTRAP_TEST=1 scripts/bootstrap` (scripts/test does this); "
            "never `playwright install`, which cannot download here.",
            pytrace=False,
        )


# Every test here needs the browser: without it they fail, they do not skip.
pytestmark = pytest.mark.usefixtures("chromium_present")


# --- the browser, the served app and the phone -------------------------------------------


@pytest.fixture(scope="module")
def browser(chromium_present: None) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@contextmanager
def serving(app: Flask) -> Iterator[str]:
    """The app on a free loopback port, as `linkhub run` serves it; yields its origin."""
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, name="browser-test-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)
        assert not thread.is_alive(), "the web server did not stop"


@dataclass
class Phone:
    """One browser tab on a 360 px phone, remembering every request the pages made."""

    page: Page
    origin: str
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def go(self, path: str) -> None:
        self.page.goto(self.origin + path)

    def url(self, path: str) -> str:
        return self.origin + path


PhoneFactory = Callable[..., Phone]


@pytest.fixture
def phone_for(browser: Browser) -> Iterator[PhoneFactory]:
    """Serve the web app of a hub and open it on a phone; all is stopped at the end.

    At the end it also checks that the pages loaded nothing from outside the hub
    (the LAN may have no internet) and that the browser refused nothing (CSP).
    """
    phones: list[Phone] = []
    with ExitStack() as stack:

        def open_phone(hub: Hub, clock: Callable[[], float] = time.time) -> Phone:
            app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16), clock=clock))
            origin = stack.enter_context(serving(app))
            context = browser.new_context(
                viewport=PHONE, device_scale_factor=2, is_mobile=True, has_touch=True
            )
            stack.callback(context.close)
            phone = Phone(context.new_page(), origin)
            phone.page.set_default_timeout(15_000)
            phone.page.on("request", lambda request: phone.requests.append(request.url))
            phone.page.on(
                "console",
                lambda message: (
                    phone.console_errors.append(message.text) if message.type == "error" else None
                ),
            )
            phones.append(phone)
            return phone

        yield open_phone
    for phone in phones:
        assert phone.requests, "the phone made no requests at all"
        outside = [url for url in phone.requests if not url.startswith(phone.origin + "/")]
        assert outside == [], f"the pages loaded something from outside the hub: {outside}"
        refused = [text for text in phone.console_errors if "Refused" in text or "Security Policy" in text]
        assert refused == [], refused


@pytest.fixture
def devices(broker: RunningBroker) -> Iterator[Callable[..., BootstrapDevice]]:
    made: list[BootstrapDevice] = []

    def make(info: DeviceInfo = LAMP) -> BootstrapDevice:
        device = BootstrapDevice(broker.port, info)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


# --- what every phone page must do ----------------------------------------------------------

# WCAG 2 contrast of every element with its own text against the background it
# is drawn on: 4.5:1, or 3:1 for large text.
_LOW_CONTRAST_JS = """
() => {
  const parse = (c) => {
    const m = c.match(/rgba?\\(([^)]+)\\)/);
    if (!m) return null;
    const p = m[1].split(/[\\s,\\/]+/).filter(Boolean).map(Number);
    return { r: p[0], g: p[1], b: p[2], a: p.length > 3 ? p[3] : 1 };
  };
  const lum = ({ r, g, b }) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c.a > 0) return c;
    }
    return { r: 255, g: 255, b: 255, a: 1 };
  };
  const low = [];
  for (const el of document.querySelectorAll("body *")) {
    if (el.closest(".visually-hidden") || el.getClientRects().length === 0) continue;
    if (![...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
    const style = getComputedStyle(el);
    const [hi, lo] = [lum(parse(style.color)), lum(background(el))].sort((x, y) => y - x);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (parseInt(style.fontWeight, 10) >= 700 && size >= 18.66);
    if (ratio < (large ? 3 : 4.5)) low.push(`${el.tagName}.${el.className} ${ratio.toFixed(2)}`);
  }
  return low;
}
"""

_UNLABELLED_JS = """
() => [...document.querySelectorAll("input:not([type=hidden]), textarea, select")]
  .filter((el) => el.labels.length === 0 && !el.getAttribute("aria-label"))
  .map((el) => el.name || el.id)
"""


# Every visible element whose right edge is past the viewport: the page pans
# sideways onto blank space even where scrollWidth is clipped by a scroller.
_PAST_THE_EDGE_JS = """
() => {
  const width = document.documentElement.clientWidth;
  const past = [];
  for (const el of document.querySelectorAll("body *")) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 && box.height === 0) continue;
    if (box.right > width + 0.5) past.push(`${el.tagName}.${el.className} right=${Math.round(box.right)}`);
  }
  return past;
}
"""


def check_layout(phone: Phone, name: str) -> None:
    """No sideways scroll and nothing past the right edge at this viewport."""
    page = phone.page
    width = page.viewport_size["width"] if page.viewport_size else PHONE["width"]
    past = page.evaluate(_PAST_THE_EDGE_JS)
    scroll_width = page.evaluate("document.documentElement.scrollWidth")
    assert scroll_width <= width, f"{name} scrolls sideways at {width} ({scroll_width} px): {past}"
    assert past == [], f"{name} has elements past the edge at {width} px"


def check_phone_page(phone: Phone, name: str, *, primaries: int = 1) -> None:
    """What every page owes a person on a 360 px phone, and on a desktop screen;
    then a screenshot of each to look at.

    `primaries`: 0 for a page with nothing to do but read (/activity).
    """
    page = phone.page
    page.wait_for_load_state()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)  # first: to look at a failure
    check_layout(phone, name)
    # The menu is one row under the hub's name, so the page starts on the first screen.
    rows = page.evaluate("new Set([...document.querySelectorAll('nav a')].map(a => a.offsetTop)).size")
    assert rows <= 1, f"{name}: the menu takes {rows} rows"
    assert page.evaluate(_UNLABELLED_JS) == [], f"{name} has inputs without a label"
    found = page.locator(".primary:visible").count()
    assert found == primaries, f"{name} should have {primaries} primary action(s), has {found}"
    assert page.evaluate(_LOW_CONTRAST_JS) == [], f"{name} has text that is hard to read"
    page.set_viewport_size(DESKTOP)
    try:
        check_layout(phone, f"{name} (desktop)")
        page.screenshot(path=SCREENSHOTS / f"{name}-desktop.png", full_page=True, scale="css")
    finally:
        page.set_viewport_size(PHONE)


def above_the_fold(phone: Phone, selector: str) -> None:
    """The page's action is on the first screen, without scrolling."""
    box = phone.page.locator(selector).bounding_box()
    assert box is not None and box["y"] + box["height"] <= PHONE["height"], (selector, box)


def message(page: Page) -> tuple[str | None, str]:
    """(data-status, text) of the page's one message."""
    found = page.locator("p.message")
    expect(found).to_have_count(1)
    return found.get_attribute("data-status"), " ".join(found.inner_text().split())


def submit_sign_in(phone: Phone, name: str, password: str) -> None:
    page = phone.page
    if urlsplit(page.url).path != "/login":
        phone.go("/login")
    page.locator("#name").fill(name)
    page.locator("#password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()


def sign_in(phone: Phone, name: str = OWNER, password: str = PASSWORD) -> None:
    submit_sign_in(phone, name, password)
    expect(phone.page).not_to_have_url(re.compile(r"/login"))


def enter_code(phone: Phone, code: str) -> None:
    page = phone.page
    if urlsplit(page.url).path != "/link":
        phone.go("/link")
    page.locator("#code").fill(code)
    page.get_by_role("button", name="Continue").click()
    page.wait_for_load_state()


def sloppy(code: str) -> str:
    """What a person might type: lower case, a space instead of the dash."""
    return code.replace("-", " ").lower()


def unknown_code(pending: PendingReply) -> str:
    return "BCDF-GHJK" if pending.user_code != "BCDF-GHJK" else "KJHG-FDCB"


def owner_hub(make_hub: HubFactory, **kwargs: Any) -> Hub:
    hub = make_hub(**kwargs)
    hub.accounts.create(OWNER, PASSWORD)
    return hub


# --- first run and sign-in ---------------------------------------------------------------


def test_first_run_creates_the_owner_account(make_hub: HubFactory, phone_for: PhoneFactory) -> None:
    hub = make_hub()
    phone = phone_for(hub)
    page = phone.page
    phone.go("/link")
    expect(page).to_have_url(phone.url("/setup?next=/link"))
    expect(page.locator("h1")).to_have_text("Welcome to LinkHub")
    check_phone_page(phone, "01-setup")

    page.locator("#name").fill(OWNER)
    page.locator("#password").fill(PASSWORD)
    page.locator("#password2").fill("other words")
    page.get_by_role("button", name="Create account").click()
    assert message(page) == ("error", "The two passwords differ.")
    expect(page.locator("#name")).to_have_value(OWNER)  # what was typed stays
    check_phone_page(phone, "01-setup-error")
    assert not hub.accounts.has_accounts()

    page.locator("#password").fill(PASSWORD)
    page.locator("#password2").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page).to_have_url(phone.url("/link"))
    owner = hub.accounts.find(OWNER)
    assert owner is not None and owner.is_owner


def test_sign_in_says_when_the_password_is_wrong(make_hub: HubFactory, phone_for: PhoneFactory) -> None:
    phone = phone_for(owner_hub(make_hub))
    page = phone.page
    phone.go("/devices")
    expect(page).to_have_url(re.compile(r"/login\?next=/devices$"))
    expect(page.locator("#name")).to_be_focused()  # ready to type
    check_phone_page(phone, "02-login")

    submit_sign_in(phone, OWNER, "not the password")
    assert message(page) == ("wrong_credentials", "The name or password is wrong.")
    check_phone_page(phone, "02-login-error")

    sign_in(phone)
    expect(page).to_have_url(phone.url("/devices"))


# --- the whole flow ------------------------------------------------------------------------


def test_link_a_device_on_a_phone(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    device = devices()
    pending = device.request()
    sign_in(phone)
    expect(page).to_have_url(phone.url("/link"))

    code = page.locator("#code")
    expect(code).to_be_focused()  # autofocus: the keyboard is up at once
    for attribute, value in (
        ("autocapitalize", "characters"),
        ("autocomplete", "one-time-code"),
        ("inputmode", "text"),
        ("spellcheck", "false"),
    ):
        assert code.get_attribute(attribute) == value, attribute
    box = code.bounding_box()
    assert box is not None and box["height"] >= 48 and box["width"] >= 300, box
    assert page.evaluate("parseFloat(getComputedStyle(document.getElementById('code')).fontSize)") >= 24
    above_the_fold(phone, "button.primary")
    check_phone_page(phone, "03-link-form")

    code.press_sequentially(sloppy(pending.user_code))  # typed as a person might
    page.get_by_role("button", name="Continue").click()
    expect(page.locator("h1")).to_have_text("Link this device?")
    expect(page.locator(".code-display")).to_have_text(pending.user_code)
    expect(page.locator(".device-name")).to_have_text(LAMP.name)
    expect(page.locator(".device-model")).to_have_text(LAMP.model)
    expect(page.locator(".device-address")).to_have_text("192.168.1.42")
    expect(page.locator(".countdown")).to_have_text(re.compile(r"^expires in 1[45] min$"))
    above_the_fold(phone, "button.primary")
    check_phone_page(phone, "04-confirm")
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING

    page.get_by_role("button", name="Approve").click()
    expect(page).to_have_url(re.compile(r"/link/linked/dev-"))
    assert message(page) == ("linked", "Kitchen Lamp is linked to the account alice.")
    check_phone_page(phone, "05-linked")
    approved = device.wait_reply()
    assert isinstance(approved, ApprovedReply)
    assert device.credentials(approved).username == approved.device_id

    # Back and Reload after Approve: the Done page again, no form resubmission,
    # no "already used", nothing counted as a wrong code.
    page.reload()
    expect(page.locator("h1")).to_have_text("Done")
    page.go_back()
    expect(page).to_have_url(re.compile(r"/link/linked/dev-"))
    expect(page.locator("h1")).to_have_text("Done")
    assert hub.activity.recent_of_kinds((ActivityKind.CODE_ENTRY_FAILED,), since_s=0) == []

    page.get_by_role("link", name="Open Kitchen Lamp").click()
    expect(page.locator("h1")).to_have_text("Kitchen Lamp")
    check_phone_page(phone, "07-device")
    page.get_by_role("link", name="Devices", exact=True).click()
    expect(page.locator(f'[data-device-id="{approved.device_id}"]')).to_contain_text("Kitchen Lamp")
    check_phone_page(phone, "06-devices")

    # The same code again, by the same person: led to the device it linked.
    enter_code(phone, pending.user_code)
    expect(page).to_have_url(phone.url(f"/link/linked/{approved.device_id}"))
    assert len(hub.links.list_devices()) == 1

    # Everything those pages needed came from the hub itself (checked again for every test at the end).
    assert f"{phone.origin}/static/style.css" in phone.requests
    assert all(url.startswith(phone.origin + "/") for url in phone.requests), phone.requests


def test_keyboard_alone_links_a_device(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    device = devices()
    pending = device.request()
    sign_in(phone)

    def tab_to(is_there: str, most: int = 15) -> None:
        for _ in range(most):
            page.keyboard.press("Tab")
            if page.evaluate(is_there):
                return
        raise AssertionError(f"Tab never reached: {is_there}")

    page.evaluate("document.activeElement.blur()")
    tab_to("document.activeElement.id === 'code'")
    page.keyboard.type(pending.user_code.lower())
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Continue"
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # Enter in the input submits the form
    expect(page.locator("h1")).to_have_text("Link this device?")

    # The first Tab reaches "Skip to the page", which jumps past the header's
    # links: from there Approve is two Tabs away ("Sign in as someone else" first).
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent.trim()") == "Skip to the page"
    page.keyboard.press("Enter")
    tab_to("document.activeElement.textContent.trim() === 'Approve for alice'", most=2)
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Done")
    assert isinstance(device.wait_reply(), ApprovedReply)


@pytest.mark.parametrize("pasted", ["with_dash", "without_dash"])
def test_a_pasted_code_works_with_or_without_the_dash(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice], pasted: str
) -> None:
    phone = phone_for(owner_hub(make_hub))
    page = phone.page
    pending = devices().request()
    text = pending.user_code if pasted == "with_dash" else pending.user_code.replace("-", "")
    sign_in(phone)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=phone.origin)
    page.evaluate("text => navigator.clipboard.writeText(text)", text)
    page.locator("#code").focus()
    page.keyboard.press("ControlOrMeta+V")
    expect(page.locator("#code")).to_have_value(text)
    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".code-display")).to_have_text(pending.user_code)


def test_a_code_from_the_devices_qr_fills_the_form_but_approves_nothing(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    """RFC 8628 §5.4: verification_uri_complete only saves typing; the person still
    sees the device and the code and chooses."""
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    device = devices()
    pending = device.request()
    complete = urlsplit(pending.verification_uri_complete)
    assert complete.path == "/link" and complete.query == f"code={pending.user_code}"

    phone.go(f"{complete.path}?{complete.query}")  # signed out: sign in first, then back
    expect(page).to_have_url(re.compile(r"/login\?next="))
    sign_in(phone)
    expect(page).to_have_url(phone.url(f"/link?code={pending.user_code}"))
    expect(page.locator("#code")).to_have_value(pending.user_code)
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    check_phone_page(phone, "03-link-form-prefilled")
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING

    page.get_by_role("button", name="Continue").click()
    expect(page.locator(".code-display")).to_have_text(pending.user_code)
    expect(page.locator(".device-name")).to_have_text(LAMP.name)
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING
    page.get_by_role("button", name="Approve").click()
    expect(page.locator("h1")).to_have_text("Done")
    assert isinstance(device.wait_reply(), ApprovedReply)


# --- refusals, each with its own words ------------------------------------------------------------


def test_a_wrong_code_says_no_device_waits_with_it(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    phone = phone_for(owner_hub(make_hub))
    page = phone.page
    pending = devices().request()
    sign_in(phone)

    enter_code(phone, unknown_code(pending).lower())
    assert message(page) == ("unknown", DECISION_MESSAGES[CodeStatus.UNKNOWN])
    expect(page.locator("#code")).to_have_value(unknown_code(pending).lower())  # kept, to be corrected
    check_phone_page(phone, "11-error-unknown")

    enter_code(phone, "bcdf-ghj")
    assert message(page) == (
        "malformed",
        "That is 7 letters; codes have 8. Check the code on your device's screen.",
    )
    expect(page.locator("#code")).to_be_focused()  # ready to correct, not lost to the page body
    check_phone_page(phone, "12-error-malformed")


def test_the_time_left_shows_and_an_expired_code_says_so(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    device = devices()
    pending = device.request()
    sign_in(phone)

    clock.advance(180)
    enter_code(phone, pending.user_code)
    expect(page.locator(".countdown")).to_have_text("expires in 12 min")

    clock.advance(721)  # the person waited on the confirm page; the code ran out
    page.get_by_role("button", name="Approve").click()
    assert message(page) == ("expired", DECISION_MESSAGES[CodeStatus.EXPIRED])
    check_phone_page(phone, "13-error-expired")
    enter_code(phone, pending.user_code)
    assert message(page) == ("expired", DECISION_MESSAGES[CodeStatus.EXPIRED])
    assert hub.links.list_devices() == []
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.EXPIRED_TOKEN


def test_deny_tells_the_device_and_the_code_then_says_denied(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    device = devices()
    pending = device.request()
    sign_in(phone)

    enter_code(phone, pending.user_code)
    page.get_by_role("button", name="Deny").click()
    expect(page).to_have_url(phone.url("/link/denied"))
    assert message(page) == ("denied_done", "Denied. The device was told.")
    expect(page.locator("main")).to_contain_text("Kitchen Lamp (LH-Lamp 2) was not linked.")
    check_phone_page(phone, "08-denied")
    page.reload()  # safe: nothing is posted again
    assert message(page) == ("denied_done", "Denied. The device was told.")
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.ACCESS_DENIED

    enter_code(phone, pending.user_code)
    assert message(page) == ("denied", DECISION_MESSAGES[CodeStatus.DENIED])
    check_phone_page(phone, "14-error-denied")
    assert hub.links.list_devices() == []


def test_a_code_used_for_another_account_says_so(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    bob = hub.accounts.create("bob", PASSWORD)
    phone = phone_for(hub)
    page = phone.page
    pending = devices().request()
    hub.links.approve(pending.user_code, bob.id)
    sign_in(phone)

    enter_code(phone, sloppy(pending.user_code))
    status, text = message(page)
    assert (status, text) == ("used_by_other_account", DECISION_MESSAGES[CodeStatus.USED_BY_OTHER_ACCOUNT])
    assert text.startswith("This code was already used to link a device to another account.")
    assert "Kitchen Lamp" not in page.content()  # nothing about bob's device
    check_phone_page(phone, "15-error-used-by-other-account")


# --- the other pages --------------------------------------------------------------------------


# A long value with nowhere to break, and one of many words.
LONG_VALUE = "https://calendar.example.org/households/kitchen-and-living-room/feeds/quiet-hours.ics"
LONG_TEXT = "Play the morning playlist quietly from seven, then the news at eight, then nothing until noon"


def test_settings_page_on_a_phone(make_hub: HubFactory, phone_for: PhoneFactory) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    page.get_by_role("link", name="Settings").click()
    expect(page.locator("h1")).to_have_text("Settings")
    # The known preferences: proper controls, no JSON.
    page.get_by_label("Time zone").select_option("Europe/Amsterdam")
    page.get_by_label("Temperature unit").select_option("F")
    page.get_by_label("Language and region").select_option("nl-NL")
    page.get_by_label("Theme").select_option("dark")
    page.get_by_role("button", name="Save preferences").click()
    expect(page).to_have_url(phone.url("/settings"))
    assert message(page)[0] == "ok"
    expect(page.get_by_label("Temperature unit")).to_have_value("F")
    page.reload()  # after a post/redirect/get: nothing is sent again
    assert message_count(page) == 0

    # Custom settings, long ones included; a broken JSON value is refused on the spot.
    for key, value in (
        ("feed_url", LONG_VALUE),
        ("morning", LONG_TEXT),
        ("quiet_hours", '{"from": "22:00", "to": "07:00", "days": ["mon", "tue", "wed", "thu", "fri"]}'),
    ):
        page.locator("#key").fill(key)
        page.locator("#value").fill(value)
        page.get_by_role("button", name="Save for all devices").click()
        expect(page.locator(f'tr[data-key="{key}"]')).to_have_count(1)
    expect(page.locator('tr[data-key="morning"] .value')).to_have_text(LONG_TEXT)  # no quotes
    page.locator("#key").fill("unit")
    page.locator("#value").fill('{"unit": "C"')
    page.get_by_role("button", name="Save for all devices").click()
    status, text = message(page)
    assert status == "error" and text.startswith("The value is not valid JSON"), text
    expect(page.locator("#value")).to_have_value('{"unit": "C"')  # kept, to be corrected
    check_phone_page(phone, "09-settings-json-error")
    owner = hub.accounts.find(OWNER)
    assert owner is not None and "unit" not in hub.settings.preferences(owner.id).document

    phone.go("/settings")
    page.get_by_role("link", name="Edit quiet_hours").click()
    expect(page.locator("#key")).to_have_value("quiet_hours")
    expect(page.locator("#value")).to_have_value(
        '{"days": ["mon", "tue", "wed", "thu", "fri"], "from": "22:00", "to": "07:00"}'
    )
    check_phone_page(phone, "09-settings")


def message_count(page: Page) -> int:
    return page.locator("p.message").count()


def test_the_device_page_fits_a_phone_with_long_settings(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    """Issue 14 item 1: the settings table stacks on a phone; nothing pans sideways."""
    hub = owner_hub(make_hub)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    info = DeviceInfo(name=LONG_NAME, model="LH-Motion 1", address="192.168.1.43")
    sensor = hub.links.approve(devices(info).request().user_code, owner.id)
    hub.settings.set_preferences(owner.id, {"feed_url": LONG_VALUE, "theme": "dark"}, origin=Origin.WEB)
    hub.settings.set_device_settings(
        sensor.device_id,
        {"morning": LONG_TEXT, "sensitivity_in_percent_of_the_full_range_of_the_sensor": 70},
        origin=Origin.WEB,
    )
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    phone.go(f"/devices/{sensor.device_id}")
    expect(page.locator("tr[data-key]")).to_have_count(4)
    # Each row's cells are labelled lines on a phone: the status is on screen.
    status = page.locator('tr[data-key="morning"] .row-status')
    expect(status).to_have_text("Waiting for the device")
    box = status.bounding_box()
    assert box is not None and box["x"] + box["width"] <= PHONE["width"], box
    check_phone_page(phone, "07-device-long-settings")

    # The list with several devices, the long name among them.
    lamp = hub.links.approve(devices().request().user_code, owner.id)
    porch_info = DeviceInfo(name="Porch Light", model="LH-Lamp 2", address="192.168.1.44")
    porch = hub.links.approve(devices(porch_info).request().user_code, owner.id)
    phone.go("/devices")
    expect(page.locator("li.device")).to_have_count(3)
    for device in (sensor, lamp, porch):
        expect(page.locator(f'li.device[data-device-id="{device.device_id}"]')).to_have_count(1)
    check_phone_page(phone, "06-devices-several")


def test_qr_code_of_the_link_page(make_hub: HubFactory, phone_for: PhoneFactory) -> None:
    phone = phone_for(owner_hub(make_hub))
    page = phone.page
    sign_in(phone)
    page.get_by_role("link", name="Open this page on a phone (QR code)").click()
    expect(page).to_have_url(phone.url("/link/qr"))
    qr = page.locator("svg.qr")
    expect(qr).to_be_visible()
    expect(qr).to_have_attribute("role", "img")
    expect(qr).to_have_attribute("aria-label", f"QR code for {phone.origin}/link")
    assert qr.locator("path").count() == 1
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 200 and abs(box["width"] - box["height"]) < 1, box
    expect(page.locator(".qr-url")).to_have_text(f"{phone.origin}/link")
    # The browser is on 127.0.0.1: a phone scanning that would look for the hub on itself.
    assert message(page)[0] == "loopback"
    check_phone_page(phone, "16-qr")


def test_household_and_activity_pages_on_a_phone(make_hub: HubFactory, phone_for: PhoneFactory) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    page.get_by_role("link", name="Household").click()
    expect(page.locator("h1")).to_have_text("Household")
    page.locator("#name").fill("bob")
    page.locator("#password").fill("bob's long password")
    page.locator("#password2").fill("bob's long password")
    page.get_by_role("button", name="Add member").click()
    expect(page.locator(".member-name")).to_have_text([OWNER, "bob"])
    assert message(page)[0] == "ok"
    check_phone_page(phone, "17-household")

    page.get_by_role("button", name="Remove bob…").click()
    expect(page.locator("h1")).to_have_text("Remove bob?")
    check_phone_page(phone, "18-remove-member")
    page.get_by_role("button", name="Remove bob").click()
    expect(page.locator(".member-name")).to_have_text([OWNER])
    assert hub.accounts.find("bob") is None

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("h1")).to_have_text("Recent activity")
    expect(page.locator(".event-detail").first).to_have_text(
        "member 'bob' removed by alice on the household page"
    )
    check_phone_page(phone, "19-activity", primaries=0)  # nothing to do there but read


# A name as long as a device may send (64 printable characters), with nowhere to break it.
LONG_NAME = "Hallway-Motion-Sensor-With-A-Name-Much-Longer-Than-Any-Phone-Row"


def test_unlink_a_device_on_a_phone(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    owner = hub.accounts.find(OWNER)
    assert owner is not None and len(LONG_NAME) == 64
    lamp = hub.links.approve(devices().request().user_code, owner.id)
    sensor_info = DeviceInfo(name=LONG_NAME, model="LH-Motion 1", address="192.168.1.43")
    sensor = hub.links.approve(devices(sensor_info).request().user_code, owner.id)
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)

    # The longest name a device may send wraps; nothing scrolls sideways.
    phone.go(f"/devices/{sensor.device_id}/unlink")
    expect(page.locator("h1")).to_have_text(f"Unlink {LONG_NAME}?")
    check_phone_page(phone, "20-unlink-confirm-long-name")

    phone.go(f"/devices/{lamp.device_id}")
    page.get_by_role("button", name=f"Unlink {LAMP.name}…").click()
    expect(page).to_have_url(re.compile(rf"/devices/{lamp.device_id}/unlink\??$"))  # a GET form
    expect(page.locator("h1")).to_have_text(f"Unlink {LAMP.name}?")
    expect(page.get_by_role("link", name="Keep it linked")).to_be_visible()
    above_the_fold(phone, "button.primary")
    check_phone_page(phone, "20-unlink-confirm")
    assert len(hub.links.list_devices()) == 2  # asking changed nothing

    page.get_by_role("link", name="Keep it linked").click()
    expect(page).to_have_url(phone.url(f"/devices/{lamp.device_id}"))
    page.get_by_role("button", name=f"Unlink {LAMP.name}…").click()
    page.get_by_role("button", name=f"Unlink {LAMP.name}", exact=True).click()
    expect(page).to_have_url(phone.url("/devices"))
    status, text = message(page)
    assert status == "ok" and text.startswith(f"{LAMP.name} is unlinked: it was disconnected")
    check_phone_page(phone, "21-unlinked")
    assert [d.device_id for d in hub.links.list_devices()] == [sensor.device_id]


def test_the_activity_page_on_a_phone(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    """Each kind of event in words, with the device and the address; long names wrap."""
    hub = owner_hub(make_hub)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    device = devices(DeviceInfo(name=LONG_NAME, model="LH-Motion 1", address="192.168.1.43"))
    approved = hub.links.approve(device.request().user_code, owner.id)
    phone = phone_for(hub)
    page = phone.page
    submit_sign_in(phone, OWNER, "not the password")
    sign_in(phone)
    hub.links.unlink(approved.device_id, owner.id, origin="web", address="192.168.1.20")

    page.get_by_role("link", name="Activity").click()
    expect(page.locator("h1")).to_have_text("Recent activity")
    events = page.locator("li.event")
    expect(events.locator(".event-what")).to_have_text(
        ["Device unlinked", "Signed in", "Sign-in failed", "Device linked"]
    )
    unlinked = events.nth(0)
    expect(unlinked.locator(".event-device")).to_have_text(f"{LONG_NAME} ({approved.device_id})")
    expect(unlinked.locator(".event-address")).to_have_text("192.168.1.20")
    failed = events.nth(2)
    expect(failed.locator(".event-address")).to_have_text("127.0.0.1")
    expect(failed.locator(".event-detail")).to_have_text("wrong password")
    check_phone_page(phone, "22-activity-events", primaries=0)


def test_the_owner_turns_off_a_members_two_factor_on_a_phone(
    make_hub: HubFactory, phone_for: PhoneFactory
) -> None:
    hub = owner_hub(make_hub)
    bob = hub.accounts.create("bob", PASSWORD)
    new = hub.accounts.begin_two_factor(bob.id)
    hub.accounts.confirm_two_factor(bob.id, new.secret, pyotp.TOTP(new.secret).now())
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)

    phone.go("/household")
    expect(page.locator(".member-two-factor")).to_have_text(["Off", "On"])
    page.get_by_role("button", name="Turn off two-factor for bob…").click()
    expect(page.locator("h1")).to_have_text("Turn off two-factor sign-in for bob?")
    above_the_fold(phone, "button.primary")
    check_phone_page(phone, "23-two-factor-off-confirm")
    page.get_by_role("button", name="Turn it off for bob").click()
    expect(page).to_have_url(phone.url("/household"))
    status, text = message(page)
    assert status == "ok" and text.startswith("Two-factor sign-in is off for bob")
    expect(page.locator(".member-two-factor")).to_have_text(["Off", "Off"])
    assert not hub.accounts.two_factor_status(bob.id).enabled
