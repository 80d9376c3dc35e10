"""The person's journey on a phone (issue 14), in real Chromium at 360 px (and
each page at desktop width too, through check_phone_page): devices waiting to
be linked appearing and going as they ask and are decided or expire, the page
following a device after Approve until its settings are up to date, Back and
Reload after every form, giving a device to another member, the owner's part,
password change and reset, and the wrong account caught on the confirm page.

Devices are firmware_sim's own link and run procedures (the wire protocol as
firmware speaks it) on the session's real mosquitto; the hub's clock is a
FakeClock where time matters. Live parts are waited for with Playwright's
`expect`, which polls until its deadline: nothing sleeps.
"""

# ruff: noqa: F811  (pytest fixtures imported from test_browser are parameters here)

from __future__ import annotations

import json
import re
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, hub_pages
from device_doubles import BootstrapDevice, DeviceThread
from playwright.sync_api import Browser, expect
from test_browser import (  # noqa: F401  (fixtures, used by name)
    LAMP,
    LONG_NAME,
    OWNER,
    PASSWORD,
    PHONE,
    Phone,
    PhoneFactory,
    browser,
    check_phone_page,
    chromium_present,
    devices,
    message,
    owner_hub,
    phone_for,
    serving,
    sign_in,
    submit_sign_in,
)
from test_device_settings import RunThread, settings_event
from test_shell_path import LINKHUB

from hub.core.origin import Origin
from hub.daemon import Hub
from hub.services.activity import ActivityKind
from hub.services.links import CodeStatus
from linkhub_protocol import ApprovedReply, DeviceInfo, ErrorCode, ErrorReply
from web import WebConfig

pytestmark = pytest.mark.usefixtures("chromium_present")

# The live parts refresh every 2-5 s (web/static/link.js): an assertion on them
# waits up to this long for the change, so a loaded machine does not fail them.
LIVE_TIMEOUT_MS = 20_000
# web/static/link.js's WAITING_EVERY_MS: one period of Playwright's clock makes one poll.
WAITING_POLL_MS = 3_000


@pytest.fixture(autouse=True)
def live_expect_timeout() -> Iterator[None]:
    expect.set_options(timeout=LIVE_TIMEOUT_MS)
    yield
    expect.set_options(timeout=5_000)  # Playwright's default, for the other modules


BOB = "bob"
BOB_PASSWORD = "bob's long password"


@pytest.fixture
def runs() -> Iterator[Callable[[Path], RunThread]]:
    """Linked devices running (firmware_sim.run), stopped at the end."""
    started: list[RunThread] = []

    def start(state: Path) -> RunThread:
        thread = RunThread(state).start()
        started.append(thread)
        return thread

    yield start
    for thread in started:
        thread.close()


def activity_kinds(hub: Hub, name: str) -> list[str]:
    account = hub.accounts.find(name)
    assert account is not None
    return [entry.kind for entry in hub.activity.recent(account.id)]


# --- devices waiting to be linked, live -----------------------------------------------------


def test_waiting_devices_come_and_go_on_the_link_page(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    # The page's timers on Playwright's clock: each poll is made to happen when
    # the test has changed something, instead of waited for (its fetch is real).
    page.clock.install()

    def next_poll() -> None:
        page.clock.run_for(WAITING_POLL_MS)

    sign_in(phone)
    expect(page).to_have_url(phone.url("/link"))
    waiting = page.locator(".waiting-device")
    expect(waiting).to_have_count(0)
    expect(page.locator(".waiting-empty")).to_be_visible()
    check_phone_page(phone, "40-link-nobody-waiting")

    # A device asks: it appears by itself, with its name, model and address.
    lamp = devices()
    lamp_code = lamp.request().user_code
    next_poll()
    expect(waiting).to_have_count(1)
    expect(waiting.first).to_contain_text(LAMP.name)
    expect(waiting.first).to_contain_text("LH-Lamp 2 · 192.168.1.42 · asked just now · expires in 15 min")
    expect(page.locator(".waiting-empty")).to_be_hidden()
    # A second one, with a long name, a little later: newest first.
    clock.advance(5)
    sensor = devices(DeviceInfo(name=LONG_NAME, model="LH-Motion 1", address="192.168.1.43"))
    sensor_code = sensor.request().user_code
    next_poll()
    expect(page.locator(".waiting-name")).to_have_text([LONG_NAME, LAMP.name])
    check_phone_page(phone, "41-link-devices-waiting")

    # Picking one shows its code to compare before Approve (RFC 8628 §5.4).
    page.get_by_role("link", name=LAMP.name).click()
    expect(page).to_have_url(phone.url(f"/link/confirm?code={lamp_code}"))
    expect(page.locator(".code-question")).to_have_text("Does your device show this code?")
    expect(page.locator(".code-display")).to_have_text(lamp_code)
    page.get_by_role("button", name=f"Approve for {OWNER}").click()
    expect(page.locator("h1")).to_have_text("Done")
    assert isinstance(lamp.wait_reply(), ApprovedReply)

    # Approved, it is gone from the list; denied elsewhere (the hub's operator), gone too.
    page.get_by_role("link", name="Link", exact=True).click()
    expect(page.locator(".waiting-name")).to_have_text([LONG_NAME])
    clock.advance(5)
    third = devices(DeviceInfo(name="Porch Light", model="LH-Lamp 2", address="192.168.1.44"))
    third_code = third.request().user_code
    next_poll()
    expect(page.locator(".waiting-name")).to_have_text(["Porch Light", LONG_NAME])
    hub.links.deny(third_code, None, origin=Origin.CLI)
    next_poll()
    expect(page.locator(".waiting-name")).to_have_text([LONG_NAME])
    # Expired: gone as well, without a reload.
    clock.advance(901)
    next_poll()
    expect(waiting).to_have_count(0)
    expect(page.locator(".waiting-empty")).to_be_visible()
    assert hub.links.lookup_code(sensor_code).status is CodeStatus.EXPIRED


def test_the_confirm_page_counts_down_and_says_when_the_code_expired(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    """The countdown runs on the hub's clock (sent with the page): here the code has
    70 s left, so the page must say "expires in 1 min", then "less than a minute",
    then that it expired, without a reload and before Approve is pressed."""
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    device = devices()
    code = device.request().user_code
    sign_in(phone)
    clock.advance(830)
    # The page's own timers on Playwright's clock, moved by the test as the hub's is.
    page.clock.install()
    phone.go(f"/link/confirm?code={code}")
    countdown = page.locator(".countdown")
    expect(countdown).to_have_text("expires in 1 min")
    page.clock.run_for(15_000)
    expect(countdown).to_have_text("expires in less than a minute")
    page.clock.run_for(56_000)
    expect(countdown).to_have_text("expired")
    expect(page.locator(".expired-note")).to_be_visible()
    expect(page.get_by_role("button", name=f"Approve for {OWNER}")).to_be_disabled()
    check_phone_page(phone, "42-confirm-expired", primaries=1)
    clock.advance(70)
    # Deny still works and tells the page plainly that the code is gone.
    page.get_by_role("button", name="Deny").click()
    assert message(page) == ("expired", "That code has expired. Ask the device for a new code.")
    reply = device.wait_reply()
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.EXPIRED_TOKEN


# --- after Approve, the page follows the device ----------------------------------------------


def test_the_done_page_follows_the_device_until_its_settings_are_up_to_date(
    make_hub: HubFactory,
    broker: RunningBroker,
    phone_for: PhoneFactory,
    runs: Callable[[Path], RunThread],
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    hub.settings.set_preferences(owner.id, {"temperature_unit": "C", "night_light": True}, origin=Origin.WEB)
    phone = phone_for(hub, clock)
    page = phone.page
    sign_in(phone)

    state = tmp_path / "lamp.json"
    linking = DeviceThread(broker.port, state, name="Kitchen Lamp").start()
    code = linking.wait_code()
    page.get_by_role("link", name="Kitchen Lamp").click()
    page.get_by_role("button", name=f"Approve for {OWNER}").click()
    expect(page).to_have_url(re.compile(r"/link/linked/dev-"))
    steps = page.locator(".progress-step.done")
    check_phone_page(phone, "43-done-following")
    # The device takes its credentials and connects with them (then this link
    # procedure ends): the page sees it connected, waiting for its settings.
    assert linking.join() == 0
    expect(steps).to_have_text(["Credentials sent to the device", "Device connected"])
    message_line = page.locator(".progress-message")
    expect(message_line).to_have_text("Kitchen Lamp is connected. Sending it your settings…")

    # It runs: its settings up to date, with no reload.
    device = runs(state)
    device.wait_for(settings_event(), "the first settings")
    expect(steps).to_have_text(["Credentials sent to the device", "Device connected", "Settings up to date"])
    expect(message_line).to_have_text("Kitchen Lamp is connected and its settings are up to date. All done.")
    check_phone_page(phone, "45-done-synced")
    page.reload()  # Reload: the same page, nothing posted
    expect(steps).to_have_count(3)
    assert hub.links.lookup_code(code, owner.id).status is CodeStatus.USED_BY_YOU


def test_the_done_page_says_what_to_try_when_the_device_does_not_connect(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    phone = phone_for(hub, clock)
    page = phone.page
    device = devices()  # takes its credentials but never connects with them
    code = device.request().user_code
    sign_in(phone)
    phone.go(f"/link/confirm?code={code}")
    page.get_by_role("button", name=f"Approve for {OWNER}").click()
    assert isinstance(device.wait_reply(), ApprovedReply)
    message_line = page.locator(".progress-message")
    expect(message_line).to_have_text("Waiting for Kitchen Lamp to connect with its own credentials…")
    expect(page.locator(".progress-step.done")).to_have_text(["Credentials sent to the device"])
    check_phone_page(phone, "43-done-connecting")

    clock.advance(61)  # a minute on the hub's clock: the page says so, and what to try
    expect(message_line).to_contain_text("Kitchen Lamp has not connected yet. Check that it is switched on")
    expect(message_line).to_have_class(re.compile(r"message-warning"))
    check_phone_page(phone, "44-done-late")


# --- the wrong account ------------------------------------------------------------------------


def test_not_you_signs_in_as_someone_else_and_comes_back_to_the_same_code(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    hub = owner_hub(make_hub)
    hub.accounts.create(BOB, BOB_PASSWORD)
    phone = phone_for(hub)
    page = phone.page
    device = devices()
    code = device.request().user_code
    sign_in(phone)
    expect(page.locator(".who-name")).to_have_text(OWNER)  # the header says who is signed in
    page.get_by_role("link", name=LAMP.name).click()
    expect(page.locator(".link-account-name")).to_have_text(OWNER)
    page.get_by_role("button", name="Sign in as someone else").click()
    expect(page).to_have_url(re.compile(r"/login\?next="))
    submit_sign_in(phone, BOB, BOB_PASSWORD)
    expect(page).to_have_url(phone.url(f"/link/confirm?code={code}"))
    expect(page.locator(".link-account-name")).to_have_text(BOB)
    expect(page.locator(".who-name")).to_have_text(BOB)
    page.get_by_role("button", name=f"Approve for {BOB}").click()
    expect(page.locator("h1")).to_have_text("Done")
    bob = hub.accounts.find(BOB)
    assert bob is not None
    assert [d.name for d in hub.links.list_devices(bob.id)] == [LAMP.name]


def test_a_device_linked_to_the_wrong_member_is_given_to_the_right_one(
    make_hub: HubFactory,
    broker: RunningBroker,
    phone_for: PhoneFactory,
    runs: Callable[[Path], RunThread],
    tmp_path: Path,
) -> None:
    """No new code, no new credentials: the device stays connected and takes the
    new member's preferences; both accounts' activity says what happened."""
    hub = owner_hub(make_hub)
    owner = hub.accounts.find(OWNER)
    bob = hub.accounts.create(BOB, BOB_PASSWORD)
    assert owner is not None
    hub.settings.set_preferences(bob.id, {"temperature_unit": "F"}, origin=Origin.WEB)
    state = tmp_path / "lamp.json"
    linking = DeviceThread(broker.port, state, name="Bob's Reading Lamp").start()
    lamp = hub.links.approve(linking.wait_code(), owner.id)  # oops: alice's
    assert linking.join() == 0
    device = runs(state)
    device.wait_for(settings_event(), "the first settings")
    credentials_before = json.loads(state.read_text())["mqtt"]

    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    phone.go(f"/devices/{lamp.device_id}")
    check_phone_page(phone, "46-device-give")
    page.get_by_label("Member").select_option(label=BOB)
    page.get_by_role("button", name="Give Bob's Reading Lamp").click()
    expect(page).to_have_url(phone.url("/household"))  # the owner lands where members' devices are
    status, text = message(page)
    assert status == "ok" and text == "Bob's Reading Lamp is now bob's. It stays connected."
    page.reload()
    assert page.locator("p.message").count() == 0  # Reload after the post: nothing again

    # Bob has it, with his preference, and the device got it without relinking.
    assert [d.device_id for d in hub.links.list_devices(bob.id)] == [lamp.device_id]
    assert hub.links.list_devices(owner.id) == []
    device.wait_for(lambda e: e["event"] == "settings" and e["desired"] == {"temperature_unit": "F"}, "bob's")
    assert json.loads(state.read_text())["mqtt"] == credentials_before  # the same credentials
    assert ActivityKind.DEVICE_GIVEN in activity_kinds(hub, OWNER)
    assert ActivityKind.DEVICE_GIVEN in activity_kinds(hub, BOB)

    # The owner sees bob's lamp on the household page, and may unlink it there.
    member = page.locator(f'[data-device-id="{lamp.device_id}"]')
    expect(member.locator(".member-device-name")).to_have_text("Bob's Reading Lamp")
    expect(page.locator(".member-remove-blocked")).to_have_text(
        "To remove bob, first give their devices to someone else or unlink them."
    )
    check_phone_page(phone, "47-household-member-devices")
    member.get_by_role("link", name="Unlink…").click()
    expect(page.locator("h1")).to_have_text("Unlink Bob's Reading Lamp?")
    page.get_by_role("button", name="Unlink Bob's Reading Lamp").click()
    expect(page).to_have_url(phone.url("/household"))
    assert hub.links.list_devices(bob.id) == []
    assert device.close() != 0  # the device heard it was unlinked


# --- passwords ----------------------------------------------------------------------------------


def test_change_the_password_and_the_other_sessions_end(
    make_hub: HubFactory, phone_for: PhoneFactory
) -> None:
    hub = owner_hub(make_hub)
    phone = phone_for(hub)
    laptop = phone_for(hub)
    sign_in(phone)
    sign_in(laptop)
    page = phone.page
    page.locator(".who-name").click()
    expect(page).to_have_url(phone.url("/account"))
    check_phone_page(phone, "48-account")

    page.locator("#current").fill("not my password")
    page.locator("#new").fill("a new long password")
    page.locator("#new2").fill("a new long password")
    page.get_by_role("button", name="Change password").click()
    assert message(page) == ("error", "Your current password is not right.")
    page.locator("#current").fill(PASSWORD)
    page.locator("#new").fill("a new long password")
    page.locator("#new2").fill("a new long password")
    page.get_by_role("button", name="Change password").click()
    expect(page).to_have_url(phone.url("/account"))
    status, text = message(page)
    assert status == "ok" and text.startswith("Your password is changed.")
    page.reload()  # post/redirect/get
    expect(page.locator("h1")).to_have_text("Your account")
    laptop.go("/devices")  # the other session ended
    expect(laptop.page).to_have_url(re.compile(r"/login\?next=/devices$"))
    submit_sign_in(laptop, OWNER, PASSWORD)
    assert message(laptop.page)[0] == "wrong_credentials"
    sign_in(laptop, OWNER, "a new long password")
    assert ActivityKind.PASSWORD_CHANGED in activity_kinds(hub, OWNER)


def test_the_owner_sets_a_members_password_and_they_choose_their_own(
    make_hub: HubFactory, phone_for: PhoneFactory
) -> None:
    hub = owner_hub(make_hub)
    hub.accounts.create(BOB, BOB_PASSWORD)
    owners_phone = phone_for(hub)
    bobs_phone = phone_for(hub)
    sign_in(bobs_phone, BOB, BOB_PASSWORD)
    sign_in(owners_phone)
    page = owners_phone.page
    owners_phone.go("/household")
    page.get_by_role("button", name="Set a new password for bob…").click()
    expect(page.locator("h1")).to_have_text("Set a new password for bob")
    check_phone_page(owners_phone, "49-reset-password")
    page.locator("#password").fill("temporary words 1")
    page.locator("#password2").fill("temporary words 1")
    page.get_by_role("button", name="Set the password").click()
    expect(page).to_have_url(owners_phone.url("/household"))
    assert message(page)[0] == "ok"

    # Bob's open session ended; with the owner's password he must choose his own first.
    bobs = bobs_phone.page
    bobs_phone.go("/devices")
    expect(bobs).to_have_url(re.compile(r"/login"))
    submit_sign_in(bobs_phone, BOB, "temporary words 1")
    expect(bobs).to_have_url(bobs_phone.url("/account/choose-password"))
    bobs_phone.go("/devices")  # nothing else opens first
    expect(bobs).to_have_url(bobs_phone.url("/account/choose-password"))
    check_phone_page(bobs_phone, "50-choose-password")
    bobs.locator("#current").fill("temporary words 1")
    bobs.locator("#new").fill("bob's own new words")
    bobs.locator("#new2").fill("bob's own new words")
    bobs.get_by_role("button", name="Save my password").click()
    expect(bobs).to_have_url(bobs_phone.url("/account"))
    bobs_phone.go("/devices")
    expect(bobs.locator("h1")).to_have_text("Your devices")
    kinds = activity_kinds(hub, BOB)
    assert ActivityKind.PASSWORD_RESET in kinds and ActivityKind.PASSWORD_CHANGED in kinds
    assert ActivityKind.PASSWORD_RESET in activity_kinds(hub, OWNER)


def test_linkhub_account_password_from_the_shell(tmp_path: Path) -> None:
    """The way back for an owner who forgot theirs: no hub running, the built-in
    account service; the new password signs in and must be replaced."""
    data = tmp_path / "data"

    def cli(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [LINKHUB, *args, "--data-dir", str(data)],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert cli("account", "add", OWNER, "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    reset = cli("account", "password", OWNER, "--password-stdin", stdin="fresh words here\n")
    assert reset.returncode == 0, reset.stderr
    assert reset.stdout.strip() == (
        f"new password set for {OWNER!r}: signed out everywhere; they choose their own at the next sign-in"
    )
    short = cli("account", "password", OWNER, "--password-stdin", stdin="short\n")
    assert short.returncode != 0 and "at least 8 characters" in short.stderr
    nobody = cli("account", "password", "nobody", "--password-stdin", stdin="fresh words here\n")
    assert nobody.returncode != 0 and "no account named 'nobody'" in nobody.stderr


# --- long pages -------------------------------------------------------------------------------


def test_activity_is_compact_paged_and_filtered(
    make_hub: HubFactory, phone_for: PhoneFactory, devices: Callable[..., BootstrapDevice]
) -> None:
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    for n in range(40):
        clock.advance(60)
        hub.activity.record(
            ActivityKind.SIGN_IN_FAILED, owner.id, address=f"192.168.1.{n + 10}", detail="wrong password"
        )
    clock.advance(60)
    lamp = hub.links.approve(
        devices().request().user_code, owner.id, origin=Origin.WEB, address="192.168.1.9"
    )
    phone = phone_for(hub, clock)
    page = phone.page
    sign_in(phone)
    page.get_by_role("link", name="Activity").click()
    events = page.locator("li.event")
    expect(events).to_have_count(25)
    expect(events.first.locator(".event-what")).to_have_text("Signed in")
    # One compact entry per event: 25 fit in a few phone screens, not dozens.
    height = page.evaluate("document.documentElement.scrollHeight")
    assert height < 25 * 130, height
    check_phone_page(phone, "51-activity-page", primaries=0)

    page.get_by_role("link", name="Older").click()
    expect(events).to_have_count(17)  # 42 events: 25, then the other 17
    expect(page.get_by_role("link", name="Older")).to_have_count(0)
    expect(events.last.locator(".event-address")).to_have_text("192.168.1.10")  # the oldest

    page.get_by_label("Show").select_option("devices")
    page.get_by_role("button", name="Show").click()
    expect(events).to_have_count(1)
    expect(events.first.locator(".event-device")).to_have_text(f"{LAMP.name} ({lamp.device_id})")
    check_phone_page(phone, "52-activity-devices", primaries=0)


def test_the_device_page_follows_its_state_without_a_reload(
    make_hub: HubFactory,
    broker: RunningBroker,
    phone_for: PhoneFactory,
    runs: Callable[[Path], RunThread],
    tmp_path: Path,
) -> None:
    """Issue 14 item 3: the state line and the settings' sync change on the open
    page as the device comes and goes; "Online" never sits next to an old time."""
    hub = owner_hub(make_hub)
    owner = hub.accounts.find(OWNER)
    assert owner is not None
    state = tmp_path / "lamp.json"
    linking = DeviceThread(broker.port, state, name="Kitchen Lamp").start()
    lamp = hub.links.approve(linking.wait_code(), owner.id)
    assert linking.join() == 0
    hub.settings.set_preferences(owner.id, {"temperature_unit": "C"}, origin=Origin.WEB)
    phone = phone_for(hub)
    page = phone.page
    sign_in(phone)
    phone.go(f"/devices/{lamp.device_id}")
    expect(page.locator(".device-status .state")).to_have_text(re.compile(r"^Offline since "))
    expect(page.locator(".sync-status")).to_have_text(
        "Waiting for the device: it is offline, and gets the changes when it connects"
    )
    device = runs(state)
    device.wait_for(settings_event(), "the settings")
    expect(page.locator(".device-status .state")).to_have_text("Online since just now")
    expect(page.locator(".sync-status")).to_have_text("Up to date")
    check_phone_page(phone, "53-device-online-live")


def test_the_journey_works_without_javascript(
    make_hub: HubFactory, browser: Browser, devices: Callable[..., BootstrapDevice]
) -> None:
    """Every page works with scripts off (issue 14: "every page still works
    without JavaScript"): the waiting list is in the page itself, picking and
    approving are links and forms, and the Done page says where the device is
    when it is loaded (Reload to see it move on)."""
    clock = FakeClock()
    hub = owner_hub(make_hub, clock=clock)
    device = devices()
    code = device.request().user_code
    clock.advance(60)
    app = hub_pages(hub, WebConfig(secret_key=secrets.token_hex(16), clock=clock))
    with serving(app) as origin:
        context = browser.new_context(viewport=PHONE, java_script_enabled=False)
        try:
            page = context.new_page()
            page.set_default_timeout(15_000)
            phone = Phone(page, origin)
            sign_in(phone)
            expect(page.locator(".waiting-name")).to_have_text([LAMP.name])
            page.get_by_role("link", name=LAMP.name).click()
            expect(page.locator(".code-display")).to_have_text(code)
            expect(page.locator(".countdown")).to_have_text("expires in 14 min")  # as the hub rendered it
            page.get_by_role("button", name=f"Approve for {OWNER}").click()
            expect(page.locator("h1")).to_have_text("Done")
            expect(page.locator(".progress-message")).to_have_text(
                "Waiting for Kitchen Lamp to connect with its own credentials…"
            )
            expect(page.locator("noscript")).to_have_count(1)
            assert isinstance(device.wait_reply(), ApprovedReply)
        finally:
            context.close()
