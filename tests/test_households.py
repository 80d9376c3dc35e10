"""Households on a real hub: the owner manages the accounts, and every account,
the owner's included, sees and manages only the devices linked to it.

Devices are linked through the real flow (firmware_sim in a thread, approved by
the link service), and every refusal is checked next to the same request on
the account's own device, so a 404 means "not yours", not "no such route".
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from conftest import HubFactory, RunningBroker, wait_until
from device_doubles import DeviceThread
from flask.testing import FlaskClient
from test_account_service import serving
from test_settings_bridge import DeviceClient
from test_shell_path import LINKHUB, device_link, events, started_hub
from test_web import OWNER, PASSWORD, control_app, decide, page, sign_in, token, web_app
from test_web_settings import client_for, link, post_setting, view
from werkzeug.test import TestResponse

import linkhub_protocol as protocol
from hub.core.accounts import ChangeKind
from hub.daemon import Hub
from hub.errors import AccountError, HouseholdRefused, SettingsRefused
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.household import Household, Origin, Refusal
from hub.services.local_accounts import AccountService
from hub.services.remote_accounts import RemoteAccountService
from hub.store.engine import make_engine
from linkhub_protocol import SettingsSet
from web.account_api import create_account_api
from web.activity import WHAT
from web.auth import WRONG_CREDENTIALS

MEMBERS = ("bob", "carol")


@dataclass
class Person:
    name: str
    account_id: int
    device_id: str
    client: FlaskClient


@pytest.fixture
def household(hub: Hub, broker: RunningBroker, tmp_path: Path) -> dict[str, Person]:
    """alice (the owner), bob and carol, each signed in with one lamp of their own."""
    people: dict[str, Person] = {}
    for name in (OWNER, *MEMBERS):
        account = hub.accounts.create(name, PASSWORD)
        assert account.is_owner == (name == OWNER)
        state = link(hub, broker, tmp_path / f"{name}.json", account.id, f"{name.title()}'s Lamp")
        people[name] = Person(name, account.id, state["device_id"], client_for(hub, name))
    return people


def text(response: TestResponse) -> str:
    """The page with its HTML entities read back ("owner's", not "owner&#39;s")."""
    return html.unescape(page(response))


def device_ids_on_page(response: TestResponse) -> set[str]:
    return set(re.findall(r'<li class="device" data-device-id="([^"]+)"', page(response)))


def form_token(client: FlaskClient) -> str:
    return token(client.get("/settings"))


def members_on_page(response: TestResponse) -> dict[str, tuple[str, str]]:
    """/household: name -> (role, linked devices), as shown."""
    found = re.findall(
        r'<h2 class="member-name">(.*?)</h2>.*?<dd class="member-role">(.*?)</dd>'
        r'.*?<dd class="member-devices">(.*?)</dd>',
        page(response),
        re.S,
    )
    return {name: (role, devices) for name, role, devices in found}


def kinds_on_page(response: TestResponse) -> list[str]:
    return re.findall(r'<li class="event" data-kind="([^"]+)">', page(response))


def nav_links(response: TestResponse) -> list[str]:
    nav = re.search(r'<nav aria-label="Main">(.*?)</nav>', page(response), re.S)
    assert nav, page(response)
    return re.findall(r">([^<>]+)</a>", nav.group(1))


# --- devices: each account sees and manages only its own ------------------------------------


def test_every_account_lists_only_its_own_devices(household: dict[str, Person]) -> None:
    for person in household.values():
        listed = person.client.get("/devices")
        assert listed.status_code == 200
        assert device_ids_on_page(listed) == {person.device_id}, person.name
        api = person.client.get("/api/v1/devices")
        assert api.status_code == 200
        assert [device["device_id"] for device in api.get_json()["devices"]] == [person.device_id]
        assert {device["account_id"] for device in api.get_json()["devices"]} == {person.account_id}


def test_no_account_can_read_change_or_unlink_another_accounts_device(
    hub: Hub, household: dict[str, Person]
) -> None:
    for person in household.values():
        client, own = person.client, person.device_id
        csrf = form_token(client)
        # The same requests on the account's own device work (the unlink ones only
        # reach their confirm step): the 404s below are about whose device it is.
        assert client.get(f"/devices/{own}").status_code == 200
        assert client.get(f"/api/v1/devices/{own}/settings").status_code == 200
        assert client.get(f"/devices/{own}/unlink").status_code == 200
        assert client.post(f"/devices/{own}/unlink", data={"csrf_token": csrf}).status_code == 200
        nobody = client.delete("/api/v1/devices/dev-000000000000", headers={"X-CSRFToken": csrf})
        assert nobody.status_code == 404

        for other in (p for p in household.values() if p is not person):
            where = f"{person.name} on {other.name}'s device"
            target = other.device_id
            assert client.get(f"/devices/{target}").status_code == 404, where
            changed = client.post(
                f"/devices/{target}/settings", data={"csrf_token": csrf, "key": "brightness", "value": "1"}
            )
            assert changed.status_code == 404, where
            read = client.get(f"/api/v1/devices/{target}/settings")
            assert read.status_code == 404, where
            if person.name == "alice":  # the owner
                # The owner may unlink (or give away) a member's device from the
                # household page: the confirm step opens, its settings do not.
                assert client.get(f"/devices/{target}/unlink").status_code == 200, where
            else:
                assert client.get(f"/devices/{target}/unlink").status_code == 404, where
                unlinked = client.post(
                    f"/devices/{target}/unlink", data={"csrf_token": csrf, "confirm": "yes"}
                )
                assert unlinked.status_code == 404, where
                given = client.post(
                    f"/devices/{target}/give", data={"csrf_token": csrf, "account_id": person.account_id}
                )
                assert given.status_code == 404, where
            deleted = client.delete(f"/api/v1/devices/{target}", headers={"X-CSRFToken": csrf})
            assert deleted.status_code == 404, where
            # Word for word what a device id nobody has gets: the id alone reveals nothing.
            assert deleted.get_json() == nobody.get_json(), where
            assert read.get_json() == client.get("/api/v1/devices/dev-000000000000/settings").get_json()

    # Nothing was changed or unlinked by all that.
    for person in household.values():
        assert view(hub, person.device_id).settings == {}
        assert [d.device_id for d in hub.links.list_devices(person.account_id)] == [person.device_id]


def test_each_account_unlinks_its_own_device(hub: Hub, household: dict[str, Person]) -> None:
    """The positive side of the unlink refusals above, through both routes."""
    bob, carol = household["bob"], household["carol"]
    by_api = bob.client.delete(
        f"/api/v1/devices/{bob.device_id}", headers={"X-CSRFToken": form_token(bob.client)}
    )
    assert by_api.status_code == 200 and by_api.get_json()["unlinked"] is True
    by_page = carol.client.post(
        f"/devices/{carol.device_id}/unlink", data={"csrf_token": form_token(carol.client), "confirm": "yes"}
    )
    assert by_page.status_code == 303
    assert hub.links.list_devices(bob.account_id) == hub.links.list_devices(carol.account_id) == []
    assert [d.device_id for d in hub.links.list_devices()] == [household[OWNER].device_id]


# --- the household page ---------------------------------------------------------------------


def add_member(
    client: FlaskClient, name: str, password: str = PASSWORD, again: str | None = None
) -> TestResponse:
    form = client.get("/household")
    return client.post(
        "/household/members",
        data={
            "csrf_token": token(form),
            "name": name,
            "password": password,
            "password2": password if again is None else again,
        },
    )


def remove(client: FlaskClient, account_id: int, *, confirm: bool = True) -> TestResponse:
    data = {"csrf_token": form_token(client)} | ({"confirm": "yes"} if confirm else {})
    return client.post(f"/household/members/{account_id}/remove", data=data)


def test_the_owner_lists_and_adds_members(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    owner = client_for(hub)
    listed = owner.get("/household")
    assert listed.status_code == 200
    assert members_on_page(listed) == {OWNER: ("Owner", "0")}
    assert nav_links(listed)[-2:] == ["Activity", "Household"]

    differ = add_member(owner, "bob", again="another password")
    assert differ.status_code == 400 and "The two passwords differ." in page(differ)
    short = add_member(owner, "bob", password="short")
    assert short.status_code == 400 and "at least 8 characters" in page(short)
    taken = add_member(owner, OWNER)
    assert taken.status_code == 400 and "already exists" in page(taken)
    assert hub.accounts.find("bob") is None

    added = add_member(owner, "bob")
    assert added.status_code == 303 and added.headers["Location"] == "/household"
    shown = owner.get("/household")
    assert members_on_page(shown) == {OWNER: ("Owner", "0"), "bob": ("Member", "0")}
    assert "bob can now sign in" in page(shown)
    bob = hub.accounts.find("bob")
    assert bob is not None and not bob.is_owner

    member = web_app(hub).test_client()
    assert sign_in(member, "bob").status_code == 302
    assert "Household" not in nav_links(member.get("/devices"))


def test_a_member_gets_403_on_every_household_page_and_post(hub: Hub) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    carol = hub.accounts.create("carol", PASSWORD)
    hub.accounts.create("bob", PASSWORD)
    bob = client_for(hub, "bob")

    assert bob.get("/household").status_code == 403
    assert "Only the household's owner" in text(bob.get("/household"))
    assert add_member(bob, "mallory").status_code == 403
    assert bob.get(f"/household/members/{carol.id}/remove").status_code == 403
    assert remove(bob, carol.id).status_code == 403
    assert hub.accounts.find("mallory") is None and hub.accounts.get(carol.id) == carol

    signed_out = web_app(hub).test_client().get("/household")
    assert signed_out.status_code == 302 and signed_out.headers["Location"].startswith("/login")


def test_the_owners_account_cannot_be_removed(hub: Hub) -> None:
    alice = hub.accounts.create(OWNER, PASSWORD)
    owner = client_for(hub)
    assert "Remove alice" not in page(owner.get("/household"))  # no button for it
    refused = remove(owner, alice.id)
    assert refused.status_code == 400 and "The owner's account cannot be removed." in text(refused)
    assert remove(owner, 999).status_code == 404
    assert hub.accounts.get(alice.id) == alice


def test_removing_a_member_waits_for_their_devices_and_keeps_their_history(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    hub.accounts.create(OWNER, PASSWORD)
    bob_account = hub.accounts.create("bob", PASSWORD)
    lamp = link(hub, broker, tmp_path / "lamp.json", bob_account.id, "Bob's Lamp")
    bob = client_for(hub, "bob")
    hub.settings.set_preferences(bob_account.id, {"theme": "dark"}, origin="web")
    hub.settings.set_device_settings(lamp["device_id"], {"brightness": 40}, origin="web")
    owner = client_for(hub)
    assert members_on_page(owner.get("/household"))["bob"] == ("Member", "1")

    confirm = owner.get(f"/household/members/{bob_account.id}/remove")
    assert confirm.status_code == 200 and "Remove bob?" in page(confirm)
    assert remove(owner, bob_account.id, confirm=False).status_code == 200  # the confirm step again
    refused = remove(owner, bob_account.id)
    assert refused.status_code == 409
    assert "bob still has 1 linked device. Give each to another member or unlink it first" in text(refused)
    assert hub.accounts.get(bob_account.id) == bob_account

    unlinked = bob.delete(f"/api/v1/devices/{lamp['device_id']}", headers={"X-CSRFToken": form_token(bob)})
    assert unlinked.status_code == 200
    removed = remove(owner, bob_account.id)
    assert removed.status_code == 303 and removed.headers["Location"] == "/household"
    assert "bob was removed from the household" in page(owner.get("/household"))
    assert "bob" not in members_on_page(owner.get("/household"))

    # Signed out at once, and no way back in.
    kicked = bob.get("/devices")
    assert kicked.status_code == 302 and kicked.headers["Location"].startswith("/login")
    denied = sign_in(web_app(hub).test_client(), "bob")
    assert denied.status_code == 400 and WRONG_CREDENTIALS in text(denied)
    assert hub.accounts.get(bob_account.id) is None and hub.accounts.find("bob") is None
    # Their history stays: preferences, the device's settings, the account service's log, activity.
    assert hub.settings.preferences(bob_account.id).document == {"theme": "dark"}

    def logged() -> set[ChangeKind]:
        return {c.change.kind for c in hub.accounts.changes() if c.change.account_id == bob_account.id}

    wait_until(lambda: logged() == set(ChangeKind), what="bob's changes in the account service's log")
    assert hub.accounts.preferences(bob_account.id).document == {"theme": "dark"}
    assert hub.accounts.device_settings(lamp["device_id"]).document == {"brightness": 40}
    kinds = [event.kind for event in hub.activity.recent(bob_account.id)]
    assert kinds[0] is ActivityKind.ACCOUNT_REMOVED and ActivityKind.LINK_APPROVED in kinds

    # The name can be given again, to a new account that inherits nothing.
    assert add_member(owner, "bob").status_code == 303
    new_bob = hub.accounts.find("bob")
    assert new_bob is not None and new_bob.id != bob_account.id
    assert hub.settings.preferences(new_bob.id).document == {}
    again = client_for(hub, "bob")
    assert kinds_on_page(again.get("/activity")).count("link_approved") == 0
    assert device_ids_on_page(again.get("/devices")) == set()


def test_the_household_service_checks_who_asks(hub: Hub) -> None:
    alice = hub.accounts.create(OWNER, PASSWORD)
    bob = hub.accounts.create("bob", PASSWORD)
    household = Household(hub.accounts, hub.activity, hub.links)
    with pytest.raises(HouseholdRefused) as refused:
        household.create_account("mallory", PASSWORD, origin=Origin.WEB, by=bob)
    assert refused.value.reason == Refusal.NOT_OWNER
    with pytest.raises(HouseholdRefused) as refused:
        household.remove_member(alice.id, origin=Origin.WEB, by=bob)
    assert refused.value.reason == Refusal.NOT_OWNER
    with pytest.raises(HouseholdRefused) as refused:
        household.remove_member(alice.id, origin=Origin.CLI)
    assert refused.value.reason == Refusal.OWNER
    with pytest.raises(HouseholdRefused) as refused:
        household.remove_member(12345, origin=Origin.CLI)
    assert refused.value.reason == Refusal.UNKNOWN_ACCOUNT
    with pytest.raises(ValueError):
        household.remove_member(bob.id, origin=Origin.WEB)  # the page must say who asks
    assert household.remove_member(bob.id, origin=Origin.CLI) == bob
    with pytest.raises(HouseholdRefused) as refused:
        household.remove_member(bob.id, origin=Origin.CLI)
    assert refused.value.reason == Refusal.UNKNOWN_ACCOUNT


# --- two-factor sign-in off, for a member who lost phone and recovery codes ---------------------


def enrol_two_factor(hub: Hub, account_id: int) -> list[str]:
    """Two-factor on for the account, as its person did it (the recovery codes)."""
    new = hub.accounts.begin_two_factor(account_id)
    return hub.accounts.confirm_two_factor(account_id, new.secret, pyotp.TOTP(new.secret).now())


def two_factor_off(client: FlaskClient, account_id: int, *, confirm: bool = True) -> TestResponse:
    data = {"csrf_token": form_token(client)} | ({"confirm": "yes"} if confirm else {})
    return client.post(f"/household/members/{account_id}/two-factor-off", data=data)


def test_the_owner_turns_off_a_members_two_factor(hub: Hub) -> None:
    alice = hub.accounts.create(OWNER, PASSWORD)
    bob = hub.accounts.create("bob", PASSWORD)
    carol = hub.accounts.create("carol", PASSWORD)
    owner = client_for(hub)
    enrol_two_factor(hub, bob.id)
    enrol_two_factor(hub, carol.id)
    shown = page(owner.get("/household"))
    assert re.findall(r'<dd class="member-two-factor">(\w+)</dd>', shown) == ["Off", "On", "On"]
    assert "Turn off two-factor for bob" in shown and "Turn off two-factor for alice" not in shown

    # A member may not, for anyone; a form without the token does nothing.
    hub.accounts.create("dave", PASSWORD)
    dave = client_for(hub, "dave")
    assert dave.get(f"/household/members/{bob.id}/two-factor-off").status_code == 403
    assert two_factor_off(dave, bob.id).status_code == 403
    forged = owner.post(f"/household/members/{bob.id}/two-factor-off", data={"confirm": "yes"})
    assert forged.status_code == 400
    assert hub.accounts.two_factor_status(bob.id).enabled

    confirm = owner.get(f"/household/members/{bob.id}/two-factor-off")
    assert confirm.status_code == 200 and "Turn off two-factor sign-in for bob?" in text(confirm)
    assert two_factor_off(owner, bob.id, confirm=False).status_code == 200  # the confirm step again
    assert hub.accounts.two_factor_status(bob.id).enabled
    done = two_factor_off(owner, bob.id)
    assert done.status_code == 303 and done.headers["Location"] == "/household"
    assert "Two-factor sign-in is off for bob" in text(owner.get("/household"))
    assert not hub.accounts.two_factor_status(bob.id).enabled
    assert hub.accounts.two_factor_status(carol.id).enabled  # only bob's

    # bob signs in with his password alone, and sees why in his activity; so does the owner.
    bob_client = web_app(hub).test_client()
    signed_in = sign_in(bob_client, "bob")
    assert signed_in.status_code == 302 and "/login/two-factor" not in signed_in.headers["Location"]
    (bobs,) = [e for e in hub.activity.recent(bob.id) if e.kind is ActivityKind.TWO_FACTOR_DISABLED]
    assert bobs.detail.startswith("turned off without a code by alice on the household page")
    assert bobs.address is not None
    (alices,) = [e for e in hub.activity.recent(alice.id) if e.kind is ActivityKind.TWO_FACTOR_DISABLED]
    assert alices.detail == "for 'bob', turned off without a code by alice on the household page"
    assert "two_factor_disabled" in kinds_on_page(bob_client.get("/activity"))

    # Nothing to turn off now; the owner's own goes through Settings; nobody is 404.
    again = two_factor_off(owner, bob.id)
    assert again.status_code == 409 and "bob does not use two-factor sign-in" in text(again)
    codes = enrol_two_factor(hub, alice.id)
    # Switching two-factor on ends the sessions signed in with the password alone,
    # the owner's too: she signs in again, with a recovery code as her second factor.
    assert owner.get("/household").status_code == 302
    owner = web_app(hub).test_client()
    assert sign_in(owner, OWNER).headers["Location"].startswith("/login/two-factor")
    form = owner.get("/login/two-factor")
    second = owner.post("/login/two-factor", data={"csrf_token": token(form), "code": codes[0]})
    assert second.status_code == 303 and owner.get("/household").status_code == 200
    own = two_factor_off(owner, alice.id)
    assert own.status_code == 400 and "on your account page > Two-factor sign-in" in text(own)
    assert hub.accounts.two_factor_status(alice.id).enabled
    assert two_factor_off(owner, 999).status_code == 404


def test_the_operator_turns_off_anyones_two_factor(hub: Hub) -> None:
    """`linkhub account two-factor-off NAME` (the control API): the owner's too, the way back
    for an owner who lost both."""
    control = control_app(hub).test_client()
    alice = hub.accounts.create(OWNER, PASSWORD)
    bob = hub.accounts.create("bob", PASSWORD)
    enrol_two_factor(hub, alice.id)
    enrol_two_factor(hub, bob.id)
    for account in (alice, bob):
        done = control.post("/v1/two-factor/off", json={"account": account.name})
        assert done.status_code == 200, done.get_json()
        assert done.get_json() == {"id": account.id, "name": account.name, "two_factor": False}
        assert not hub.accounts.two_factor_status(account.id).enabled
    (event,) = [e for e in hub.activity.recent(bob.id) if e.kind is ActivityKind.TWO_FACTOR_DISABLED]
    assert event.detail.startswith(
        "turned off without a code with `linkhub account two-factor-off` on the hub"
    )
    owners = [e.detail for e in hub.activity.recent(alice.id) if e.kind is ActivityKind.TWO_FACTOR_DISABLED]
    assert owners == [
        "for 'bob', turned off without a code with `linkhub account two-factor-off` on the hub",
        "turned off without a code with `linkhub account two-factor-off` on the hub; "
        "the password alone signs in now",
    ]
    for body, status, error in (
        ({"account": "bob"}, 409, "two_factor_off"),
        ({"account": "nobody"}, 404, "unknown_account"),
        ({}, 400, "bad_request"),
    ):
        refused = control.post("/v1/two-factor/off", json=body)
        assert (refused.status_code, refused.get_json()["error"]) == (status, error), body


# --- recent activity --------------------------------------------------------------------------

# The kinds this part records; sign-ins (recorded too) come and go around them.
HOUSEHOLD_KINDS = {"link_approved", "link_denied", "settings_changed", "account_created", "account_removed"}


def events_on_page(response: TestResponse) -> list[dict[str, str]]:
    """/activity: each event's kind and its facts as text, in page order, only HOUSEHOLD_KINDS."""
    events = []
    for kind, body in re.findall(
        r'<li class="event" data-kind="([^"]+)">(.*?)</li>', page(response), re.S
    ):
        if kind not in HOUSEHOLD_KINDS:
            continue
        facts = dict(re.findall(r'<span class="event-(device|address|detail)">(.*?)</span>', body, re.S))
        shown = {name: html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for name, text in facts.items()}
        what = re.search(r'<strong class="event-what">(.*?)</strong>', body, re.S)
        assert what, body
        events.append({"kind": kind, "what": html.unescape(what.group(1))} | shown)
    return events


def test_the_activity_page_shows_the_accounts_own_events_newest_first(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    owner = web_app(hub).test_client()
    form = owner.get("/setup")
    setup = {"csrf_token": token(form), "name": OWNER, "password": PASSWORD, "password2": PASSWORD}
    assert owner.post("/setup", data=setup).status_code == 302
    assert add_member(owner, "bob").status_code == 303
    bob = client_for(hub, "bob")

    lamp = DeviceThread(broker.port, tmp_path / "lamp.json", name="Desk Lamp").start()
    code = lamp.wait_code()
    assert decide(bob, code, "approve").status_code == 200
    assert lamp.join() == 0
    fan = DeviceThread(broker.port, tmp_path / "fan.json", name="Ceiling Fan").start()
    fan_code = fan.wait_code()
    assert decide(bob, fan_code, "deny").status_code == 200
    assert fan.join() != 0
    assert post_setting(bob, "/settings", "mode", "dark").status_code == 303
    device = DeviceClient(broker, lamp.saved_state())
    try:  # a button pressed on the lamp itself
        version = device.get().version
        device.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("button-1", version, {"volume": 7})))
        assert device.reply().ok
    finally:
        device.client.close()
    lamp_id = lamp.saved_state()["device_id"]

    shown = bob.get("/activity")
    assert shown.status_code == 200
    assert 'aria-current="page">Activity</a>' in page(shown)
    assert events_on_page(shown) == [
        {
            "kind": "settings_changed",
            "what": "Settings changed",
            "device": f"Desk Lamp ({lamp_id})",
            "detail": "the device's own settings, changed on the device itself: volume",
        },
        {
            "kind": "settings_changed",
            "what": "Settings changed",
            "detail": "the account's preferences, changed on the web page: mode",
        },
        {
            "kind": "link_denied",
            "what": "Device denied",
            "address": "127.0.0.1",
            "detail": f"Ceiling Fan (LMP-1) from 127.0.0.1, code {fan_code}, decided on the web page",
        },
        {
            "kind": "link_approved",
            "what": "Device linked",
            "device": f"Desk Lamp ({lamp_id})",
            "address": "127.0.0.1",
            "detail": f"Desk Lamp (LMP-1) from 127.0.0.1, code {code}, decided on the web page",
        },
        {
            "kind": "account_created",
            "what": "Account created",
            "address": "127.0.0.1",
            "detail": "added to the household by alice on the household page",
        },
    ]
    # The owner's log has the owner's own events, and none of bob's.
    theirs = owner.get("/activity")
    assert events_on_page(theirs) == [
        {
            "kind": "account_created",
            "what": "Account created",
            "address": "127.0.0.1",
            "detail": "member 'bob' added by alice on the household page",
        },
        {
            "kind": "account_created",
            "what": "Account created",
            "address": "127.0.0.1",
            "detail": "the household's owner account, made on the first-run setup page",
        },
    ]
    assert "Desk Lamp" not in page(theirs) and "Ceiling Fan" not in page(theirs)
    assert web_app(hub).test_client().get("/activity").status_code == 302  # signed out: sign in first


def test_changes_that_change_nothing_or_are_refused_leave_no_event(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    alice = hub.accounts.create(OWNER, PASSWORD)
    lamp = link(hub, broker, tmp_path / "lamp.json", alice.id, "Kitchen Lamp")

    def changes() -> list[str]:
        return [e.detail for e in hub.activity.recent(alice.id) if e.kind is ActivityKind.SETTINGS_CHANGED]

    hub.settings.set_preferences(alice.id, {"theme": "dark", "tz": "Europe/Oslo"}, origin="cli")
    hub.settings.set_device_settings(lamp["device_id"], {"brightness": 40}, origin="cli")
    expected = [
        "the device's own settings, changed with the linkhub command: brightness",
        "the account's preferences, changed with the linkhub command: theme, tz",
    ]
    assert changes() == expected
    hub.settings.set_preferences(alice.id, {"theme": "dark"}, origin="cli")  # as it is already
    hub.settings.set_device_settings(lamp["device_id"], {"missing": None}, origin="cli")
    with pytest.raises(SettingsRefused):
        hub.settings.set_preferences(alice.id, {"note": "x" * 9000}, origin="cli")
    with pytest.raises(SettingsRefused):
        hub.settings.set_device_settings(lamp["device_id"], {"$version": 1}, origin="cli")
    assert changes() == expected


# --- the control API (what the linkhub command asks) --------------------------------------------


def test_the_control_api_lists_removes_and_shows_activity(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    control = control_app(hub).test_client()
    assert control.post("/v1/accounts", json={"name": OWNER, "password": PASSWORD}).status_code == 201
    assert control.post("/v1/accounts", json={"name": "bob", "password": PASSWORD}).status_code == 201
    alice, bob = hub.accounts.find(OWNER), hub.accounts.find("bob")
    assert alice is not None and bob is not None

    lamp = DeviceThread(broker.port, tmp_path / "lamp.json", name="Desk Lamp").start()
    approved = control.post("/v1/link/approve", json={"code": lamp.wait_code(), "account": "bob"})
    assert approved.status_code == 200 and lamp.join() == 0
    fan = DeviceThread(broker.port, tmp_path / "fan.json", name="Ceiling Fan").start()
    assert control.post("/v1/link/deny", json={"code": fan.wait_code()}).status_code == 200
    assert fan.join() != 0

    listed = control.get("/v1/accounts").get_json()["accounts"]
    assert [(a["name"], a["is_owner"], a["devices"]) for a in listed] == [(OWNER, True, 0), ("bob", False, 1)]
    assert all(isinstance(a["created_at_s"], float) for a in listed)

    bobs = control.get("/v1/activity?account=bob").get_json()["events"]
    assert [(e["kind"], e["account"]) for e in bobs if e["kind"] in HOUSEHOLD_KINDS] == [
        ("link_approved", "bob"),
        ("account_created", "bob"),
    ]
    assert bobs[0]["device_name"] == "Desk Lamp" and bobs[0]["what"] == "Device linked"
    assert bobs[0]["detail"].endswith("decided with the linkhub command") and bobs[0]["address"] is None
    assert [e["kind"] for e in control.get("/v1/activity?account=bob&limit=1").get_json()["events"]] == [
        "link_approved"
    ]
    # A denial from the command line belongs to no account: only the operator's view has it.
    everything = control.get("/v1/activity").get_json()["events"]
    denial = [e for e in everything if e["kind"] == "link_denied"]
    assert len(denial) == 1 and denial[0]["account"] is None and denial[0]["account_id"] is None
    assert "Ceiling Fan" in denial[0]["detail"]
    assert not any(e["kind"] == "link_denied" for e in bobs)
    assert {e["account"] for e in everything} >= {OWNER, "bob", None}

    has_devices = control.delete("/v1/accounts/bob")
    assert has_devices.status_code == 409 and has_devices.get_json()["error"] == "has_devices"
    assert "bob still has 1 linked device" in has_devices.get_json()["message"]
    owner = control.delete(f"/v1/accounts/{OWNER}")
    assert owner.status_code == 400 and owner.get_json()["error"] == "owner"
    nobody = control.delete("/v1/accounts/nobody")
    assert nobody.status_code == 404 and nobody.get_json()["error"] == "unknown_account"
    hub.links.unlink(lamp.saved_state()["device_id"], bob.id, origin="cli")
    removed = control.delete("/v1/accounts/bob")
    assert removed.status_code == 200 and removed.get_json() == {"id": bob.id, "name": "bob"}
    assert [a["name"] for a in control.get("/v1/accounts").get_json()["accounts"]] == [OWNER]
    # Still in the operator's view, under the id it had.
    after = control.get("/v1/activity").get_json()["events"]
    bobs_now = [e for e in after if e["account_id"] == bob.id]
    assert bobs_now[0]["kind"] == "account_removed"
    assert bobs_now[0]["detail"] == "removed from the household with `linkhub account remove` on the hub"
    assert {e["account"] for e in bobs_now} == {None}  # no name to give: it is not in use any more

    for query, error in (
        ("?limit=0", "bad_request"),
        ("?limit=many", "bad_request"),
        ("?limit=10001", "bad_request"),
        ("?account=nobody", "unknown_account"),
    ):
        refused = control.get("/v1/activity" + query)
        assert refused.status_code in (400, 404) and refused.get_json()["error"] == error, query


# --- the database: a removed account keeps its id, and frees its name --------------------------


def test_a_removed_accounts_id_is_never_given_again_and_its_name_is(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        accounts = AccountService(engine, time.time)
        alice = accounts.create(OWNER, PASSWORD)
        ids = {alice.id}
        for _ in range(3):  # remove the newest account each time: the id SQLite would hand out next
            bob = accounts.create("bob", PASSWORD)
            assert bob.id not in ids
            ids.add(bob.id)
            with pytest.raises(AccountError, match="already exists"):
                accounts.create("bob", "another password")  # unique among the accounts in use
            assert accounts.remove(bob.id) == bob
        assert [a.name for a in accounts.list_accounts()] == [OWNER]
    finally:
        engine.dispose()


# --- the linkhub command ---------------------------------------------------------------------


def test_accounts_and_activity_from_the_shell(tmp_path: Path) -> None:
    with started_hub(tmp_path / "data") as running:
        for name in (OWNER, "bob"):
            added = running.cli("account", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
        device = device_link(running, tmp_path / "lamp.json", name="Desk Lamp")
        (code_event,) = events(device, until="code")
        approved = running.cli("link", "approve", code_event["user_code"], "--account", "bob")
        assert approved.returncode == 0, approved.stderr
        (linked,) = events(device, until="linked")
        assert device.wait(timeout=10) == 0

        listed = running.cli("account", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [(a["name"], a["is_owner"], a["devices"]) for a in json.loads(listed.stdout)] == [
            (OWNER, True, 0),
            ("bob", False, 1),
        ]
        table = running.cli("account", "list").stdout.splitlines()
        assert table[0].split() == ["NAME", "ROLE", "CREATED", "DEVICES"]
        assert table[1].split()[:2] == [OWNER, "owner"] and table[1].split()[-1] == "0"
        assert table[2].split()[:2] == ["bob", "member"] and table[2].split()[-1] == "1"

        refused = running.cli("account", "remove", "bob")
        assert refused.returncode == 1
        assert "bob still has 1 linked device" in refused.stderr and "[has_devices]" in refused.stderr
        owner = running.cli("account", "remove", OWNER)
        assert owner.returncode == 1 and "[owner]" in owner.stderr

        # JSON lines, newest first, bob's only.
        bobs = running.cli("activity", "--account", "bob", "--json")
        assert bobs.returncode == 0, bobs.stderr
        lines = [json.loads(line) for line in bobs.stdout.splitlines()]
        assert [(e["kind"], e["account"]) for e in lines] == [
            ("link_approved", "bob"),
            ("account_created", "bob"),
        ]
        assert lines[0]["device_id"] == linked["device_id"] and lines[0]["device_name"] == "Desk Lamp"
        assert lines[1]["detail"] == "added to the household with `linkhub account add` on the hub"
        one = running.cli("activity", "--account", "bob", "--json", "--limit", "1")
        assert [json.loads(line)["kind"] for line in one.stdout.splitlines()] == ["link_approved"]

        unlinked = running.cli("devices", "unlink", linked["device_id"])
        assert unlinked.returncode == 0, unlinked.stderr
        removed = running.cli("account", "remove", "bob")
        assert removed.returncode == 0, removed.stderr
        assert "account 'bob' removed" in removed.stdout
        again = running.cli("account", "remove", "bob")
        assert again.returncode == 1 and "[unknown_account]" in again.stderr
        assert [a["name"] for a in json.loads(running.cli("account", "list", "--json").stdout)] == [OWNER]

        # The readable table: the operator's view, every account's events.
        table = running.cli("activity").stdout.splitlines()
        assert table[0].split() == ["WHEN", "ACCOUNT", "WHAT", "DEVICE", "FROM", "DETAIL"]
        alices = [line for line in table[1:] if f" {OWNER} " in line]
        assert "Account removed" in alices[0] and "member 'bob' removed" in alices[0]
        assert any("(removed)" in line and "Device unlinked" in line for line in table[1:])
        mine = running.cli("activity", "--account", OWNER).stdout.splitlines()
        assert mine[0].split() == ["WHEN", "WHAT", "DEVICE", "FROM", "DETAIL"]
        assert [line for line in mine if "Account created" in line][-1].endswith(
            "the household's owner account, made with `linkhub account add` on the hub"
        )
        for args, reason in (
            (("--limit", "0"), "bad_request"),
            (("--account", "nobody"), "unknown_account"),
        ):
            failed = running.cli("activity", *args)
            assert failed.returncode == 1 and f"[{reason}]" in failed.stderr, failed.stderr


def test_account_add_and_list_without_a_running_hub(tmp_path: Path) -> None:
    """Straight on the database, as `account add` always could, leaving the same activity."""
    data_dir = tmp_path / "data"
    for name in (OWNER, "bob"):
        added = subprocess.run(
            [LINKHUB, "account", "add", name, "--password-stdin", "--data-dir", str(data_dir)],
            input=PASSWORD + "\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert added.returncode == 0, added.stderr
    listed = subprocess.run(
        [LINKHUB, "account", "list", "--json", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert listed.returncode == 0, listed.stderr
    assert [(a["name"], a["is_owner"]) for a in json.loads(listed.stdout)] == [(OWNER, True), ("bob", False)]
    removed = subprocess.run(
        [LINKHUB, "account", "remove", "bob", "--data-dir", str(data_dir)], capture_output=True, text=True
    )
    assert removed.returncode == 1 and "no hub is running" in removed.stderr

    engine = make_engine(f"sqlite:///{data_dir / 'linkhub.db'}")
    try:
        accounts = AccountService(engine, time.time)
        alice, bob = accounts.find(OWNER), accounts.find("bob")
        assert alice is not None and bob is not None
        log = ActivityLog(engine, time.time)
        assert [(e.kind, e.detail) for e in log.recent(alice.id)] == [
            (ActivityKind.ACCOUNT_CREATED, "member 'bob' added with `linkhub account add` on the hub"),
            (
                ActivityKind.ACCOUNT_CREATED,
                "the household's owner account, made with `linkhub account add` on the hub",
            ),
        ]
        assert [e.kind for e in log.recent(bob.id)] == [ActivityKind.ACCOUNT_CREATED]
    finally:
        engine.dispose()


def test_the_household_page_over_a_separate_account_service(make_hub: HubFactory, tmp_path: Path) -> None:
    """Accounts in the account service on its own, devices in the hub: the same rules."""
    service = AccountService(make_engine(f"sqlite:///{tmp_path / 'accounts.db'}"), time.time)
    secret = "household-test-token"
    with serving(create_account_api(service, token=secret)) as url:
        hub = make_hub(account_service_url=url, account_service_token=secret)
        assert isinstance(hub.accounts, RemoteAccountService)
        hub.accounts.create(OWNER, PASSWORD)
        owner = client_for(hub)
        assert add_member(owner, "bob").status_code == 303
        assert members_on_page(owner.get("/household")) == {OWNER: ("Owner", "0"), "bob": ("Member", "0")}
        bob = service.find("bob")
        assert bob is not None  # made in the service, not in the hub's database
        assert remove(owner, bob.id).status_code == 303
        assert [a.name for a in service.list_accounts()] == [OWNER]
        assert [e.detail for e in hub.activity.recent(bob.id)] == [
            "removed from the household by alice on the household page",
            "added to the household by alice on the household page",
        ]


def test_two_factor_off_from_the_shell(tmp_path: Path) -> None:
    """`linkhub account two-factor-off NAME`, against a running hub."""
    with started_hub(tmp_path / "data") as running:
        for name in (OWNER, "bob"):
            added = running.cli("account", "add", name, "--password-stdin", stdin=PASSWORD + "\n")
            assert added.returncode == 0, added.stderr
        # bob turns it on (the hub's account service is its database: enrol straight in it).
        engine = make_engine(f"sqlite:///{running.data_dir / 'linkhub.db'}")
        try:
            accounts = AccountService(engine, time.time)
            bob = accounts.find("bob")
            assert bob is not None
            new = accounts.begin_two_factor(bob.id)
            accounts.confirm_two_factor(bob.id, new.secret, pyotp.TOTP(new.secret).now())

            off = running.cli("account", "two-factor-off", "bob")
            assert off.returncode == 0, off.stderr
            assert "two-factor sign-in is off for 'bob'" in off.stdout
            assert not accounts.two_factor_status(bob.id).enabled
        finally:
            engine.dispose()
        again = running.cli("account", "two-factor-off", "bob")
        assert again.returncode == 1 and "[two_factor_off]" in again.stderr
        nobody = running.cli("account", "two-factor-off", "nobody")
        assert nobody.returncode == 1 and "[unknown_account]" in nobody.stderr
        (latest,) = [
            json.loads(line)
            for line in running.cli(
                "activity", "--account", "bob", "--json", "--limit", "1"
            ).stdout.splitlines()
        ]
        assert (latest["kind"], latest["what"]) == ("two_factor_disabled", "Two-factor sign-in turned off")


def test_python_m_linkhub_cli_knows_every_command(tmp_path: Path) -> None:
    """`python -m linkhub.cli` runs main() only once every command's function exists."""
    shown = subprocess.run(
        [
            sys.executable,
            "-m",
            "linkhub.cli",
            "settings",
            "show",
            "--account",
            OWNER,
            "--data-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in shown.stderr, shown.stderr
    assert shown.returncode == 1 and "no hub is running" in shown.stderr


def test_every_kind_of_event_has_words_of_its_own() -> None:
    """The page and `linkhub activity` say what happened in words, not "Code entry throttled"."""
    assert set(ActivityKind) - set(WHAT) == set()
