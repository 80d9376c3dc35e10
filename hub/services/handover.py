"""Who may manage a linked device, and giving one to another member.

A device is managed by the account that has it and by the household's owner:
the owner can give a member's device to someone else or unlink it (a device
left with someone who moved out, or linked to the wrong member by mistake),
but never sees or changes its settings, which stay the member's own
(docs/security.md, "Households").

Giving moves the device as it is: no new code, no new broker credentials (they
name the device, not the account), the device stays connected, and its history
stays with it. Its desired settings become the new account's preferences plus
its own settings (hub/services/settings.py, `hand_over`). Both accounts, and
the owner's when the owner did it, get an activity event.
"""

from __future__ import annotations

import dataclasses

from hub.core.accounts import Identities
from hub.core.origin import Origin, origin_words
from hub.errors import DeviceRefused
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.links import DeviceView, LinkService
from hub.services.settings import SettingsService

NOT_YOURS = "You have no device with that id."


def may_manage(device: DeviceView, account_id: int, *, is_owner: bool) -> bool:
    """The account that has the device, or the household's owner."""
    return is_owner or device.account_id == account_id


class Handover:
    def __init__(
        self, accounts: Identities, activity: ActivityLog, links: LinkService, settings: SettingsService
    ) -> None:
        self._accounts = accounts
        self._activity = activity
        self._links = links
        self._settings = settings

    def managed_device(self, device_id: str, account_id: int, *, is_owner: bool) -> DeviceView | None:
        """The linked device if this person may manage it; None otherwise, the same as no device."""
        device = self._links.any_linked_device(device_id)
        if device is None or not may_manage(device, account_id, is_owner=is_owner):
            return None
        return device

    def _managed_or_refused(self, device_id: str, account_id: int, *, is_owner: bool) -> DeviceView:
        device = self.managed_device(device_id, account_id, is_owner=is_owner)
        if device is None:
            raise DeviceRefused("unknown_device", NOT_YOURS)
        return device

    def give(
        self,
        device_id: str,
        to_account_id: int,
        *,
        by_account_id: int,
        by_owner: bool,
        origin: Origin,
        address: str | None = None,
    ) -> DeviceView:
        """Move the device to `to_account_id`; DeviceRefused with a reason to show."""
        device = self._managed_or_refused(device_id, by_account_id, is_owner=by_owner)
        receiver = self._accounts.get(to_account_id)
        if receiver is None:
            raise DeviceRefused("unknown_account", "There is no such member in the household.")
        if receiver.id == device.account_id:
            raise DeviceRefused("same_account", f"{device.name} is already {receiver.name}'s.")
        giver = self._accounts.get(device.account_id)
        giver_name = giver.name if giver else f"account {device.account_id}"
        self._settings.hand_over(device_id, receiver.id)
        how = origin_words(origin)
        detail = f"{device.name} given by {giver_name} to {receiver.name} {how}"
        seen_by = {device.account_id, receiver.id, by_account_id}
        for account_id in sorted(seen_by):
            self._activity.record(
                ActivityKind.DEVICE_GIVEN, account_id, address=address, device_id=device_id, detail=detail
            )
        # hand_over refused a device unlinked meanwhile; otherwise only its account moved.
        return dataclasses.replace(device, account_id=receiver.id)

    def unlink(
        self,
        device_id: str,
        *,
        by_account_id: int,
        by_owner: bool,
        origin: Origin,
        address: str | None = None,
    ) -> DeviceView:
        """Unlink a device the person may manage (the owner: a member's too)."""
        device = self._managed_or_refused(device_id, by_account_id, is_owner=by_owner)
        unlinked = self._links.unlink(device_id, device.account_id, origin=origin, address=address)
        if by_account_id != device.account_id:
            self._activity.record(
                ActivityKind.DEVICE_UNLINKED,
                by_account_id,
                address=address,
                device_id=device_id,
                detail=f"{device.name}, a member's device, unlinked by the owner {origin_words(origin)}",
            )
        return unlinked
