"""The household's new powers on their own (the `services` tier: SQLite under
tmp_path and the in-memory fakes of tests/fakes.py, no mosquitto), issue 14:
giving a device to another member (hub/services/handover.py with the settings
service's hand_over), renaming it, the owner's password reset and a person's
own change (hub/services/household.py, the built-in account service), and the
list of link requests waiting for a person (hub/services/link_decisions.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeDevicePublisher
from test_link_service import Parts

from hub.core.origin import Origin
from hub.errors import AccountError, DeviceRefused, HouseholdRefused
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.handover import Handover
from hub.services.household import Household
from hub.services.settings import SettingsService
from linkhub_protocol import SettingsDesired

PASSWORD = "correct horse battery"


class Home(Parts):
    """The link service's parts, plus settings, the household and the hand-over."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        self.activity = ActivityLog(self.engine, self.clock)
        self.publisher = FakeDevicePublisher()
        self.settings = SettingsService(self.engine, self.publisher, clock=self.clock, activity=self.activity)
        self.household = Household(self.accounts, self.activity, self.links)
        self.handover = Handover(self.accounts, self.activity, self.links, self.settings)
        self.alice = self.accounts.create("alice", PASSWORD)  # the owner
        self.bob = self.accounts.create("bob", PASSWORD)
        self.carol = self.accounts.create("carol", PASSWORD)

    def linked(self, account_id: int) -> str:
        inbound, _ = self.ask()
        return self.links.approve(self.code_for(inbound), account_id).device_id

    def kinds(self, account_id: int) -> list[ActivityKind]:
        return [entry.kind for entry in self.activity.recent(account_id)]


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Home]:
    made = Home(tmp_path)
    yield made
    made.engine.dispose()


# --- giving a device ------------------------------------------------------------------------


def test_a_device_given_moves_with_its_own_settings_and_takes_the_new_preferences(home: Home) -> None:
    device_id = home.linked(home.alice.id)
    home.settings.set_preferences(home.alice.id, {"theme": "light", "unit": "C"}, origin=Origin.WEB)
    home.settings.set_preferences(home.bob.id, {"theme": "dark"}, origin=Origin.WEB)
    home.settings.set_device_settings(device_id, {"brightness": 40}, origin=Origin.WEB)
    home.publisher.sent.clear()

    given = home.handover.give(
        device_id,
        home.bob.id,
        by_account_id=home.alice.id,
        by_owner=True,
        origin=Origin.WEB,
        address="10.0.0.2",
    )
    assert given.account_id == home.bob.id and given.device_id == device_id
    assert [d.device_id for d in home.links.list_devices(home.bob.id)] == [device_id]
    assert home.links.list_devices(home.alice.id) == []
    view = home.settings.device_view(device_id)
    assert view is not None and view.account_id == home.bob.id
    assert view.desired == {"theme": "dark", "brightness": 40}  # bob's preference, its own setting kept
    # The device is sent the difference, as for any other change.
    ((to, _leaf, message),) = home.publisher.sent
    assert to == device_id and isinstance(message, SettingsDesired)
    assert message.desired == {"theme": "dark", "unit": None} and not message.full
    for account in (home.alice.id, home.bob.id):
        assert ActivityKind.DEVICE_GIVEN in home.kinds(account)
    assert home.kinds(home.carol.id) == []
    # The same credentials: its broker identity is the one it had.
    assert set(home.issuer.identities) == {device_id}


def test_only_the_device_s_member_or_the_owner_gives_it_and_only_to_a_member(home: Home) -> None:
    bobs = home.linked(home.bob.id)
    with pytest.raises(DeviceRefused) as not_carols:
        home.handover.give(
            bobs, home.carol.id, by_account_id=home.carol.id, by_owner=False, origin=Origin.WEB
        )
    assert not_carols.value.reason == "unknown_device"  # the same words as no such device
    with pytest.raises(DeviceRefused) as same:
        home.handover.give(bobs, home.bob.id, by_account_id=home.bob.id, by_owner=False, origin=Origin.WEB)
    assert same.value.reason == "same_account"
    with pytest.raises(DeviceRefused) as nobody:
        home.handover.give(bobs, 999, by_account_id=home.bob.id, by_owner=False, origin=Origin.WEB)
    assert nobody.value.reason == "unknown_account"
    assert [d.device_id for d in home.links.list_devices(home.bob.id)] == [bobs]  # nothing moved
    # Bob himself, and the owner, may.
    home.handover.give(bobs, home.carol.id, by_account_id=home.bob.id, by_owner=False, origin=Origin.WEB)
    home.handover.give(bobs, home.bob.id, by_account_id=home.alice.id, by_owner=True, origin=Origin.WEB)
    assert [d.device_id for d in home.links.list_devices(home.bob.id)] == [bobs]
    assert ActivityKind.DEVICE_GIVEN in home.kinds(home.alice.id)  # the owner did it: on the owner's too


def test_the_owner_unlinks_a_members_device_and_a_member_cannot_unlink_anothers(home: Home) -> None:
    bobs = home.linked(home.bob.id)
    with pytest.raises(DeviceRefused):
        home.handover.unlink(bobs, by_account_id=home.carol.id, by_owner=False, origin=Origin.WEB)
    assert bobs in home.issuer.identities
    home.handover.unlink(bobs, by_account_id=home.alice.id, by_owner=True, origin=Origin.WEB)
    assert home.links.list_devices(home.bob.id) == []
    assert bobs not in home.issuer.identities
    assert ActivityKind.DEVICE_UNLINKED in home.kinds(home.bob.id)
    assert ActivityKind.DEVICE_UNLINKED in home.kinds(home.alice.id)


def test_a_device_is_renamed_under_the_same_rules_as_a_name_a_device_sends(home: Home) -> None:
    lamp = home.linked(home.bob.id)
    renamed = home.links.rename(lamp, home.bob.id, "  Reading Lamp  ")
    assert renamed.name == "Reading Lamp"
    for bad in ("", "   ", "Lamp\u202e", "x" * 65, "Lamp\x1b[2J"):
        with pytest.raises(DeviceRefused) as refused:
            home.links.rename(lamp, home.bob.id, bad)
        assert refused.value.reason == "invalid_name", bad
    with pytest.raises(DeviceRefused) as not_yours:
        home.links.rename(lamp, home.carol.id, "Mine now")
    assert not_yours.value.reason == "unknown_device"
    assert [d.name for d in home.links.list_devices(home.bob.id)] == ["Reading Lamp"]
    (entry,) = [e for e in home.activity.recent(home.bob.id) if e.kind is ActivityKind.DEVICE_RENAMED]
    assert entry.detail == "from 'Kitchen Lamp' to 'Reading Lamp'"


# --- passwords --------------------------------------------------------------------------------


def test_the_owner_resets_a_members_password_which_must_then_be_replaced(home: Home) -> None:
    home.clock.advance(10)
    reset = home.household.reset_password(home.bob.id, "temporary words", origin=Origin.WEB, by=home.alice)
    assert reset.must_change_password
    assert home.accounts.authenticate("bob", PASSWORD) is None
    bob = home.accounts.authenticate("bob", "temporary words")
    assert bob is not None and bob.must_change_password
    assert bob.sessions_ended_at_s == home.clock()  # signed out everywhere
    assert ActivityKind.PASSWORD_RESET in home.kinds(home.bob.id)
    assert ActivityKind.PASSWORD_RESET in home.kinds(home.alice.id)

    # Bob's own change needs the current one, and clears the mark.
    assert home.accounts.change_password(home.bob.id, "wrong words here", "bob's own words") is False
    assert home.accounts.change_password(home.bob.id, "temporary words", "bob's own words") is True
    changed = home.accounts.authenticate("bob", "bob's own words")
    assert changed is not None and not changed.must_change_password
    with pytest.raises(AccountError, match="at least 8 characters"):
        home.accounts.change_password(home.bob.id, "bob's own words", "short")


def test_the_owner_cannot_reset_their_own_on_the_page_but_the_operator_can(home: Home) -> None:
    with pytest.raises(HouseholdRefused) as own:
        home.household.reset_password(home.alice.id, "new words here", origin=Origin.WEB, by=home.alice)
    assert own.value.reason == "own_account"
    with pytest.raises(HouseholdRefused) as member:
        home.household.reset_password(home.carol.id, "new words here", origin=Origin.WEB, by=home.bob)
    assert member.value.reason == "not_owner"
    home.household.reset_password(home.alice.id, "new words here", origin=Origin.CLI)
    assert home.accounts.authenticate("alice", "new words here") is not None


# --- devices waiting to be linked -------------------------------------------------------------


def test_the_waiting_list_holds_pending_codes_only_newest_first(home: Home) -> None:
    first, _ = home.ask()
    first_code = home.code_for(first)
    home.clock.advance(5)
    second, _ = home.ask()
    second_code = home.code_for(second)
    assert [req.user_code for req in home.links.waiting()] == [second_code, first_code]
    home.links.deny(second_code, home.bob.id)
    assert [req.user_code for req in home.links.waiting()] == [first_code]
    home.clock.advance(900)
    assert home.links.waiting() == []
