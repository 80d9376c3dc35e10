"""The owner sees on the household page when an account is used to guess
device codes (issue 19, item 16): wrong codes entered with any member's account
in the last 7 days, how many, whether the limit refused more, when and from
where the last one came. Test client and real Chromium (360 px and desktop)."""

from __future__ import annotations

import secrets
from contextlib import ExitStack

import pytest
from conftest import CSRF_FIELD, FakeClock, HubFactory, hub_pages
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import Browser, expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    PHONE,
    browser,
    check_phone_page,
    chromium_present,
    serving,
    sign_in,
)
from test_browser_sessions import DESKTOP, check_desktop_page, contexts, open_on  # noqa: F401

from hub.daemon import Hub
from web import WebConfig

PASSWORD = "correct horse battery"
MEMBER = "Maximilian-Alexander Featherstonehaugh-Montgomery"
UNKNOWN_CODES = ["BCDF-GHJK", "KJHG-FDCB", "MNPQ-RSTV", "VTSR-QPNM"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(make_hub: HubFactory, clock: FakeClock) -> Hub:
    made = make_hub(clock=clock)
    made.accounts.create("alice", PASSWORD)
    made.accounts.create(MEMBER, PASSWORD)
    return made


def signed_in(app: Flask, name: str, address: str) -> FlaskClient:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    form = CSRF_FIELD.search(client.get("/login").get_data(as_text=True))
    assert form
    reply = client.post("/login", data={"csrf_token": form.group(1), "name": name, "password": PASSWORD})
    assert reply.status_code == 302
    return client


def wrong_codes(client: FlaskClient, count: int) -> None:
    for code in UNKNOWN_CODES[:count]:
        form = CSRF_FIELD.search(client.get("/link").get_data(as_text=True))
        assert form
        client.post("/link", data={"csrf_token": form.group(1), "code": code})


def household(owner: FlaskClient) -> str:
    page = owner.get("/household")
    assert page.status_code == 200
    return page.get_data(as_text=True)


def test_the_owner_sees_wrong_codes_entered_with_a_members_account(hub: Hub, clock: FakeClock) -> None:
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True, clock=clock))
    owner = signed_in(app, "alice", "192.168.1.20")
    assert 'data-status="guessing"' not in household(owner)
    assert household(owner).count('data-wrong-codes="0"') == 2

    wrong_codes(signed_in(app, MEMBER, "192.168.1.66"), 3)
    page = household(owner)
    assert 'data-status="guessing"' in page and f"Wrong device codes were entered with {MEMBER}" in page
    assert 'data-wrong-codes="3"' in page and "from 192.168.1.66" in page
    assert page.count('data-wrong-codes="0"') == 1  # the owner's own account: none

    # A week later the warning is gone (the activity keeps the events).
    clock.advance(7 * 86400 + 1)
    assert 'data-status="guessing"' not in household(signed_in(app, "alice", "192.168.1.20"))


def test_a_member_does_not_see_it(hub: Hub, clock: FakeClock) -> None:
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True, clock=clock))
    member = signed_in(app, MEMBER, "192.168.1.66")
    wrong_codes(member, 2)
    assert member.get("/household").status_code == 403


@pytest.mark.usefixtures("chromium_present")
def test_the_guessing_warning_on_a_phone_and_a_desktop(
    hub: Hub,
    clock: FakeClock,
    browser: Browser,  # noqa: F811
    contexts: ExitStack,  # noqa: F811
) -> None:
    app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16), clock=clock))
    wrong_codes(signed_in(app, MEMBER, "192.168.1.66"), 4)
    origin = contexts.enter_context(serving(app))
    for viewport in (PHONE, DESKTOP):
        owner = open_on(browser, contexts, origin, viewport)
        sign_in(owner)
        owner.go("/household")
        warning = owner.page.locator('[data-status="guessing"]')
        expect(warning).to_contain_text(f"Wrong device codes were entered with {MEMBER}")
        box = warning.bounding_box()  # on the first screen, above the members
        assert box is not None and box["y"] < viewport["height"], box
        expect(owner.page.locator('[data-wrong-codes="4"]')).to_be_visible()
        if viewport is PHONE:
            check_phone_page(owner, "65-household-guessing")
        else:
            check_desktop_page(owner, "65-household-guessing-desktop")
