"""The account service, in the hub on its own database (the default).

It holds the household's accounts, each account's preferences and each linked
device's settings, and a log of every settings change it accepted. Run on its
own (`linkhub account-service`), web/account_api.py puts it behind HTTP and
hub/account_client.py is its client; both sides implement
hub.account_directory.AccountDirectory.

Passwords are hashed with argon2 (argon2-cffi's defaults follow RFC 9106's
recommendations), so a copied database does not give the passwords away.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from hub.account_directory import (
    AccountView,
    ChangeKind,
    LoggedChange,
    SettingsChange,
    VersionedDocument,
)
from hub.errors import AccountError
from hub.models import Account, AccountPreferences, ChangeLogEntry, DeviceSettingsRecord
from hub.settings_merge import merge_patch
from hub.store import session_scope

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()


# Verifying against this when the name is unknown costs the same time as a real
# check, so timing does not tell whether an account exists.
@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("linkhub-no-such-account")  # made on first use: hashing takes ~0.3 s


def _view(account: Account) -> AccountView:
    assert account.id is not None
    return AccountView(account.id, account.name, account.is_owner)


class AccountService:
    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._clock = clock

    def has_accounts(self) -> bool:
        with session_scope(self._engine) as session:
            return session.exec(select(Account.id).limit(1)).first() is not None

    def create(self, name: str, password: str) -> AccountView:
        """The first account becomes the household's owner."""
        name = name.strip()
        if not _NAME.fullmatch(name):
            raise AccountError(
                "An account name is 1-64 letters, digits, spaces, dots, dashes or underscores."
            )
        if len(password) < MIN_PASSWORD_LENGTH:
            raise AccountError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
        try:
            with session_scope(self._engine) as session:
                first = session.exec(select(Account.id).limit(1)).first() is None
                account = Account(
                    name=name,
                    password_hash=_hasher.hash(password),
                    is_owner=first,
                    created_at_s=self._clock(),
                )
                session.add(account)
                session.flush()
                return _view(account)
        except IntegrityError:
            raise AccountError(f"An account named {name!r} already exists.") from None

    def authenticate(self, name: str, password: str) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.exec(select(Account).where(Account.name == name.strip())).first()
            stored = account.password_hash if account else _dummy_hash()
            try:
                _hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
            return _view(account) if account else None

    def get(self, account_id: int) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.get(Account, account_id)
            return _view(account) if account else None

    def find(self, name: str) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.exec(select(Account).where(Account.name == name.strip())).first()
            return _view(account) if account else None

    # --- settings ---------------------------------------------------------------
    def apply_change(self, change: SettingsChange) -> bool:
        """Apply once per change_id; a replay (same id, or an older version) changes nothing."""
        try:
            with session_scope(self._engine) as session:
                if session.exec(
                    select(ChangeLogEntry.seq).where(ChangeLogEntry.change_id == change.change_id)
                ).first():
                    return False
                subject: AccountPreferences | DeviceSettingsRecord | None
                if change.kind is ChangeKind.PREFERENCES:
                    subject = session.get(AccountPreferences, change.account_id) or AccountPreferences(
                        account_id=change.account_id
                    )
                else:
                    assert change.device_id is not None
                    subject = session.get(DeviceSettingsRecord, change.device_id) or DeviceSettingsRecord(
                        device_id=change.device_id, account_id=change.account_id
                    )
                if change.version > subject.version:
                    subject.document_json = json.dumps(
                        merge_patch(json.loads(subject.document_json), change.patch)
                    )
                    subject.version = change.version
                    session.add(subject)
                session.add(
                    ChangeLogEntry(
                        change_id=change.change_id,
                        kind=str(change.kind),
                        account_id=change.account_id,
                        device_id=change.device_id,
                        patch_json=json.dumps(change.patch),
                        version=change.version,
                        origin=change.origin,
                        made_at_s=change.made_at_s,
                        received_at_s=self._clock(),
                    )
                )
                return True
        except IntegrityError:
            return False  # the same change delivered twice at once: the other one won

    def preferences(self, account_id: int) -> VersionedDocument:
        with session_scope(self._engine) as session:
            record = session.get(AccountPreferences, account_id)
            if record is None:
                return VersionedDocument()
            return VersionedDocument(json.loads(record.document_json), record.version)

    def device_settings(self, device_id: str) -> VersionedDocument:
        with session_scope(self._engine) as session:
            record = session.get(DeviceSettingsRecord, device_id)
            if record is None:
                return VersionedDocument()
            return VersionedDocument(json.loads(record.document_json), record.version)

    def changes(self, after_seq: int = 0, limit: int = 1000) -> list[LoggedChange]:
        with session_scope(self._engine) as session:
            entries = session.exec(
                select(ChangeLogEntry)
                .where(col(ChangeLogEntry.seq) > after_seq)
                .order_by(col(ChangeLogEntry.seq))
                .limit(limit)
            ).all()
            return [
                LoggedChange(
                    seq=entry.seq or 0,
                    change=SettingsChange.from_row(entry),
                    received_at_s=entry.received_at_s,
                )
                for entry in entries
            ]
