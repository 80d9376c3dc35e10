"""Sessions end on the hub, not only in the browser (issue 19, item 3): a copy of
the session cookie (taken off the LAN while the pages are plain HTTP) opens
nothing once its owner signed out; "sign out everywhere" ends every session of
the account, on every hub that shares the account service; a session ends
after its lifetime whatever the browser keeps.

Against a real hub; the pages and the hub share a FakeClock. The same in real
Chromium: tests/test_browser_sessions.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, hub_pages
from conftest import csrf_token as token
from device_doubles import BootstrapDevice
from flask import Flask
from flask.testing import FlaskClient
from test_account_service import serving

from hub.daemon import Hub
from hub.services.local_accounts import AccountService
from hub.store.engine import make_engine
from linkhub_protocol import DeviceInfo
from web import WebConfig
from web.account_api import create_account_api

OWNER = "alice"
PASSWORD = "correct horse battery"
COOKIE = "linkhub_session"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(make_hub: HubFactory, clock: FakeClock) -> Hub:
    made = make_hub(clock=clock)
    made.accounts.create(OWNER, PASSWORD)
    return made


def pages(hub: Hub, clock: FakeClock, **config: float) -> Flask:
    return hub_pages(hub, WebConfig(secret_key="test", testing=True, clock=clock, **config))



def signed_in(app: Flask) -> FlaskClient:
    client = app.test_client()
    form = client.get("/login")
    reply = client.post("/login", data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD})
    assert reply.status_code == 302 and reply.headers["Location"] == "/link", reply.status_code
    return client


def copy_of(app: Flask, client: FlaskClient) -> FlaskClient:
    """Another browser holding a copy of `client`'s session cookie, as one taken off the network."""
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None
    thief = app.test_client()
    thief.set_cookie(COOKIE, cookie.value)
    return thief


def opens_the_pages(client: FlaskClient) -> bool:
    page, api = client.get("/devices"), client.get("/api/v1/devices")
    assert (page.status_code == 200) == (api.status_code == 200), (page.status_code, api.status_code)
    if page.status_code != 200:
        assert page.status_code == 302 and page.headers["Location"].startswith("/login"), page.status_code
        assert api.status_code == 401, api.status_code
    return page.status_code == 200


def test_a_copied_cookie_opens_nothing_once_its_owner_signed_out(hub: Hub, clock: FakeClock) -> None:
    app = pages(hub, clock)
    owner = signed_in(app)
    thief = copy_of(app, owner)
    assert opens_the_pages(thief)  # the copy works while the session lives: it is a real copy
    form = thief.get("/settings")

    signed_out = owner.post("/logout", data={"csrf_token": token(owner.get("/settings"))})
    assert signed_out.status_code == 302

    assert not opens_the_pages(thief)
    assert not opens_the_pages(owner)
    # Nor does it change a setting with the form it had open.
    changed = thief.post("/settings", data={"csrf_token": token(form), "key": "theme", "value": '"dark"'})
    assert changed.status_code in (302, 400), changed.status_code  # to sign in, or the form's token is void
    assert hub.settings.preferences(hub.accounts.find(OWNER).id).document == {}  # type: ignore[union-attr]


def test_signing_out_ends_only_that_session(hub: Hub, clock: FakeClock) -> None:
    app = pages(hub, clock)
    phone, laptop = signed_in(app), signed_in(app)
    laptop.post("/logout", data={"csrf_token": token(laptop.get("/settings"))})
    assert opens_the_pages(phone) and not opens_the_pages(laptop)


def test_sign_out_everywhere_ends_every_session_of_the_account(hub: Hub, clock: FakeClock) -> None:
    app = pages(hub, clock)
    phone, laptop = signed_in(app), signed_in(app)
    thief = copy_of(app, phone)
    settings = laptop.get("/account")
    assert b"Sign out everywhere" in settings.data

    ended = laptop.post("/account/sign-out-everywhere", data={"csrf_token": token(settings)})
    # Post/redirect/get: the sign-in page says what happened, and reloading it posts nothing.
    assert ended.status_code == 303 and ended.headers["Location"] == "/login"
    assert "You are signed out everywhere" in laptop.get("/login").get_data(as_text=True)
    for client in (phone, laptop, thief):
        assert not opens_the_pages(client)

    # Signing in again works, and is not ended by what came before.
    clock.advance(1)
    assert opens_the_pages(signed_in(app))


def test_sign_out_everywhere_needs_the_csrf_token(hub: Hub, clock: FakeClock) -> None:
    app = pages(hub, clock)
    app.config["WTF_CSRF_ENABLED"] = True
    phone = signed_in(app)
    assert phone.post("/account/sign-out-everywhere").status_code == 400
    assert opens_the_pages(phone)


def test_a_session_ends_after_its_lifetime_whatever_the_cookie_says(hub: Hub, clock: FakeClock) -> None:
    app = pages(hub, clock, session_lifetime_s=3600)
    phone = signed_in(app)
    clock.advance(3599)
    assert opens_the_pages(phone)
    clock.advance(2)
    assert not opens_the_pages(phone)


def test_a_cookie_from_before_a_restart_with_the_same_key_still_needs_its_record(
    hub: Hub, clock: FakeClock
) -> None:
    """The record is in the hub's database: a new app (a restarted hub) keeps sessions
    that were not ended, and not the ones that were."""
    phone = signed_in(pages(hub, clock))
    restarted = pages(hub, clock)
    kept = copy_of(restarted, phone)
    assert opens_the_pages(kept)
    kept.post("/logout", data={"csrf_token": token(kept.get("/settings"))})
    assert not opens_the_pages(copy_of(restarted, phone))


# --- cookie planting (issue 19, item 5) ----------------------------------------------------
def test_a_second_session_cookie_planted_for_link_is_refused(hub: Hub, clock: FakeClock) -> None:
    """A page on another port of this host sets `linkhub_session=<the planter's session>;
    path=/link`; the browser sends it first on /link. Nothing is read from either."""
    hub.accounts.create("mallory", PASSWORD)
    app = pages(hub, clock)
    victim = signed_in(app)
    planter = app.test_client()
    form = planter.get("/login")
    planter.post("/login", data={"csrf_token": token(form), "name": "mallory", "password": PASSWORD})
    planted = planter.get_cookie(COOKIE)
    assert planted is not None
    victim.set_cookie(COOKIE, planted.value, path="/link")
    victim.set_cookie(COOKIE, planted.value, path="/api")

    for path in ("/link", "/link?code=BCDF-GHJK", "/api/v1/devices"):
        refused = victim.get(path)
        assert refused.status_code == 400, (path, refused.status_code)
        assert "set-cookie" not in refused.headers  # neither session is touched
    body = victim.get("/link").get_data(as_text=True)
    assert "Clear this site&#39;s cookies" in body and "Clear the cookies for localhost" in body
    assert "mallory" not in body and "alice" not in body
    assert victim.get("/api/v1/devices").get_json()["error"] == "two_session_cookies"
    # Pages outside those paths get the one cookie and go on working.
    assert victim.get("/devices").status_code == 200


def test_the_confirm_page_names_the_account_first_and_on_the_button(
    hub: Hub, clock: FakeClock, broker: RunningBroker
) -> None:
    app = pages(hub, clock)
    client = signed_in(app)
    with closing(BootstrapDevice(broker.port, DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2"))) as device:
        code = device.request().user_code
        form = client.get("/link")
        posted = client.post("/link", data={"csrf_token": token(form), "code": code}, follow_redirects=True)
        confirm = posted.get_data(as_text=True)
    banner = confirm.index('class="link-account-name')
    assert banner < confirm.index(code)  # above the code and the device's facts
    assert '<p class="link-account-name account-name" data-account="alice">alice</p>' in confirm
    assert ">Approve for alice</button>" in confirm


# --- several hubs on one account service ---------------------------------------------------
@pytest.fixture
def two_hubs(make_hub: HubFactory, clock: FakeClock, tmp_path: Path) -> Iterator[tuple[Hub, Hub]]:
    service = AccountService(make_engine(f"sqlite:///{tmp_path / 'accounts.db'}"), clock)
    with serving(create_account_api(service, token="t0ken")) as url:
        first, second = (
            make_hub(
                clock=clock,
                data_dir=tmp_path / name,
                account_service_url=url,
                account_service_token="t0ken",
            )
            for name in ("first", "second")
        )
        first.accounts.create(OWNER, PASSWORD)
        yield first, second


def test_sign_out_everywhere_reaches_every_hub_of_the_account_service(
    two_hubs: tuple[Hub, Hub], clock: FakeClock
) -> None:
    first, second = two_hubs
    here, there = pages(first, clock), pages(second, clock)
    phone, kitchen_tablet = signed_in(here), signed_in(there)
    clock.advance(5)
    phone.post("/account/sign-out-everywhere", data={"csrf_token": token(phone.get("/settings"))})
    assert not opens_the_pages(kitchen_tablet)
    clock.advance(1)
    assert opens_the_pages(signed_in(there))
