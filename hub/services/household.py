"""The household: its owner adds and removes the accounts of the people who live there.

Managing accounts is the owner's extra power, and with it giving a member's
device to someone else or unlinking it (hub/services/handover.py). Otherwise
the owner is an account like any other: every account sees and changes the
settings of only the devices linked to it (web/devices.py), so a member's
lamp is the member's, not the owner's.

Accounts live in the account service (an `AccountDirectory`, perhaps on another
machine); devices and the activity log live in the hub's database. The rules
that need both are here, on the hub side:

- A member who still has linked devices is not removed: those devices would
  belong to an account nobody can sign in to, out of reach of every page. The
  refusal says how to give them away or unlink them.
- A removed account keeps its id and its history (preferences, settings change
  log, activity); the account service never gives that id to anyone else.
- A member who lost both the phone and the recovery codes gets two-factor
  sign-in turned off by the owner (or by the hub's operator, for the owner too);
  without that the only way back would be removing the account.
- Each change leaves an activity event on the account it concerns and on the
  owner's, so the owner sees every account that comes or goes, whoever did it
  (the household page or the hub's command line).

The two stores are not one transaction: an account made a moment before the
hub's database fails has no "account created" event. And a device approved for
a member in the instant between the device check and the removal stays linked
to the removed account; the hub's operator can unlink it (`linkhub devices
unlink`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from hub.core.accounts import AccountDirectory, AccountSummary, AccountView
from hub.core.origin import Origin
from hub.errors import HouseholdRefused
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.links import DeviceView


class Refusal(StrEnum):
    """Why a household change was refused (HouseholdRefused.reason)."""

    NOT_OWNER = "not_owner"  # only the owner manages the household's accounts
    UNKNOWN_ACCOUNT = "unknown_account"
    OWNER = "owner"  # the owner's own account stays
    HAS_DEVICES = "has_devices"  # the member's devices must be unlinked first
    OWN_ACCOUNT = "own_account"  # the owner turns their own two-factor off with password and code
    TWO_FACTOR_OFF = "two_factor_off"  # two-factor sign-in is not on: nothing to turn off


class LinkedDevices(Protocol):
    """What the household needs from the link service: who has which devices."""

    def list_devices(self, account_id: int | None = None) -> list[DeviceView]: ...


@dataclass(frozen=True, slots=True)
class Member:
    """One account on the owner's list, with how many devices are linked to it.

    The owner manages accounts, and may give away or unlink a member's device,
    but never sees its settings.
    """

    account: AccountSummary
    devices: int
    two_factor: bool = False  # so the owner can turn it off for a member who lost their phone
    # The member's devices, which the owner may give to someone else or unlink
    # (hub/services/handover.py); their settings stay the member's.
    linked: tuple[DeviceView, ...] = ()


NOT_OWNER_MESSAGE = "Only the household's owner manages its accounts."


class LinkedApps(Protocol):
    """What the household needs of the apps service (hub/services/apps.py)."""

    def unlink_all(self, account_id: int) -> None: ...


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _record_on_both(
    activity: ActivityLog,
    kind: ActivityKind,
    *,
    member_id: int,
    owner_id: int | None,
    address: str | None,
    member_detail: str,
    owner_detail: str,
) -> None:
    """An account event goes on that account's log and on the owner's, so the
    owner sees every account that comes, goes or loses its second factor."""
    activity.record(kind, member_id, address=address, detail=member_detail)
    if owner_id is not None and owner_id != member_id:
        activity.record(kind, owner_id, address=address, detail=owner_detail)


def record_created(
    activity: ActivityLog,
    created: AccountView,
    *,
    owner_id: int | None,
    origin: Origin,
    by: AccountView | None = None,
    address: str | None = None,
) -> None:
    """The "account created" events: on the new account, and on the owner's for a member.

    Also used by `linkhub account add` when no hub runs (it writes to the
    database directly), so both paths leave the same trail.
    """
    how = "on the first-run setup page" if origin is Origin.SETUP else _how(origin, by, "add")
    if created.is_owner:
        detail = f"the household's owner account, made {how}"
    else:
        detail = f"added to the household {how}"
    _record_on_both(
        activity,
        ActivityKind.ACCOUNT_CREATED,
        member_id=created.id,
        owner_id=owner_id,
        address=address,
        member_detail=detail,
        owner_detail=f"member {created.name!r} added {how}",
    )


class Household:
    def __init__(
        self,
        accounts: AccountDirectory,
        activity: ActivityLog,
        devices: LinkedDevices,
        apps: LinkedApps | None = None,
    ) -> None:
        self._accounts = accounts
        self._activity = activity
        self._devices = devices
        self._apps = apps

    def members(self) -> list[Member]:
        """Every account in use, the owner first, each with its number of linked devices."""
        by_account: dict[int, list[DeviceView]] = {}
        for device in self._devices.list_devices():
            by_account.setdefault(device.account_id, []).append(device)
        members = []
        for account in self._accounts.list_accounts():
            # One look-up per account (a household is a handful): the list itself
            # does not say whether two-factor sign-in is on.
            view = self._accounts.get(account.id)
            linked = tuple(by_account.get(account.id, ()))
            members.append(
                Member(account, len(linked), two_factor=bool(view and view.two_factor), linked=linked)
            )
        return members

    def create_account(
        self,
        name: str,
        password: str,
        *,
        origin: Origin,
        by: AccountView | None = None,
        address: str | None = None,
    ) -> AccountView:
        """A new account (the first one is the owner). On the household page `by` is
        the person asking, who must be the owner; at setup and from the command
        line there is nobody to check (the setup page runs only while there is no
        account; the command line is the hub's operator). AccountError if the
        name or password is refused."""
        _check(origin, by)
        created = self._accounts.create(name, password)
        record_created(
            self._activity,
            created,
            owner_id=self._owner_id(by),
            origin=origin,
            by=by,
            address=address,
        )
        return created

    def remove_member(
        self,
        account_id: int,
        *,
        origin: Origin,
        by: AccountView | None = None,
        address: str | None = None,
    ) -> AccountView:
        """Take a member's account out of use: it cannot sign in any more (a session
        it has open ends on its next request) and its history stays.
        HouseholdRefused says why not."""
        _check(origin, by)
        account = self._known(account_id)
        if account.is_owner:
            raise HouseholdRefused(Refusal.OWNER, "The owner's account cannot be removed.")
        devices = self._devices.list_devices(account_id)
        if devices:
            raise HouseholdRefused(
                Refusal.HAS_DEVICES,
                f"{account.name} still has {_plural(len(devices), 'linked device')}. "
                "Give each to another member or unlink it first: on the household page, "
                "or with the command: linkhub devices unlink DEVICE_ID.",
            )
        removed = self._accounts.remove(account_id)
        if removed is None:  # removed by someone else a moment ago
            raise HouseholdRefused(Refusal.UNKNOWN_ACCOUNT, "There is no such account.")
        if self._apps is not None:  # its apps' tokens end with it
            self._apps.unlink_all(account_id)
        how = _how(origin, by, "remove")
        _record_on_both(
            self._activity,
            ActivityKind.ACCOUNT_REMOVED,
            member_id=removed.id,
            owner_id=self._owner_id(by),
            address=address,
            member_detail=f"removed from the household {how}",
            owner_detail=f"member {removed.name!r} removed {how}",
        )
        return removed

    def reset_two_factor(
        self,
        account_id: int,
        *,
        origin: Origin,
        by: AccountView | None = None,
        address: str | None = None,
    ) -> AccountView:
        """Turn a member's two-factor sign-in off without a code, for someone who lost
        both the phone and the recovery codes: their password alone signs them in
        again, and they can turn it on anew with their new phone.

        On the household page the owner may do this for a member, not for their own
        account: a signed-in session alone must not weaken the owner's sign-in (the
        owner turns it off on the account page, with password and code). The hub's
        operator (`linkhub account two-factor-off`) may do it for any account, the
        owner's included: that is the way back for an owner who lost both.
        Recorded on the account and on the owner's. HouseholdRefused says why not.
        """
        _check(origin, by)
        account = self._known(account_id)
        if by is not None and by.id == account.id:
            raise HouseholdRefused(
                Refusal.OWN_ACCOUNT,
                "Turn your own two-factor sign-in off on your account page > Two-factor sign-in, "
                "with your password and a code.",
            )
        if not account.two_factor or not self._accounts.reset_two_factor(account_id):
            raise HouseholdRefused(
                Refusal.TWO_FACTOR_OFF,
                f"{account.name} does not use two-factor sign-in: nothing to turn off.",
            )
        how = _how(origin, by, "two-factor-off")
        _record_on_both(
            self._activity,
            ActivityKind.TWO_FACTOR_DISABLED,
            member_id=account.id,
            owner_id=self._owner_id(by),
            address=address,
            member_detail=f"turned off without a code {how}; the password alone signs in now",
            owner_detail=f"for {account.name!r}, turned off without a code {how}",
        )
        return account

    def reset_password(
        self,
        account_id: int,
        new_password: str,
        *,
        origin: Origin,
        by: AccountView | None = None,
        address: str | None = None,
    ) -> AccountView:
        """Give an account a new password that its person must replace at the next
        sign-in, and end its sessions everywhere: for a member who forgot theirs.

        On the household page the owner does it for a member (their own password
        they change under Account, with the current one). The hub's operator
        (`linkhub account password`) may do it for any account: the way back for
        an owner who forgot theirs. HouseholdRefused or AccountError say why not.
        """
        _check(origin, by)
        account = self._known(account_id)
        if by is not None and by.id == account.id:
            raise HouseholdRefused(
                Refusal.OWN_ACCOUNT, "Change your own password on your account page, with the current one."
            )
        reset = self._accounts.reset_password(account_id, new_password)
        self._accounts.end_sessions(account_id)
        how = _how(origin, by, "password")
        _record_on_both(
            self._activity,
            ActivityKind.PASSWORD_RESET,
            member_id=account.id,
            owner_id=self._owner_id(by),
            address=address,
            member_detail=f"a new password was set {how}; signed out everywhere until it is replaced",
            owner_detail=f"for {account.name!r}, a new password set {how}",
        )
        return reset

    def _owner_id(self, by: AccountView | None) -> int | None:
        """The owner's id: the person asking on the household page is the owner;
        from the command line it is looked up."""
        if by is not None:
            return by.id
        return next((account.id for account in self._accounts.list_accounts() if account.is_owner), None)

    def _known(self, account_id: int) -> AccountView:
        account = self._accounts.get(account_id)
        if account is None:
            raise HouseholdRefused(Refusal.UNKNOWN_ACCOUNT, "There is no such account.")
        return account


def _check(origin: Origin, by: AccountView | None) -> None:
    """On the household page the person asking must be the owner; elsewhere there is
    nobody to ask (see Household.create_account)."""
    if (origin is Origin.WEB) != (by is not None):
        raise ValueError("the household page names who asks, and only the household page does")
    if by is not None and not by.is_owner:
        raise HouseholdRefused(Refusal.NOT_OWNER, NOT_OWNER_MESSAGE)


def _how(origin: Origin, by: AccountView | None, command: str) -> str:
    if origin is Origin.WEB and by is not None:
        return f"by {by.name} on the household page"
    return f"with `linkhub account {command}` on the hub"
