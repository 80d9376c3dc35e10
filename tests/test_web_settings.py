"""Settings through the web pages, the control API and the CLI, on a real hub.

Devices are linked by the simulated firmware (`DeviceThread`); a device's
report is published with paho under the device's own saved credentials, the
way firmware would, so "synced" is what the hub concluded from the broker.
"""

from __future__ import annotations

import html
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, wait_until
from device_doubles import DeviceThread, RawClient
from flask.testing import FlaskClient
from test_shell_path import RunningHub, device_link, events, started_hub
from test_web import OWNER, PASSWORD, control_app, page, sign_in, token, web_app
from werkzeug.test import TestResponse

import linkhub_protocol as protocol
from hub.core.accounts import VersionedDocument
from hub.daemon import Hub
from hub.services.settings import DeviceSettingsView
from linkhub_protocol import SettingsReported

# Under a top-level key: 7 nested objects counting the change itself; the limit is 6.
DEEP = '{"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}'
HUGE = "x" * 9000  # the limit is 8 KB


# --- helpers -------------------------------------------------------------------------------


def link(hub: Hub, broker: RunningBroker, state: Path, account_id: int, name: str) -> dict[str, Any]:
    """Link one simulated device to the account; its saved state (id, credentials)."""
    device = DeviceThread(broker.port, state, name=name).start()
    hub.links.approve(device.wait_code(), account_id)
    assert device.join() == 0
    return device.saved_state()


def report(
    broker: RunningBroker, state: dict[str, Any], applied_version: int, reported: dict[str, Any]
) -> None:
    """Publish a settings report as the device: its own credentials, client id = device id."""
    mqtt = state["mqtt"]
    client = RawClient(broker.port, mqtt["username"], mqtt["password"], client_id=mqtt["client_id"])
    try:
        assert not client.connack_reason.is_failure, client.connack_reason
        topic = protocol.device_topic(state["device_id"], protocol.SETTINGS_REPORTED)
        assert client.publish(topic, protocol.encode(SettingsReported(applied_version, reported)))
    finally:
        client.close()


def view(hub: Hub, device_id: str) -> DeviceSettingsView:
    found = hub.settings.device_view(device_id)
    assert found is not None
    return found


def client_for(hub: Hub, name: str = OWNER, clock: Callable[[], float] = time.time) -> FlaskClient:
    client = web_app(hub, clock).test_client()
    assert sign_in(client, name).status_code == 302
    return client


def post_setting(
    client: FlaskClient, path: str, key: str, value: str = "", action: str = "set"
) -> TestResponse:
    """One settings form post, as the page's form sends it (the CSRF token is per session)."""
    form = client.get("/settings")
    return client.post(path, data={"csrf_token": token(form), "key": key, "value": value, "action": action})


def error_of(response: TestResponse) -> str:
    found = re.search(r'<p class="message message-error"[^>]*>(.*?)</p>', page(response), re.S)
    assert found, page(response)
    return html.unescape(found.group(1)).strip()


def row_of(response: TestResponse, key: str) -> dict[str, str]:
    """The cells of one settings table row, by class, as text."""
    found = re.search(rf'<tr data-key="{re.escape(key)}">(.*?)</tr>', page(response), re.S)
    assert found, f"no row for {key!r} in {page(response)}"
    cells = dict(re.findall(r'<td class="([a-z-]+)"[^>]*>(.*?)</td>', found.group(1), re.S))
    return {name: html.unescape(re.sub(r"<[^>]+>", "", text)).strip() for name, text in cells.items()}


def preference_rows(response: TestResponse) -> dict[str, str]:
    """The /settings custom settings table: key -> value as shown (readable text)."""
    rows = re.findall(r'<tr data-key="([^"]+)">.*?<span class="value">(.*?)</span>', page(response), re.S)
    return {html.unescape(key): html.unescape(value) for key, value in rows}


def sync_status(response: TestResponse) -> str:
    found = re.search(r'<dd class="sync-status"[^>]*>(.*?)</dd>', page(response), re.S)
    assert found, page(response)
    return html.unescape(found.group(1)).strip()


@pytest.fixture
def alice(hub: Hub) -> int:
    return hub.accounts.create(OWNER, PASSWORD).id


# --- the preferences page --------------------------------------------------------------------


def test_a_preference_set_on_the_settings_page_reaches_every_device(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    fan = link(hub, broker, tmp_path / "fan.json", alice, "Desk Fan")
    client = client_for(hub)

    empty = client.get("/settings")
    assert empty.status_code == 200
    assert "No custom settings." in page(empty)

    saved = post_setting(client, "/settings", "brightness", "70")
    assert saved.status_code == 303 and saved.headers["Location"] == "/settings"
    for key, typed in (("mode", "dark"), ("night", '{"from": "22:00", "level": 10}'), ("label", '"7"')):
        assert post_setting(client, "/settings", key, typed).status_code == 303

    expected = {"brightness": 70, "mode": "dark", "night": {"from": "22:00", "level": 10}, "label": "7"}
    assert hub.settings.preferences(alice) == VersionedDocument(expected, 4)
    for device in (lamp, fan):
        assert view(hub, device["device_id"]).desired == expected

    shown = client.get("/settings")
    body = page(shown)
    assert "Saved. Your devices get the change now" in body  # the flash after the redirect
    # Readable: text without quotes, objects with a space after each comma.
    assert preference_rows(shown) == {
        "brightness": "70",
        "mode": "dark",
        "night": '{"from": "22:00", "level": 10}',
        "label": "7",
    }

    removed = post_setting(client, "/settings", "brightness", action="remove")
    assert removed.status_code == 303
    assert "brightness" not in hub.settings.preferences(alice).document
    assert all("brightness" not in view(hub, d["device_id"]).desired for d in (lamp, fan))
    assert "brightness" not in preference_rows(client.get("/settings"))
    # null typed as a value removes too; removing what is not there changes nothing.
    assert post_setting(client, "/settings", "mode", "null").status_code == 303
    assert post_setting(client, "/settings", "mode", action="remove").status_code == 303
    assert "Nothing changed." in page(client.get("/settings"))
    assert hub.settings.preferences(alice) == VersionedDocument(
        {"night": {"from": "22:00", "level": 10}, "label": "7"}, 6
    )

    # Edit fills the form with the value as it would be typed back in.
    editing = page(client.get("/settings?edit=night"))
    assert 'value="night"' in editing
    assert html.unescape("{&#34;from&#34;: &#34;22:00&#34;, &#34;level&#34;: 10}") in html.unescape(editing)


def post_known(client: FlaskClient, **fields: str) -> TestResponse:
    form = client.get("/settings")
    return client.post("/settings/preferences", data={"csrf_token": token(form), **fields})


def test_known_preferences_have_controls_and_are_checked(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    client = client_for(hub)
    body = page(client.get("/settings"))
    for key in ("time_zone", "temperature_unit", "locale", "theme"):
        assert f'<select id="pref-{key}" name="{key}"' in body
    assert "<option>Europe/Berlin</option>" in body  # the system's zoneinfo list

    chosen = post_known(client, time_zone="Europe/Berlin", temperature_unit="F", locale="de-DE", theme="dark")
    assert chosen.status_code == 303 and chosen.headers["Location"] == "/settings"
    wanted = {"time_zone": "Europe/Berlin", "temperature_unit": "F", "locale": "de-DE", "theme": "dark"}
    assert hub.settings.preferences(alice).document == wanted
    assert view(hub, lamp["device_id"]).desired == wanted
    shown = page(client.get("/settings"))
    assert '<option value="F" selected>Fahrenheit (°F)</option>' in shown
    assert "<option selected>Europe/Berlin</option>" in shown

    for field, wrong in (("time_zone", "Mars/Olympus"), ("temperature_unit", "K"), ("theme", "pink")):
        refused = post_known(client, **{field: wrong})
        assert refused.status_code == 400, field
        assert "is not one of the choices offered" in error_of(refused)
    # A known key cannot be slipped in as a custom one, past its checks.
    sneaked = post_setting(client, "/settings", "theme", "pink")
    assert sneaked.status_code == 400 and "its own control" in error_of(sneaked)
    assert hub.settings.preferences(alice).document == wanted

    # Blank: back to each device's own default.
    assert post_known(client, theme="").status_code == 303
    assert "theme" not in hub.settings.preferences(alice).document

    # Times on the pages follow the account's time zone, with its name.
    devices_page = page(client.get("/devices"))
    assert re.search(r"\d{4}-\d\d-\d\d</span> \d\d:\d\d CES?T", devices_page), devices_page


def test_bad_values_are_refused_with_the_reason(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    client = client_for(hub)
    assert post_setting(client, "/settings", "brightness", "70").status_code == 303
    device_path = f"/devices/{lamp['device_id']}/settings"

    for path in ("/settings", device_path):
        deep = post_setting(client, path, "night", DEEP)
        assert deep.status_code == 400, path
        assert "nests deeper than 6 levels" in error_of(deep)
        assert DEEP in html.unescape(page(deep))  # what was typed stays, to be corrected

        huge = post_setting(client, path, "note", HUGE)
        assert huge.status_code == 400, path
        assert "the limit is 8192" in error_of(huge)

        nameless = post_setting(client, path, "  ", "1")
        assert nameless.status_code == 400 and error_of(nameless) == "Name the setting to change."
        reserved = post_setting(client, path, "$version", "1")
        assert reserved.status_code == 400 and "cannot be a setting name" in error_of(reserved)
        too_long = post_setting(client, path, "k" * 65, "1")
        assert too_long.status_code == 400 and "1-64 lower-case letters" in error_of(too_long)
        spaced = post_setting(client, path, "Night Mode", "1")
        assert spaced.status_code == 400 and "cannot be a setting name" in error_of(spaced)
        broken = post_setting(client, path, "unit", '{"unit": "C"')
        assert broken.status_code == 400, path
        assert error_of(broken).startswith("The value is not valid JSON: Expecting ',' delimiter")
        assert '{"unit": "C"' in html.unescape(page(broken))  # kept, to be corrected

    assert hub.settings.preferences(alice) == VersionedDocument({"brightness": 70}, 1)
    assert view(hub, lamp["device_id"]).settings == {}
    # Not strict JSON (a device could not read Infinity back): kept as the text typed.
    assert post_setting(client, "/settings", "limit", "Infinity").status_code == 303
    assert hub.settings.preferences(alice).document["limit"] == "Infinity"


def test_values_are_shown_escaped(hub: Hub, alice: int) -> None:
    client = client_for(hub)
    assert post_setting(client, "/settings", "name", "<script>alert(1)</script>").status_code == 303
    body = page(client.get("/settings"))
    assert "<script>alert" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


# --- a device's page --------------------------------------------------------------------------


def test_a_device_setting_wins_over_the_preference_and_can_be_removed(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    fan = link(hub, broker, tmp_path / "fan.json", alice, "Desk Fan")
    lamp_id = lamp["device_id"]
    client = client_for(hub)
    assert post_setting(client, "/settings", "brightness", "70").status_code == 303

    listing = page(client.get("/devices"))
    assert f'href="/devices/{lamp_id}"' in listing and f'href="/devices/{fan["device_id"]}"' in listing

    before = client.get(f"/devices/{lamp_id}")
    assert before.status_code == 200
    assert "Kitchen Lamp" in page(before) and "LMP-1" in page(before)
    assert row_of(before, "brightness")["source"] == "account preference"

    saved = post_setting(client, f"/devices/{lamp_id}/settings", "brightness", "30")
    assert saved.status_code == 303 and saved.headers["Location"] == f"/devices/{lamp_id}"
    # The simulated device linked and went away: the flash says when it gets the change.
    assert "Saved. Kitchen Lamp is offline and gets it when it connects." in page(
        client.get(saved.headers["Location"])
    )
    lamp_view = view(hub, lamp_id)
    assert lamp_view.settings == {"brightness": 30} and lamp_view.desired == {"brightness": 30}
    assert view(hub, fan["device_id"]).desired == {"brightness": 70}  # only this device
    assert hub.settings.preferences(alice).document == {"brightness": 70}

    # A later preference change does not override the device's own setting.
    assert post_setting(client, "/settings", "brightness", "90").status_code == 303
    assert view(hub, lamp_id).desired == {"brightness": 30}
    assert view(hub, fan["device_id"]).desired == {"brightness": 90}

    shown = client.get(f"/devices/{lamp_id}")
    row = row_of(shown, "brightness")
    assert (row["desired"], row["source"]) == ("30", "this device's own setting")
    assert 'aria-label="Remove this device\'s brightness"' in page(shown)

    removed = post_setting(client, f"/devices/{lamp_id}/settings", "brightness", action="remove")
    assert removed.status_code == 303
    assert view(hub, lamp_id).settings == {} and view(hub, lamp_id).desired == {"brightness": 90}
    row = row_of(client.get(f"/devices/{lamp_id}"), "brightness")
    assert (row["desired"], row["source"]) == ("90", "account preference")


def test_the_device_page_shows_pending_until_the_device_reports(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock)
    account_id = hub.accounts.create(OWNER, PASSWORD).id
    lamp = link(hub, broker, tmp_path / "lamp.json", account_id, "Kitchen Lamp")
    lamp_id = lamp["device_id"]
    client = client_for(hub, clock=clock)
    assert post_setting(client, "/settings", "brightness", "70").status_code == 303

    first = view(hub, lamp_id)
    assert not first.synced and first.applied_version is None
    pending = client.get(f"/devices/{lamp_id}")
    # The simulated device linked and went away: offline, so that is why it waits.
    assert sync_status(pending) == (
        "Waiting for the device: it is offline, and gets the changes when it connects"
    )
    assert row_of(pending, "brightness")["row-status"] == "Waiting for the device"
    assert row_of(pending, "brightness")["reported"] == "not reported"
    assert '<dd class="last-synced">never</dd>' in page(pending)
    assert "Settings waiting for the device" in page(client.get("/devices"))
    api = client.get(f"/api/v1/devices/{lamp_id}/settings").get_json()
    assert api["synced"] is False and api["desired"] == {"brightness": 70} and api["reported"] is None

    report(broker, lamp, first.desired_version, first.desired)
    wait_until(lambda: view(hub, lamp_id).synced, what="the report to be recorded")

    clock.advance(125)
    synced = client.get(f"/devices/{lamp_id}")
    assert sync_status(synced) == "Up to date"
    row = row_of(synced, "brightness")
    assert (row["desired"], row["reported"], row["row-status"]) == ("70", "70", "Up to date")
    assert "2 minutes ago" in page(synced)
    assert "Settings up to date" in page(client.get("/devices"))
    api = client.get(f"/api/v1/devices/{lamp_id}/settings").get_json()
    assert api["synced"] is True and api["applied_version"] == api["desired_version"]
    assert api["reported"] == {"brightness": 70} and api["reported_at_s"] == clock.now_s - 125

    # A new change: pending again, naming the version the device still runs.
    assert post_setting(client, "/settings", "mode", "dark").status_code == 303
    again = client.get(f"/devices/{lamp_id}")
    newer = view(hub, lamp_id)
    assert sync_status(again) == (
        "Waiting for the device: it is offline, and gets the changes when it connects"
    )
    assert row_of(again, "brightness")["row-status"] == "Up to date"
    assert row_of(again, "mode")["row-status"] == "Waiting for the device"

    # A key the device still runs after it was removed shows as pending, not gone.
    report(broker, lamp, newer.desired_version, newer.desired | {"old": 1})
    wait_until(lambda: view(hub, lamp_id).applied_version == newer.desired_version, what="the second report")
    leftover = row_of(client.get(f"/devices/{lamp_id}"), "old")
    assert leftover["source"] == "reported by the device only"
    assert leftover["row-status"] == "Only on the device"


def test_another_accounts_device_is_not_found(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    bob = hub.accounts.create("bob", PASSWORD).id
    plug = link(hub, broker, tmp_path / "plug.json", bob, "Desk Plug")
    plug_id = plug["device_id"]
    client = client_for(hub)

    assert client.get(f"/devices/{plug_id}").status_code == 404
    assert client.get("/devices/no-such-device").status_code == 404
    assert post_setting(client, f"/devices/{plug_id}/settings", "brightness", "1").status_code == 404
    api = client.get(f"/api/v1/devices/{plug_id}/settings")
    assert api.status_code == 404 and api.get_json()["error"] == "not_found"
    assert "Desk Plug" not in page(client.get("/devices"))
    assert view(hub, plug_id).settings == {} and view(hub, plug_id).desired == {}

    anonymous = web_app(hub).test_client()
    assert anonymous.get(f"/api/v1/devices/{plug_id}/settings").status_code == 401
    assert anonymous.get(f"/devices/{plug_id}").headers["Location"].startswith("/login")
    assert anonymous.get("/settings").headers["Location"].startswith("/login")
    bobs = client_for(hub, "bob")
    assert bobs.get(f"/devices/{plug_id}").status_code == 200
    assert bobs.get(f"/api/v1/devices/{plug_id}/settings").get_json()["device_id"] == plug_id


def test_settings_posts_without_a_csrf_token_are_refused(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    client = client_for(hub)
    for path in ("/settings", f"/devices/{lamp['device_id']}/settings"):
        assert client.post(path, data={"key": "brightness", "value": "1"}).status_code == 400, path
        forged = client.post(path, data={"csrf_token": "forged", "key": "brightness", "value": "1"})
        assert forged.status_code == 400, path
    assert hub.settings.preferences(alice) == VersionedDocument()
    assert view(hub, lamp["device_id"]).settings == {}


def test_every_settings_input_has_a_label(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    client = client_for(hub)
    for path in ("/settings", f"/devices/{lamp['device_id']}"):
        body = page(client.get(path))
        ids = re.findall(r'<(?:input|textarea|select) id="([^"]+)"', body)
        assert {"key", "value"} <= set(ids), path
        for input_id in ids:
            assert f'<label for="{input_id}"' in body
        # Scripts only from the hub's own files (src=), never inline; no inline style.
        assert not re.search(r"<script\b(?![^>]*\ssrc=)", body) and "style=" not in body


# --- the control API ----------------------------------------------------------------------


def test_control_changes_and_shows_settings(
    hub: Hub, broker: RunningBroker, tmp_path: Path, alice: int
) -> None:
    lamp = link(hub, broker, tmp_path / "lamp.json", alice, "Kitchen Lamp")
    lamp_id = lamp["device_id"]
    control = control_app(hub).test_client()

    changed = control.post("/v1/settings/account", json={"account": OWNER, "changes": {"brightness": 70}})
    assert changed.status_code == 200
    assert changed.get_json() == {"account": OWNER, "document": {"brightness": 70}, "version": 1}
    assert control.get(f"/v1/settings/account/{OWNER}").get_json() == changed.get_json()

    own = control.post("/v1/settings/device", json={"device_id": lamp_id, "changes": {"brightness": 30}})
    assert own.status_code == 200
    body = own.get_json()
    assert body["settings"] == {"brightness": 30} and body["desired"] == {"brightness": 30}
    assert body["synced"] is False and body["device_id"] == lamp_id
    assert control.get(f"/v1/settings/device/{lamp_id}").get_json() == body

    account, device_path = "/v1/settings/account", "/v1/settings/device"
    deep = json.loads(f'{{"n": {DEEP}}}')
    cases: list[tuple[str, str, dict[str, Any] | None, int, str]] = [
        ("POST", account, {"account": "nobody", "changes": {"a": 1}}, 404, "unknown_account"),
        ("GET", f"{account}/nobody", None, 404, "unknown_account"),
        ("POST", device_path, {"device_id": "no-such", "changes": {"a": 1}}, 404, "unknown_device"),
        ("GET", f"{device_path}/no-such", None, 404, "unknown_device"),
        ("POST", account, {"account": OWNER, "changes": [1]}, 400, "bad_request"),
        ("POST", account, {"account": OWNER}, 400, "bad_request"),
        ("POST", account, {"account": OWNER, "changes": {"n": HUGE}}, 400, "payload_too_large"),
        ("POST", account, {"account": OWNER, "changes": deep}, 400, "invalid_request"),
        ("POST", device_path, {"device_id": lamp_id, "changes": {"$v": 1}}, 400, "not_owned"),
    ]
    for method, path, payload, status, error in cases:
        response = control.open(path, method=method, json=payload)
        assert (response.status_code, response.get_json()["error"]) == (status, error), (path, payload)
    infinite = control.post(
        "/v1/settings/account",
        data='{"account": "alice", "changes": {"x": Infinity}}',
        content_type="application/json",
    )
    assert infinite.status_code == 400 and infinite.get_json()["error"] == "invalid_request"
    assert hub.settings.preferences(alice) == VersionedDocument({"brightness": 70}, 1)


# --- the CLI against `linkhub run` -----------------------------------------------------------


@pytest.fixture
def shell_hub(tmp_path: Path) -> Iterator[RunningHub]:
    with started_hub(tmp_path / "data") as hub:
        yield hub


def test_cli_settings_set_and_show(shell_hub: RunningHub, tmp_path: Path) -> None:
    added = shell_hub.cli("account", "add", OWNER, "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    device = device_link(shell_hub, tmp_path / "lamp.json")
    (code,) = events(device, until="code")
    assert shell_hub.cli("link", "approve", code["user_code"], "--account", OWNER).returncode == 0
    (linked,) = events(device, until="linked")
    assert device.wait(timeout=10) == 0
    lamp_id = linked["device_id"]

    empty = shell_hub.cli("settings", "show", "--account", OWNER)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [f"{OWNER}'s preferences, version 0:", "  (none)"]

    changed = shell_hub.cli(
        "settings", "set", "--account", OWNER, "brightness=70", "theme=dark", 'night={"from": "22:00"}'
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        f"{OWNER}'s preferences are now version 1; every device of the account gets the change:",
        "  brightness: 70 (new)",
        '  theme: "dark" (new)',
        '  night: {"from": "22:00"} (new)',
    ]
    shown = json.loads(shell_hub.cli("settings", "show", "--account", OWNER, "--json").stdout)
    assert shown == {
        "account": OWNER,
        "document": {"brightness": 70, "theme": "dark", "night": {"from": "22:00"}},
        "version": 1,
    }

    own = shell_hub.cli("settings", "set", "--device", lamp_id, "brightness=30")
    assert own.returncode == 0, own.stderr
    lines = own.stdout.splitlines()
    assert lines[1] == "  brightness: 30 (new)"
    assert lines[2].startswith("device: Waiting for the device")
    device_view = json.loads(shell_hub.cli("settings", "show", "--device", lamp_id, "--json").stdout)
    assert device_view["settings"] == {"brightness": 30}
    assert device_view["desired"] == {"brightness": 30, "theme": "dark", "night": {"from": "22:00"}}
    table = shell_hub.cli("settings", "show", "--device", lamp_id).stdout
    assert re.search(r"^brightness\s+30\s+-\s+this device's own setting\s+pending$", table, re.M), table
    assert re.search(r'^theme\s+"dark"\s+-\s+account preference\s+pending$', table, re.M), table
    assert "last report: never" in table

    removed = shell_hub.cli("settings", "set", "--account", OWNER, "theme=null", "missing=null")
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines()[1:] == [
        '  theme: removed (was "dark")',
        "  missing: not set, nothing to remove",
    ]
    same = shell_hub.cli("settings", "set", "--account", OWNER, "brightness=70")
    assert same.stdout.splitlines()[0] == f"{OWNER}'s preferences: nothing changed (version 2)"

    for args, words in (
        (("--account", OWNER, f"note={HUGE}"), ("the limit is 8192", "[payload_too_large]")),
        (("--account", OWNER, f"night={DEEP}"), ("nests deeper than 6 levels", "[invalid_request]")),
        (("--device", lamp_id, "$v=1"), ("belong to the hub", "[not_owned]")),
        (("--account", "nobody", "a=1"), ("no account named 'nobody'", "[unknown_account]")),
        (("--device", "no-such-device", "a=1"), ("no linked device", "[unknown_device]")),
    ):
        refused = shell_hub.cli("settings", "set", *args)
        assert refused.returncode == 1, args
        assert all(word in refused.stderr for word in words), refused.stderr
        assert refused.stdout == ""
    assert shell_hub.cli("settings", "set", "--account", OWNER, "brightness").returncode == 2
    both = shell_hub.cli("settings", "show", "--account", OWNER, "--device", lamp_id)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    final = json.loads(shell_hub.cli("settings", "show", "--account", OWNER, "--json").stdout)
    assert final["document"] == {"brightness": 70, "night": {"from": "22:00"}} and final["version"] == 2
