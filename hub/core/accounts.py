"""What the hub needs from the account service, whichever one it uses.

Two implementations: `hub.services.local_accounts.AccountService` (in the hub, on its own
database: the default) and `hub.services.remote_accounts.RemoteAccountService` (the same
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
    # Whether sign-in needs a second factor. Part of the view (not a separate
    # call) so a sign-in decides on the same answer that checked the password.
    two_factor: bool = False
    # When it was switched on: sessions signed in before that (with the password
    # alone) end then (web/auth.py).
    two_factor_since_s: float | None = None
    # When "sign out everywhere" was last asked for: sessions signed in before
    # that end then, on every hub that uses this account service (web/auth.py).
    sessions_ended_at_s: float | None = None
    # The owner set this password: the person chooses their own at the next
    # sign-in before anything else (web/auth.py).
    must_change_password: bool = False


@dataclass(frozen=True, slots=True)
class AccountSummary:
    """One account of the household, as the owner's list shows it."""

    id: int
    name: str
    is_owner: bool
    created_at_s: float


class SecondFactor(StrEnum):
    """Which second factor a person gave, when it was right."""

    TOTP = "totp"
    RECOVERY_CODE = "recovery_code"


@dataclass(frozen=True, slots=True)
class TotpEnrolment:
    """A new TOTP secret, not switched on yet: the person confirms it with a first code."""

    secret: str  # base32, for typing into an authenticator app
    uri: str  # otpauth://totp/LinkHub:alice?secret=...&issuer=LinkHub, for the QR code


@dataclass(frozen=True, slots=True)
class TwoFactorStatus:
    enabled: bool
    enabled_at_s: float | None = None
    recovery_codes_left: int = 0


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


class Identities(Protocol):
    """Who the accounts are: made, signed in with a password, found, listed,
    removed, and signed out everywhere."""

    def has_accounts(self) -> bool: ...
    def create(self, name: str, password: str) -> AccountView: ...
    def authenticate(self, name: str, password: str) -> AccountView | None: ...
    def get(self, account_id: int) -> AccountView | None: ...
    def find(self, name: str) -> AccountView | None: ...

    # --- the household (the owner's page, `linkhub account list/remove`) ------------
    def list_accounts(self) -> list[AccountSummary]:
        """The accounts in use, oldest first: the owner first."""
        ...

    def remove(self, account_id: int) -> AccountView | None:
        """Take a member's account out of use; None if there is no such account (in use).

        Its sign-in stops at once, its history (preferences, settings, change log)
        stays under its id, and that id is never given to another account. The
        owner's account cannot be removed (AccountError). Whether the member still
        has devices is the hub's to check first (hub.services.household): devices live in
        the hub's database, not here.
        """
        ...

    def change_password(self, account_id: int, current: str, new: str) -> bool:
        """The person's own change: False (nothing changed) if `current` is wrong;
        AccountError if `new` is refused. Clears must_change_password. Ending the
        other sessions is the caller's (`end_sessions`), so every hub does it alike."""
        ...

    def reset_password(self, account_id: int, new: str) -> AccountView:
        """The owner (or the hub's operator) sets a password the person must
        replace at the next sign-in; AccountError for no such account or a
        refused password. hub.services.household checks who may ask."""
        ...

    def end_sessions(self, account_id: int) -> float:
        """ "Sign out everywhere": every web session of the account signed in until
        now ends, on every hub (each compares its sessions' sign-in time with the
        answer's `sessions_ended_at_s`). Returns that time; AccountError if there
        is no such account in use."""
        ...


class TwoFactor(Protocol):
    """The second factor of an account's sign-in."""

    # --- two-factor sign-in (TOTP, RFC 6238, and recovery codes) -------------------
    # The secret and the recovery code hashes stay inside the account service:
    # the web hands a new secret back once, to confirm it, and never reads it again.
    def begin_two_factor(self, account_id: int) -> TotpEnrolment:
        """A fresh secret to show; nothing is stored. AccountError if two-factor is on already."""
        ...

    def confirm_two_factor(self, account_id: int, secret: str, code: str) -> list[str]:
        """Switch two-factor on if `code` is right for `secret`; the new recovery codes, shown once.

        AccountError (a message for the person) for a wrong code, or if it is on already.
        """
        ...

    def check_second_factor(self, account_id: int, code: str) -> SecondFactor | None:
        """A live TOTP code (each accepted once) or an unused recovery code (then used up)."""
        ...

    def code_already_used(self, account_id: int, code: str) -> bool:
        """Whether a refused code is the app's right code for a time step already
        accepted (RFC 6238 §5.2: each is good once): a second tap, or a code
        someone watched being typed. For the activity log's words only; it
        accepts nothing."""
        ...

    def two_factor_status(self, account_id: int) -> TwoFactorStatus: ...
    def disable_two_factor(self, account_id: int, password: str, code: str) -> bool:
        """Needs the password and a second factor; False (nothing changed) if either is wrong."""
        ...

    def renew_recovery_codes(self, account_id: int, code: str) -> list[str] | None:
        """Ten new recovery codes replacing the old ones, for a right second factor; else None."""
        ...

    def reset_two_factor(self, account_id: int) -> bool:
        """Two-factor off without password or code, for someone who lost phone and
        recovery codes (hub.services.household checks who may ask). True if it was on, False
        if it was off already; AccountError if there is no such account."""
        ...


class SettingsLedger(Protocol):
    """The account's settings and its devices', as an append-only log of changes
    (the hub's outbox writes to it; pages and devices read it back)."""

    def apply_change(self, change: SettingsChange) -> bool:
        """Store a change once; False if this change_id was already applied."""
        ...

    def preferences(self, account_id: int) -> VersionedDocument: ...
    def device_settings(self, device_id: str) -> VersionedDocument: ...
    def changes(self, after_seq: int = 0, limit: int = 1000) -> list[LoggedChange]: ...


class AccountDirectory(Identities, TwoFactor, SettingsLedger, Protocol):
    """The account service, all three jobs: what LocalAccountService
    (hub/services/local_accounts.py) and RemoteAccountService (over HTTP,
    hub/services/remote_accounts.py) both are. A part that needs one job takes
    that one (the outbox takes a SettingsLedger)."""
