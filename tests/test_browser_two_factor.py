"""Two-factor sign-in in a real browser on a 360 px phone (Debian's Chromium
through Playwright, as in tests/test_browser.py, whose page checks apply here
too): turning it on from the QR page, the recovery codes, then signing in with
the password and a code. The codes are computed by pyotp from the key the page
shows, on a clock the test moves."""

from __future__ import annotations

import re

import pyotp
import pytest
from conftest import FakeClock, HubFactory
from playwright.sync_api import expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    PASSWORD,
    PhoneFactory,
    browser,
    check_phone_page,
    chromium_present,
    message,
    owner_hub,
    phone_for,
    sign_in,
    submit_sign_in,
)

pytestmark = pytest.mark.usefixtures("chromium_present")


def test_turn_on_two_factor_and_sign_in_with_a_code(make_hub: HubFactory, phone_for: PhoneFactory) -> None:  # noqa: F811
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    sign_in(phone)

    phone.go("/settings")
    page.get_by_role("link", name="Two-factor sign-in").click()
    expect(page).to_have_url(phone.url("/account/two-factor"))
    expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "off")
    check_phone_page(phone, "30-two-factor-off")

    page.get_by_role("button", name="Set up two-factor sign-in").click()
    qr = page.get_by_role("img", name="QR code to add LinkHub to an authenticator app")
    expect(qr).to_be_visible()
    box = qr.bounding_box()
    assert box is not None and box["width"] >= 200, box  # big enough for a phone camera
    secret = re.sub(r"\s", "", page.locator(".secret-key").inner_text())
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    check_phone_page(phone, "31-two-factor-scan")

    page.locator("#code").fill("12345")
    page.get_by_role("button", name="Turn on").click()
    assert message(page)[0] == "error"
    expect(page.locator(".secret-key")).to_have_text(re.compile(secret[:4]))  # the same key, still to confirm

    page.locator("#code").fill(pyotp.TOTP(secret).at(clock()))
    page.get_by_role("button", name="Turn on").click()
    expect(page.locator("h1")).to_have_text("Save your recovery codes")
    codes = page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(
        re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", code) for code in codes
    )
    check_phone_page(phone, "32-recovery-codes")

    page.get_by_role("link", name="I saved them").click()
    expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "on")
    expect(page.locator(".codes-left")).to_have_text("10 recovery codes")
    check_phone_page(phone, "33-two-factor-on")

    page.get_by_role("button", name="Sign out").click()
    submit_sign_in(phone, "alice", PASSWORD)
    expect(page).to_have_url(phone.url("/login/two-factor"))
    code = page.locator("#code")
    expect(code).to_be_focused()
    assert code.get_attribute("autocomplete") == "one-time-code"
    check_phone_page(phone, "34-second-factor")

    clock.advance(30)
    code.fill(pyotp.TOTP(secret).at(clock() - 90))  # an old code
    page.get_by_role("button", name="Sign in").click()
    assert message(page) == ("wrong_code", "That code is not right, or it was used already.")
    check_phone_page(phone, "34-second-factor-error")

    page.locator("#code").fill(pyotp.TOTP(secret).at(clock()))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(phone.url("/link"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
