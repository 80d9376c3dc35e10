"""Two-factor sign-in in a real browser on a 360 px phone (Debian's Chromium
through Playwright, as in tests/test_browser.py, whose page checks apply here
too): turning it on from the QR page, the recovery codes, then signing in with
the password and a code. The codes are computed by pyotp from the key the page
shows, on a clock the test moves."""

from __future__ import annotations

import re
from pathlib import Path

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

from hub.services.activity import ActivityKind

pytestmark = pytest.mark.usefixtures("chromium_present")


def test_turn_on_two_factor_and_sign_in_with_a_code(make_hub: HubFactory, phone_for: PhoneFactory) -> None:  # noqa: F811
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    sign_in(phone)

    phone.go("/account")
    page.get_by_role("link", name="Off").click()
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

    # A phone cannot scan its own screen: the otpauth:// link opens the app instead.
    link = page.get_by_role("link", name="open LinkHub in your authenticator app")
    href = link.get_attribute("href")
    assert href is not None and href.startswith("otpauth://totp/") and f"secret={secret}" in href

    page.locator("#code").fill(pyotp.TOTP(secret).at(clock()))
    page.get_by_role("button", name="Turn on").click()
    expect(page).to_have_url(phone.url("/account/two-factor/recovery-codes"))  # post/redirect/get
    expect(page.locator("h1")).to_have_text("Save your recovery codes")
    codes = page.locator(".recovery-codes code").all_inner_texts()
    assert len(codes) == 10 and all(
        re.fullmatch(r"[0-9a-z]{4}-[0-9a-z]{4}-[0-9a-z]{4}", code) for code in codes
    )
    check_phone_page(phone, "32-recovery-codes")
    page.reload()  # the same codes again, not "That setup took too long" in a green box
    assert page.locator(".recovery-codes code").all_inner_texts() == codes
    with page.expect_download() as download:
        page.get_by_role("link", name="Download as a text file").click()
    saved = Path(download.value.path()).read_text()
    assert all(code in saved.splitlines() for code in codes) and "alice" in saved
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=phone.origin)
    page.get_by_role("button", name="Copy the codes").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()").split() == codes

    page.get_by_role("link", name="I saved them").click()
    expect(page.locator("[data-two-factor]")).to_have_attribute("data-two-factor", "on")
    expect(page.locator(".codes-left")).to_have_text("10 recovery codes")
    check_phone_page(phone, "33-two-factor-on")

    page.get_by_role("button", name="Sign out").click()
    submit_sign_in(phone, "alice", PASSWORD)
    expect(page).to_have_url(phone.url("/login/two-factor"))
    expect(page.locator(".signing-in-as")).to_have_text("Signing in as alice.")
    code = page.locator("#code")
    expect(code).to_be_focused()
    assert code.get_attribute("autocomplete") == "one-time-code"
    assert code.get_attribute("inputmode") == "numeric"  # the phone's number pad
    check_phone_page(phone, "34-second-factor")

    clock.advance(30)
    code.fill(pyotp.TOTP(secret).at(clock() - 90))  # an old code
    page.get_by_role("button", name="Sign in").click()
    assert message(page) == ("wrong_code", "That code is not right, or it was used already.")
    check_phone_page(phone, "34-second-factor-error")
    # The code that turned it on, again in its own 30 seconds: said, and logged, as used.
    page.locator("#code").fill(pyotp.TOTP(secret).at(clock() - 30))
    page.get_by_role("button", name="Sign in").click()
    assert message(page) == (
        "code_used",
        "That code was used already. Wait for the app to show the next one, and type that.",
    )
    alice = hub.accounts.find("alice")
    assert alice is not None
    failed = [e.detail for e in hub.activity.recent(alice.id) if e.kind == ActivityKind.SIGN_IN_FAILED]
    assert failed[:2] == ["authenticator code already used in its 30-second window", "wrong second factor"]
    # The recovery-code way: a text field, not the number pad.
    page.get_by_role("link", name="No phone? Use a recovery code").click()
    assert page.locator("#code").get_attribute("inputmode") == "text"
    page.get_by_role("link", name="Use the authenticator app instead").click()

    page.locator("#code").fill(pyotp.TOTP(secret).at(clock()))
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(phone.url("/link"))
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
