"""What the hub needs from the account service, whichever one it uses.

Two implementations: `hub.accounts.AccountService` (in the hub, on its own
database: the default) and `hub.account_client.RemoteAccountService` (the same
service run on its own, over HTTP). The web's sign-in and the settings outbox
talk to this interface only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    name: str
    is_owner: bool


class ChangeKind(StrEnum):
    PREFERENCES = "preferences"  # an account's preferences
    DEVICE_SETTINGS = "device_settings"  # one device's own settings


class ChangeRow(Protocol):
    change_id: str
    kind: str
    account_id: int
    device_id: str | None
    patch_json: str
    version: int
    origin: str
    made_at_s: float


@dataclass(frozen=True, slots=True)
class SettingsChange:
    """One accepted change, as the hub's outbox delivers it.

    `change_id` makes delivery idempotent: the account service applies a given
    change_id once, however often it is delivered. `version` is the version of
    the subject (the account's preferences, or the device's settings) after it.
    """

    change_id: str
    kind: ChangeKind
    account_id: int
    device_id: str | None
    patch: dict[str, Any]
    version: int
    origin: str  # "web", "cli" or "device"
    made_at_s: float

    def to_json(self) -> dict[str, Any]:
        return {
            "change_id": self.change_id,
            "kind": str(self.kind),
            "account_id": self.account_id,
            "device_id": self.device_id,
            "patch": self.patch,
            "version": self.version,
            "origin": self.origin,
            "made_at_s": self.made_at_s,
        }

    @classmethod
    def from_row(cls, row: ChangeRow) -> SettingsChange:
        """From a stored row: the hub's outbox and the service's change log keep the same fields."""
        return cls(
            change_id=row.change_id,
            kind=ChangeKind(row.kind),
            account_id=row.account_id,
            device_id=row.device_id,
            patch=json.loads(row.patch_json),
            version=row.version,
            origin=row.origin,
            made_at_s=row.made_at_s,
        )

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SettingsChange:
        """Raises KeyError/ValueError/TypeError on a malformed body."""
        kind = ChangeKind(body["kind"])
        device_id = body.get("device_id")
        if kind is ChangeKind.DEVICE_SETTINGS and not isinstance(device_id, str):
            raise ValueError("a device_settings change needs a device_id")
        if not isinstance(body["patch"], dict) or type(body["version"]) is not int:
            raise TypeError("patch must be an object and version an integer")
        return cls(
            change_id=str(body["change_id"]),
            kind=kind,
            account_id=int(body["account_id"]),
            device_id=device_id,
            patch=body["patch"],
            version=body["version"],
            origin=str(body.get("origin", "")),
            made_at_s=float(body.get("made_at_s", 0.0)),
        )


@dataclass(frozen=True, slots=True)
class VersionedDocument:
    document: dict[str, Any] = field(default_factory=dict)
    version: int = 0


@dataclass(frozen=True, slots=True)
class LoggedChange:
    """A change as the account service received it, in arrival order."""

    seq: int
    change: SettingsChange
    received_at_s: float


class AccountDirectory(Protocol):
    def has_accounts(self) -> bool: ...
    def create(self, name: str, password: str) -> AccountView: ...
    def authenticate(self, name: str, password: str) -> AccountView | None: ...
    def get(self, account_id: int) -> AccountView | None: ...
    def find(self, name: str) -> AccountView | None: ...
    def apply_change(self, change: SettingsChange) -> bool:
        """Store a change once; False if this change_id was already applied."""
        ...

    def preferences(self, account_id: int) -> VersionedDocument: ...
    def device_settings(self, device_id: str) -> VersionedDocument: ...
    def changes(self, after_seq: int = 0, limit: int = 1000) -> list[LoggedChange]: ...
