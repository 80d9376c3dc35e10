"""The web pages and the control API against a real hub on a real mosquitto.

Link requests come from `BootstrapDevice`, which speaks the wire protocol the
way firmware does, so each test also checks what the device is finally told.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, hub_pages
from conftest import csrf_token as token
from device_doubles import BootstrapDevice
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.apps import IssuedTokens
from hub.services.links import DECISION_MESSAGES, CodeStatus
from linkhub_protocol import (
    ApprovedReply,
    DeviceInfo,
    ErrorCode,
    ErrorReply,
)
from web import WebConfig
from web.auth import WRONG_CREDENTIALS, safe_next
from web.control import create_control_app
from web.timefmt import ago, remaining

OWNER = "alice"
PASSWORD = "correct horse battery"
LAMP = DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2", address="192.168.1.42", firmware="1.0.3")


# --- fixtures and helpers ------------------------------------------------------


@pytest.fixture
def devices(broker: RunningBroker) -> Iterator[Callable[..., BootstrapDevice]]:
    made: list[BootstrapDevice] = []

    def make(info: DeviceInfo = LAMP, port: int | None = None) -> BootstrapDevice:
        device = BootstrapDevice(port or broker.port, info)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()


def web_app(hub: Hub, clock: Callable[[], float] = time.time) -> Flask:
    # 192.168.1.10: "the hub's LAN address" of the tests that open it there.
    config = WebConfig(secret_key="test", testing=True, clock=clock, host_names=("192.168.1.10",))
    return hub_pages(hub, config)


def control_app(hub: Hub) -> Flask:
    return create_control_app(
        links=hub.links, accounts=hub.accounts, settings=hub.settings, activity=hub.activity
    )


def page(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def sign_in(client: FlaskClient, name: str = OWNER, password: str = PASSWORD) -> TestResponse:
    form = client.get("/login")
    return client.post("/login", data={"csrf_token": token(form), "name": name, "password": password})


def signed_in_client(hub: Hub, clock: Callable[[], float] = time.time) -> FlaskClient:
    if hub.accounts.find(OWNER) is None:
        hub.accounts.create(OWNER, PASSWORD)
    client = web_app(hub, clock).test_client()
    assert sign_in(client).status_code == 302
    return client


def post_code(client: FlaskClient, code: str) -> TestResponse:
    """Enter a code on /link, as the form does, and land where the hub sends the
    browser (a pending code: the confirm page, after a 303)."""
    form = client.get("/link")
    return client.post("/link", data={"csrf_token": token(form), "code": code}, follow_redirects=True)


def decide(client: FlaskClient, code: str, action: str) -> TestResponse:
    """Approve or deny, and land on the page the 303 leads to (Done or Denied)."""
    form = client.get("/link")
    return client.post(
        "/link/decide",
        data={"csrf_token": token(form), "code": code, "action": action},
        follow_redirects=True,
    )


def message_of(response: TestResponse) -> tuple[str, str]:
    """(data-status, text) of the page's message element."""
    found = re.search(r'<p class="message [^"]*" data-status="([^"]+)"[^>]*>(.*?)</p>', page(response), re.S)
    assert found, page(response)
    return found.group(1), html.unescape(found.group(2)).strip()


def sloppy(code: str) -> str:
    """What a person might type: lower case, a space instead of the dash."""
    return code.replace("-", " ").lower()


# --- first run and sign-in -------------------------------------------------------


def test_first_run_redirects_to_setup_which_creates_the_owner(hub: Hub) -> None:
    client = web_app(hub).test_client()
    to_setup = client.get("/link?code=BCDF-GHJK")
    assert to_setup.status_code == 302
    assert to_setup.headers["Location"] == "/setup?next=/link?code%3DBCDF-GHJK"

    form = client.get(to_setup.headers["Location"])
    assert form.status_code == 200
    mismatch = client.post(
        to_setup.headers["Location"],
        data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD, "password2": "other words"},
    )
    assert mismatch.status_code == 400
    assert "The two passwords differ." in page(mismatch)
    assert not hub.accounts.has_accounts()

    created = client.post(
        to_setup.headers["Location"],
        data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD, "password2": PASSWORD},
    )
    assert created.status_code == 302
    assert created.headers["Location"] == "/link?code=BCDF-GHJK"
    owner = hub.accounts.find(OWNER)
    assert owner is not None and owner.is_owner
    assert 'value="BCDF-GHJK"' in page(client.get(created.headers["Location"]))

    # Setup is over: it sends people to sign in, and signing in works.
    logout = client.post("/logout", data={"csrf_token": token(client.get("/link"))})
    assert logout.status_code == 302
    assert client.get("/setup").headers["Location"] == "/login"
    assert client.get("/link").headers["Location"].startswith("/login")
    assert sign_in(client).headers["Location"] == "/link"
    assert client.get("/devices").status_code == 200


def test_the_newcomer_following_redirects_lands_on_a_page(hub: Hub) -> None:
    client = web_app(hub).test_client()
    first_run = client.get("/link", follow_redirects=True)
    assert first_run.status_code == 200
    assert first_run.request.path == "/setup"
    assert client.head("/setup").status_code == 200  # a HEAD is a GET, never a form post
    hub.accounts.create(OWNER, PASSWORD)
    later = client.get("/", follow_redirects=True)
    assert later.status_code == 200
    assert later.request.path == "/login"


def test_a_wrong_sign_in_does_not_say_whether_the_account_exists(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    client = web_app(hub).test_client()
    wrong_password = sign_in(client, OWNER, "not the password")
    no_such_account = sign_in(client, "mallory", PASSWORD)
    assert wrong_password.status_code == no_such_account.status_code == 400
    assert message_of(wrong_password) == message_of(no_such_account)
    assert message_of(wrong_password)[1] == WRONG_CREDENTIALS
    assert client.get("/devices").status_code == 302  # still signed out


def test_link_sends_to_sign_in_and_back_with_the_code(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    client = web_app(hub).test_client()
    to_login = client.get("/link?code=BCDF-GHJK")
    assert to_login.status_code == 302
    assert to_login.headers["Location"] == "/login?next=/link?code%3DBCDF-GHJK"

    form = client.get(to_login.headers["Location"])
    back = client.post(
        to_login.headers["Location"],
        data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD},
    )
    assert back.status_code == 302
    assert back.headers["Location"] == "/link?code=BCDF-GHJK"
    prefilled = client.get(back.headers["Location"])
    body = page(prefilled)
    # The code from a QR code fills the form and nothing more: no decision without the confirm page.
    assert 'value="BCDF-GHJK"' in body
    assert "/link/decide" not in body


@pytest.mark.parametrize(
    "evil", ["//evil.example", "//evil.example/link", "https://evil.example/", "/\\evil.example", "link"]
)
def test_sign_in_ignores_a_next_that_leaves_the_hub(hub: Hub, evil: str) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    client = web_app(hub).test_client()
    form = client.get("/login", query_string={"next": evil})
    response = client.post(
        "/login",
        query_string={"next": evil},
        data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD},
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/link"


def test_safe_next_accepts_only_local_paths() -> None:
    assert safe_next("/devices") == "/devices"
    assert safe_next("/link?code=BCDF-GHJK") == "/link?code=BCDF-GHJK"
    for bad in (None, "", "//evil.example", "http://evil.example", "/\\evil", "/a\nb", "devices"):
        assert safe_next(bad) is None


# --- the link flow by form posts -----------------------------------------------------------


def test_approve_by_form_posts_gives_the_device_its_credentials(
    make_hub: HubFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock)
    device = devices()
    pending = device.request()
    client = signed_in_client(hub, clock)

    clock.advance(125)
    confirm = post_code(client, sloppy(pending.user_code))
    assert confirm.status_code == 200
    body = page(confirm)
    for shown in (
        "Kitchen Lamp",
        "LH-Lamp 2",
        "192.168.1.42",
        pending.user_code,
        "Does your device show this code?",
        "Links to the account",
        '<p class="link-account-name account-name" data-account="alice">alice</p>',
        "2 minutes ago",
        "expires in 12 min",
    ):
        assert shown in body
    assert 'name="action" value="approve"' in body and 'name="action" value="deny"' in body

    done = decide(client, pending.user_code, "approve")
    assert done.status_code == 200
    assert done.request.path.startswith("/link/linked/dev-")  # post/redirect/get
    assert "Kitchen Lamp is linked to the account alice." in page(done)
    assert "Waiting for Kitchen Lamp to connect with its own credentials" in page(done)

    approved = device.wait_reply()
    assert isinstance(approved, ApprovedReply)
    credentials = device.credentials(approved)  # sealed to the device's key
    assert credentials.username == approved.device_id == credentials.client_id
    assert credentials.password and credentials.port == hub.endpoints.device_broker.port

    listing = page(client.get("/devices"))
    assert approved.device_id in listing and "Kitchen Lamp" in listing
    assert "Waiting for first connection" in listing
    api = client.get("/api/v1/devices").get_json()
    assert [(d["device_id"], d["name"], d["model"], d["confirmed"]) for d in api["devices"]] == [
        (approved.device_id, "Kitchen Lamp", "LH-Lamp 2", False)
    ]


def test_deny_tells_the_device_and_the_code_then_says_denied(
    hub: Hub, devices: Callable[..., BootstrapDevice]
) -> None:
    device = devices()
    pending = device.request()
    client = signed_in_client(hub)

    denied = decide(client, pending.user_code, "deny")
    assert denied.status_code == 200
    assert "Denied. The device was told." in page(denied)
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.ACCESS_DENIED

    again = post_code(client, pending.user_code)
    assert again.status_code == 409
    assert message_of(again) == ("denied", DECISION_MESSAGES[CodeStatus.DENIED])
    assert client.get("/api/v1/devices").get_json() == {"devices": []}


def test_malformed_and_unknown_codes_have_their_own_messages(
    hub: Hub, devices: Callable[..., BootstrapDevice]
) -> None:
    pending = devices().request()
    client = signed_in_client(hub)

    malformed = post_code(client, "hello")
    assert malformed.status_code == 400
    assert message_of(malformed) == (
        "malformed",
        "Codes use only the consonants BCD…WXZ (no vowels, digits or Y), so E, O cannot be in one. "
        "Check the code on your device's screen.",
    )
    assert 'value="hello"' in page(malformed)  # what was typed stays, to be corrected
    short = post_code(client, "bcdf-ghj")
    assert message_of(short) == (
        "malformed",
        "That is 7 letters; codes have 8. Check the code on your device's screen.",
    )
    # A code inside a pasted message is found; two codes in one paste are not guessed between.
    pasted = post_code(client, f"Your code: {pending.user_code.lower()}.")
    assert pasted.status_code == 200 and pasted.request.path == "/link/confirm"
    both = post_code(client, f"{pending.user_code} or BCDF-GHJK")
    assert both.status_code == 400 and message_of(both)[0] == "malformed"

    unknown_code = "BCDF-GHJK" if pending.user_code != "BCDF-GHJK" else "KJHG-FDCB"
    unknown = post_code(client, unknown_code)
    assert unknown.status_code == 404
    assert message_of(unknown) == ("unknown", DECISION_MESSAGES[CodeStatus.UNKNOWN])

    vowels = decide(client, "AEIO-UAEI", "approve")
    assert vowels.status_code == 400
    assert message_of(vowels)[0] == "malformed"


def test_a_used_code_says_so_and_does_not_link_twice(
    hub: Hub, devices: Callable[..., BootstrapDevice]
) -> None:
    device = devices()
    pending = device.request()
    client = signed_in_client(hub)
    assert decide(client, pending.user_code, "approve").status_code == 200
    assert isinstance(device.wait_reply(), ApprovedReply)

    # The same person again (Back, Reload, the code typed again): led to the device
    # it linked, not refused, and not counted as a wrong code.
    (linked,) = hub.links.list_devices()
    twice = decide(client, pending.user_code, "approve")
    assert twice.status_code == 200 and twice.request.path == f"/link/linked/{linked.device_id}"
    looked_up = post_code(client, pending.user_code)
    assert looked_up.status_code == 200 and looked_up.request.path == f"/link/linked/{linked.device_id}"
    back = client.get(f"/link/confirm?code={pending.user_code}")
    assert back.status_code == 303 and back.headers["Location"] == f"/link/linked/{linked.device_id}"
    assert len(hub.links.list_devices()) == 1
    assert hub.activity.recent_of_kinds((ActivityKind.CODE_ENTRY_FAILED,), since_s=0) == []


def test_an_expired_code_says_so(make_hub: HubFactory, devices: Callable[..., BootstrapDevice]) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock)
    device = devices()
    pending = device.request()
    client = signed_in_client(hub, clock)
    assert post_code(client, pending.user_code).status_code == 200  # still pending

    clock.advance(901)
    expired = post_code(client, pending.user_code)
    assert expired.status_code == 410
    assert message_of(expired) == ("expired", DECISION_MESSAGES[CodeStatus.EXPIRED])
    too_late = decide(client, pending.user_code, "approve")
    assert too_late.status_code == 410
    assert message_of(too_late)[0] == "expired"
    device.send()  # a poll; the hub's expiry sweep may have told the device already
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.EXPIRED_TOKEN
    assert hub.links.list_devices() == []


def test_a_code_used_for_another_account_says_so(hub: Hub, devices: Callable[..., BootstrapDevice]) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    bob = hub.accounts.create("bob", PASSWORD)
    device = devices()
    pending = device.request()
    hub.links.approve(pending.user_code, bob.id)
    assert isinstance(device.wait_reply(), ApprovedReply)

    # The service: only a person other than the approver hears "another account".
    alice = hub.accounts.find(OWNER)
    assert alice is not None
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.USED
    assert hub.links.lookup_code(pending.user_code, bob.id).status is CodeStatus.USED_BY_YOU
    other = hub.links.lookup_code(sloppy(pending.user_code), alice.id)
    assert other.status is CodeStatus.USED_BY_OTHER_ACCOUNT
    assert hub.links.lookup_code("hello", alice.id).status is CodeStatus.MALFORMED

    # The page, on looking the code up and on trying to approve it anyway.
    client = signed_in_client(hub)
    looked_up = post_code(client, sloppy(pending.user_code))
    assert looked_up.status_code == 409
    status, text = message_of(looked_up)
    assert status == "used_by_other_account"
    assert text == DECISION_MESSAGES[CodeStatus.USED_BY_OTHER_ACCOUNT]
    assert text.startswith(
        "This code was already used to link a device to another account. If that was not you"
    )
    assert "Kitchen Lamp" not in page(looked_up)  # nothing about the other account's device
    approved = decide(client, pending.user_code, "approve")
    assert approved.status_code == 409
    assert message_of(approved)[0] == "used_by_other_account"
    assert [d.account_id for d in hub.links.list_devices()] == [bob.id]

    # Bob himself is led to the device he linked.
    bobs = web_app(hub).test_client()
    assert sign_in(bobs, "bob").status_code == 302
    (bobs_lamp,) = hub.links.list_devices(bob.id)
    assert post_code(bobs, pending.user_code).request.path == f"/link/linked/{bobs_lamp.device_id}"


def test_every_refusal_reads_differently() -> None:
    refusals = [
        CodeStatus.MALFORMED,
        CodeStatus.UNKNOWN,
        CodeStatus.EXPIRED,
        CodeStatus.DENIED,
        CodeStatus.USED,
        CodeStatus.USED_BY_OTHER_ACCOUNT,
        CodeStatus.USED_BY_YOU,
    ]
    assert len({DECISION_MESSAGES[s] for s in refusals}) == len(refusals)


def test_a_decision_the_broker_does_not_confirm_loses_nothing(
    make_hub: HubFactory, own_broker: RunningBroker, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = make_hub(on_broker=own_broker)
    pending = devices(port=own_broker.port).request()
    client = signed_in_client(hub)

    own_broker.broker.stop()  # the broker can no longer take the device's credentials
    failed = decide(client, pending.user_code, "approve")
    assert failed.status_code == 503
    assert "The hub could not finish; try again" in page(failed)
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING
    assert hub.links.list_devices() == []


# --- protections ------------------------------------------------------------------------------


def test_posts_without_a_csrf_token_are_refused(hub: Hub, devices: Callable[..., BootstrapDevice]) -> None:
    pending = devices().request()
    client = signed_in_client(hub)
    for path, data in (
        ("/link", {"code": pending.user_code}),
        ("/link/decide", {"code": pending.user_code, "action": "approve"}),
        ("/logout", {}),
    ):
        response = client.post(path, data=data)
        assert response.status_code == 400, path
    forged = client.post(
        "/link/decide", data={"csrf_token": "forged", "code": pending.user_code, "action": "approve"}
    )
    assert forged.status_code == 400
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING
    assert client.get("/devices").status_code == 200  # still signed in


def test_pages_send_security_headers_and_a_strict_cookie(hub: Hub) -> None:
    client = web_app(hub).test_client()
    response = client.get("/setup")
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    body = page(response)
    assert "<script" not in body and "style=" not in body and "http" not in body.split("<body>")[1]
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in body
    css = client.get("/static/style.css")
    assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
    icon = client.get("/static/favicon.svg")  # the hub's own, so browsers do not ask for a missing one
    assert icon.status_code == 200 and "image/svg+xml" in icon.headers["Content-Type"]


def test_every_input_has_a_label(hub: Hub) -> None:
    setup = page(web_app(hub).test_client().get("/setup"))
    client = signed_in_client(hub)
    for body in (setup, page(client.get("/link")), page(web_app(hub).test_client().get("/login"))):
        ids = re.findall(r'<input id="([^"]+)"', body)
        assert ids
        for input_id in ids:
            assert f'<label for="{input_id}"' in body
    code_input = re.search(r'<input id="code"[^>]*>', page(client.get("/link")), re.S)
    assert code_input
    for attribute in ('inputmode="text"', 'autocapitalize="characters"', 'autocomplete="one-time-code"'):
        assert attribute in code_input.group(0)
    assert "Code shown on your device" in page(client.get("/link"))


def test_the_qr_page_encodes_the_address_in_use(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    assert web_app(hub).test_client().get("/link/qr").headers["Location"] == "/login?next=/link/qr"
    client = signed_in_client(hub)

    local = client.get("/link/qr")
    assert local.status_code == 200
    body = page(local)
    svg = re.search(r"<svg [^>]*>", body)
    assert svg, body
    assert 'role="img"' in svg.group(0)
    assert 'aria-label="QR code for http://localhost/link"' in svg.group(0)
    assert "<path " in body and "<title>QR code for http://localhost/link</title>" in body
    assert message_of(local)[0] == "loopback"  # a phone cannot open "localhost"
    assert "<script" not in body and "style=" not in body

    # Opened at the hub's LAN address (only a Host header here): that address is encoded.
    lan = "http://192.168.1.10:8080"
    lan_client = web_app(hub).test_client()
    form = lan_client.get("/login", base_url=lan)
    signed_in = lan_client.post(
        "/login", base_url=lan, data={"csrf_token": token(form), "name": OWNER, "password": PASSWORD}
    )
    assert signed_in.status_code == 302
    from_lan = page(lan_client.get("/link/qr", base_url=lan))
    assert 'aria-label="QR code for http://192.168.1.10:8080/link"' in from_lan
    assert 'data-status="loopback"' not in from_lan
    assert 'href="/link/qr"' in page(client.get("/link"))


def test_the_devices_api_wants_a_sign_in(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    response = web_app(hub).test_client().get("/api/v1/devices")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"


def test_devices_show_only_the_signed_in_accounts_devices(
    hub: Hub, devices: Callable[..., BootstrapDevice]
) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    bob = hub.accounts.create("bob", PASSWORD)
    lamp, plug = devices(), devices(DeviceInfo(name="Desk Plug", model="LH-Plug"))
    hub.links.approve(lamp.request().user_code, bob.id)
    plug_code = plug.request().user_code
    client = signed_in_client(hub)
    assert decide(client, plug_code, "approve").status_code == 200

    listing = page(client.get("/devices"))
    assert "Desk Plug" in listing and "Kitchen Lamp" not in listing
    assert [d["name"] for d in client.get("/api/v1/devices").get_json()["devices"]] == ["Desk Plug"]


# --- the control API -------------------------------------------------------------------------


def test_control_approves_by_code_and_account_name(hub: Hub, devices: Callable[..., BootstrapDevice]) -> None:
    control = control_app(hub).test_client()
    created = control.post("/v1/accounts", json={"name": OWNER, "password": PASSWORD})
    assert created.status_code == 201
    account = hub.accounts.find(OWNER)
    assert account is not None
    assert created.get_json() == {"id": account.id, "name": OWNER, "is_owner": True}
    device = devices()
    pending = device.request()

    approved = control.post("/v1/link/approve", json={"code": sloppy(pending.user_code), "account": OWNER})
    assert approved.status_code == 200
    body = approved.get_json()
    reply = device.wait_reply()
    assert isinstance(reply, ApprovedReply)
    assert body == {
        "device_id": reply.device_id,
        "name": "Kitchen Lamp",
        "model": "LH-Lamp 2",
        "account": OWNER,
    }

    listed = control.get("/v1/devices").get_json()["devices"]
    assert [(d["device_id"], d["account"]) for d in listed] == [(reply.device_id, OWNER)]
    again = control.post("/v1/link/approve", json={"code": pending.user_code, "account": OWNER})
    assert again.status_code == 409
    assert again.get_json() == {"error": "used", "message": DECISION_MESSAGES[CodeStatus.USED]}


def test_control_refuses_an_unknown_account_and_keeps_the_code(
    hub: Hub, devices: Callable[..., BootstrapDevice]
) -> None:
    control = control_app(hub).test_client()
    device = devices()
    pending = device.request()
    response = control.post("/v1/link/approve", json={"code": pending.user_code, "account": "nobody"})
    assert response.status_code == 404
    assert response.get_json()["error"] == "unknown_account"
    assert hub.links.lookup_code(pending.user_code).status is CodeStatus.PENDING

    denied = control.post("/v1/link/deny", json={"code": pending.user_code})
    assert denied.status_code == 200 and denied.get_json()["state"] == "denied"
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.ACCESS_DENIED


def test_control_reports_bad_input_as_json(hub: Hub) -> None:
    control = control_app(hub).test_client()
    short = control.post("/v1/accounts", json={"name": OWNER, "password": "short"})
    assert short.status_code == 400 and short.get_json()["error"] == "account_error"
    assert "8 characters" in short.get_json()["message"]
    not_json = control.post("/v1/link/deny", data="code=x")
    assert not_json.status_code == 400 and not_json.get_json()["error"] == "bad_request"
    malformed = control.post("/v1/link/deny", json={"code": "nope"})
    assert malformed.status_code == 400 and malformed.get_json()["error"] == "malformed"
    assert control.get("/v1/nothing").status_code == 404


# --- time formatting -------------------------------------------------------------------------


def test_times_read_like_a_person_would_say_them() -> None:
    now = 1_800_000_000.0
    assert ago(now - 5, now) == "just now"
    assert ago(now - 60, now) == "1 minute ago"
    assert ago(now - 150, now) == "2 minutes ago"
    assert ago(now - 7200, now) == "2 hours ago"
    assert remaining(now + 900, now) == "expires in 15 min"
    assert remaining(now + 899, now) == "expires in 14 min"
    assert remaining(now + 30, now) == "expires in less than a minute"
    assert remaining(now - 1, now) == "expired"


def test_the_waiting_list_can_be_turned_off(hub: Hub, devices: Callable[..., BootstrapDevice]) -> None:
    """`--no-waiting-list`: /link shows no device and its JSON is not there; typing
    the code still links (docs/security.md, "Devices waiting to be linked")."""
    pending = devices().request()
    hub.accounts.create(OWNER, PASSWORD)
    on = signed_in_client(hub)
    assert "Kitchen Lamp" in page(on.get("/link"))
    assert on.get("/link/waiting.json").get_json()["waiting"][0]["name"] == "Kitchen Lamp"

    config = WebConfig(secret_key="test", testing=True, waiting_list=False)
    off = hub_pages(hub, config).test_client()
    assert sign_in(off).status_code == 302
    assert "Kitchen Lamp" not in page(off.get("/link"))
    assert off.get("/link/waiting.json").status_code == 404
    assert post_code(off, pending.user_code).request.path == "/link/confirm"


def test_every_form_that_succeeds_redirects(hub: Hub, devices: Callable[..., BootstrapDevice]) -> None:
    """Post/redirect/get for every page form (issue 14 item 2): a form that did what
    it was asked answers 302/303, and where it leads opens, so Back and Reload
    never post again. A POST route of the pages missing from this table fails
    the test, so a new form comes with its entry here."""
    client = signed_in_client(hub)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    bob = hub.accounts.create("bob", PASSWORD)
    pending = [devices(DeviceInfo(name=f"Lamp {n}", model="LH-Lamp 2")).request() for n in range(2)]
    given = hub.links.approve(
        devices(DeviceInfo(name="Desk Fan", model="LH-Fan")).request().user_code, owner.id
    )
    unlinked = hub.links.approve(
        devices(DeviceInfo(name="Old Plug", model="LH-Plug")).request().user_code, owner.id
    )
    kept = hub.links.approve(devices().request().user_code, owner.id)
    app_client = hub.apps.client("media-centre")
    assert app_client is not None
    asked = hub.apps.start(app_client, ("devices:read",), None)
    hub.apps.approve(asked.user_code, owner.id)
    linked_app = hub.apps.exchange(asked.device_code, "media-centre", IssuedTokens("access", "refresh"))

    forms: list[tuple[str, dict[str, str]]] = [
        ("/link", {"code": pending[0].user_code}),
        ("/link/decide", {"code": pending[0].user_code, "action": "approve"}),
        ("/link/decide", {"code": pending[1].user_code, "action": "deny"}),
        ("/settings", {"key": "mode", "value": "dark", "action": "set"}),
        ("/settings/preferences", {"theme": "dark", "temperature_unit": "C"}),
        (f"/devices/{kept.device_id}/settings", {"key": "brightness", "value": "40", "action": "set"}),
        (f"/devices/{kept.device_id}/rename", {"name": "Kitchen Lamp by the window"}),
        (f"/devices/{given.device_id}/give", {"account_id": str(bob.id)}),
        (f"/devices/{unlinked.device_id}/unlink", {"confirm": "yes"}),
        (
            "/household/members",
            {"name": "carol", "password": "carol's password", "password2": "carol's password"},
        ),
        (
            f"/household/members/{bob.id}/password",
            {"password": "bob's new words", "password2": "bob's new words"},
        ),
        (f"/household/members/{bob.id}/two-factor-off", {"confirm": "yes"}),  # off already: refused, below
        ("/settings/home-assistant", {}),
        ("/settings/apps", {"name": "Wall tablet", "client_id": "wall-tablet", "scope": "devices:read"}),
        ("/settings/apps/remove", {"client_id": "wall-tablet"}),
        (f"/apps/{linked_app.family_id}/unlink", {}),
        ("/account/two-factor/start", {}),
        ("/account/password", {"current": PASSWORD, "new": "alice's new words", "new2": "alice's new words"}),
        ("/account/sign-out-everywhere", {}),
    ]
    # Forms whose success needs a state set up elsewhere; each has its own redirect test.
    elsewhere = {
        "/setup": "test_first_run_creates_the_owner_account",
        "/login": "sign_in here, tests/test_sign_in.py",
        "/login/two-factor": "tests/test_sign_in.py",
        "/logout": "tests/test_sessions.py",
        "/account/choose-password": "tests/test_browser_journey.py",
        "/account/two-factor/confirm": "tests/test_sign_in.py (enrol)",
        "/account/two-factor/recovery-codes": "tests/test_sign_in.py",
        "/account/two-factor/disable": "tests/test_sign_in.py",
        "/household/members/<int:account_id>/remove": "tests/test_households.py",
        # A device must be online and described: a simulated one with a profile answers.
        "/devices/<device_id>/command": "tests/test_browser_controls.py",
    }
    for path, fields in forms:
        form = client.get("/account" if path.startswith("/account") else "/link")
        answer = client.post(path, data={"csrf_token": token(form), **fields})
        if path.endswith("/two-factor-off"):
            assert answer.status_code == 409, (path, answer.status_code)  # refused: nothing to turn off
            continue
        assert answer.status_code in (302, 303), (path, answer.status_code, page(answer)[:300])
        if path == "/account/sign-out-everywhere":
            break  # signed out: the last one
        assert client.get(answer.headers["Location"]).status_code == 200, (path, answer.headers["Location"])

    posted = {path for path, _ in forms}
    app = web_app(hub)
    routes = {
        rule.rule
        for rule in app.url_map.iter_rules()
        if "POST" in (rule.methods or set()) and not rule.rule.startswith("/api/")
    }
    patterns = {
        re.sub(r"dev-[0-9a-f]+", "<device_id>", p)
        .replace(f"/{bob.id}/", "/<int:account_id>/")
        .replace(linked_app.family_id, "<family_id>")
        for p in posted
    }
    assert routes - patterns - set(elsewhere) == set()
