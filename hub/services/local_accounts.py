"""The account service, in the hub on its own database (the default).

It holds the household's accounts, each account's preferences and each linked
device's settings, and a log of every settings change it accepted. Run on its
own (`linkhub account-service`), web/account_api.py puts it behind HTTP and
hub/services/remote_accounts.py is its client; both sides implement
hub.core.accounts.AccountDirectory.

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
from sqlmodel import Session, col, delete, func, or_, select, update
from sqlmodel.sql.expression import SelectOfScalar

from hub.core import two_factor
from hub.core.accounts import (
    AccountSummary,
    AccountView,
    ChangeKind,
    LoggedChange,
    SecondFactor,
    SettingsChange,
    TotpEnrolment,
    TwoFactorStatus,
    VersionedDocument,
)
from hub.core.settings_merge import merge_patch
from hub.errors import AccountError
from hub.store.engine import session_scope
from hub.store.models import Account, AccountPreferences, ChangeLogEntry, DeviceSettingsRecord, RecoveryCode

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MIN_PASSWORD_LENGTH = 8
_NO_SUCH_ACCOUNT = "There is no such account."
_ALREADY_ON = "Two-factor sign-in is already on for this account."
_hasher = PasswordHasher()
# Two-factor sign-in switched off: no secret, and no record of the last step used
# (a new secret starts afresh; a removed account keeps nothing that signs in).
_TWO_FACTOR_OFF: dict[str, None] = {"totp_secret": None, "totp_enabled_at_s": None, "totp_last_step": None}


# Verifying against this when the name is unknown costs the same time as a real
# check, so timing does not tell whether an account exists.
@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("linkhub-no-such-account")  # made on first use: hashing takes ~0.3 s


def _named(name: str) -> SelectOfScalar[Account]:
    """The account in use with this name (a removed one may share it)."""
    return select(Account).where(Account.name == name.strip(), col(Account.removed_at_s).is_(None))


def _required(session: Session, account_id: int) -> Account:
    """The account in use, or AccountError: for the calls that name an account to change."""
    account = _in_use(session, account_id)
    if account is None:
        raise AccountError(_NO_SUCH_ACCOUNT)
    return account


def _in_use(session: Session, account_id: int) -> Account | None:
    """The account, unless there is none or it was removed from the household."""
    account = session.get(Account, account_id)
    return account if account is not None and account.removed_at_s is None else None


def _view(account: Account) -> AccountView:
    assert account.id is not None
    two_factor = account.totp_secret is not None
    return AccountView(
        account.id,
        account.name,
        account.is_owner,
        two_factor=two_factor,
        two_factor_since_s=account.totp_enabled_at_s if two_factor else None,
        sessions_ended_at_s=account.sessions_ended_at_s,
        must_change_password=account.password_must_change,
    )


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.")
    return password


class AccountService:
    @property
    def engine(self) -> Engine:
        """The account service's own database."""
        return self._engine

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
        _checked_password(password)
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
            account = session.exec(_named(name)).first()
            stored = account.password_hash if account else _dummy_hash()
            try:
                _hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
            return _view(account) if account else None

    def get(self, account_id: int) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.get(Account, account_id)
            return _view(account) if account and account.removed_at_s is None else None

    def find(self, name: str) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.exec(_named(name)).first()
            return _view(account) if account else None

    # --- the household ------------------------------------------------------------
    def list_accounts(self) -> list[AccountSummary]:
        with session_scope(self._engine) as session:
            accounts = session.exec(
                select(Account).where(col(Account.removed_at_s).is_(None)).order_by(col(Account.id))
            ).all()
            return [
                AccountSummary(account.id or 0, account.name, account.is_owner, account.created_at_s)
                for account in accounts
            ]

    def remove(self, account_id: int) -> AccountView | None:
        with session_scope(self._engine) as session:
            account = session.get(Account, account_id)
            if account is None or account.removed_at_s is not None:
                return None
            if account.is_owner:
                raise AccountError("The owner's account cannot be removed.")
            removed = _view(account)  # as it was, like get() would have answered
            # The row stays (its id is never reused); everything that signs in goes
            # with it: the password, the TOTP secret and its state, the recovery codes.
            account.removed_at_s = self._clock()
            account.password_hash = ""
            for field, value in _TWO_FACTOR_OFF.items():
                setattr(account, field, value)
            session.add(account)
            self._replace_recovery_codes(session, account_id, [])
            return removed

    # --- two-factor sign-in (hub/core/two_factor.py has the rules) ----------------------
    def begin_two_factor(self, account_id: int) -> TotpEnrolment:
        with session_scope(self._engine) as session:
            account = _required(session, account_id)
            if account.totp_secret is not None:
                raise AccountError(_ALREADY_ON)
            return two_factor.new_enrolment(account.name)

    def confirm_two_factor(self, account_id: int, secret: str, code: str) -> list[str]:
        if not two_factor.is_secret(secret):
            raise AccountError("This two-factor setup is not one LinkHub started. Start again.")
        step = two_factor.matching_step(secret, code, self._clock(), after_step=None)
        if step is None:
            raise AccountError(
                "That code is not right. Type the 6 digits your authenticator app shows for LinkHub now."
            )
        codes = two_factor.new_recovery_codes()
        hashes = [two_factor.hash_recovery_code(code) for code in codes]  # slow: outside the transaction
        with session_scope(self._engine) as session:
            _required(session, account_id)
            # Conditional, so two confirmations racing each other switch it on once.
            switched = session.exec(
                update(Account)
                .where(col(Account.id) == account_id, col(Account.totp_secret).is_(None))
                .values(totp_secret=secret, totp_enabled_at_s=self._clock(), totp_last_step=step)
            )
            if switched.rowcount != 1:
                raise AccountError(_ALREADY_ON)
            self._replace_recovery_codes(session, account_id, hashes)
        return codes

    def check_second_factor(self, account_id: int, code: str) -> SecondFactor | None:
        if two_factor.looks_like_totp(code):
            return SecondFactor.TOTP if self._use_totp(account_id, code) else None
        normalised = two_factor.normalise_recovery_code(code)
        if normalised is None:
            return None
        with session_scope(self._engine) as session:
            account = _in_use(session, account_id)
            if account is None or account.totp_secret is None:
                return None
            unused = session.exec(
                select(RecoveryCode.id, RecoveryCode.code_hash).where(
                    RecoveryCode.account_id == account_id, col(RecoveryCode.used_at_s).is_(None)
                )
            ).all()
        for code_id, code_hash in unused:
            if two_factor.recovery_code_matches(code_hash, normalised):
                with session_scope(self._engine) as session:
                    # Conditional: the same code typed twice at once works once.
                    used = session.exec(
                        update(RecoveryCode)
                        .where(col(RecoveryCode.id) == code_id, col(RecoveryCode.used_at_s).is_(None))
                        .values(used_at_s=self._clock())
                    )
                    return SecondFactor.RECOVERY_CODE if used.rowcount == 1 else None
        return None

    def two_factor_status(self, account_id: int) -> TwoFactorStatus:
        with session_scope(self._engine) as session:
            account = _required(session, account_id)
            if account.totp_secret is None:
                return TwoFactorStatus(enabled=False)
            left = session.exec(
                select(func.count())
                .select_from(RecoveryCode)
                .where(RecoveryCode.account_id == account_id, col(RecoveryCode.used_at_s).is_(None))
            ).one()
            return TwoFactorStatus(True, account.totp_enabled_at_s, int(left))

    def disable_two_factor(self, account_id: int, password: str, code: str) -> bool:
        with session_scope(self._engine) as session:
            account = _in_use(session, account_id)
            if account is None:
                return False
            stored, enabled = account.password_hash, account.totp_secret is not None
        try:
            _hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
        if not enabled:
            raise AccountError("Two-factor sign-in is not on for this account.")
        # The password first: a wrong password must not use up a recovery code.
        if self.check_second_factor(account_id, code) is None:
            return False
        with session_scope(self._engine) as session:
            session.exec(update(Account).where(col(Account.id) == account_id).values(**_TWO_FACTOR_OFF))
            self._replace_recovery_codes(session, account_id, [])
        return True

    def reset_two_factor(self, account_id: int) -> bool:
        """Two-factor sign-in off without the password or a code: for a person who
        lost both the phone and the recovery codes. Only the household's owner (for
        a member) or the hub's operator may ask; hub.services.household decides who.

        True if it was on; False if it was off already. AccountError if there is
        no such account in use.
        """
        with session_scope(self._engine) as session:
            _required(session, account_id)
            # Conditional, so two resets racing each other report one change.
            switched = session.exec(
                update(Account)
                .where(col(Account.id) == account_id, col(Account.totp_secret).is_not(None))
                .values(**_TWO_FACTOR_OFF)
            )
            if switched.rowcount != 1:
                return False
            self._replace_recovery_codes(session, account_id, [])
        return True

    def change_password(self, account_id: int, current: str, new: str) -> bool:
        _checked_password(new)
        with session_scope(self._engine) as session:
            account = _required(session, account_id)
            try:
                _hasher.verify(account.password_hash, current)
            except (VerificationError, InvalidHashError):
                return False
            account.password_hash = _hasher.hash(new)
            account.password_must_change = False
            session.add(account)
        return True

    def reset_password(self, account_id: int, new: str) -> AccountView:
        _checked_password(new)
        with session_scope(self._engine) as session:
            account = _required(session, account_id)
            account.password_hash = _hasher.hash(new)
            account.password_must_change = True
            session.add(account)
            session.flush()
            return _view(account)

    def end_sessions(self, account_id: int) -> float:
        now = self._clock()
        with session_scope(self._engine) as session:
            account = _required(session, account_id)
            # Never moved back: two hubs asking at once both end what was signed in before.
            account.sessions_ended_at_s = max(now, account.sessions_ended_at_s or 0.0)
            session.add(account)
            return account.sessions_ended_at_s

    def renew_recovery_codes(self, account_id: int, code: str) -> list[str] | None:
        if self.check_second_factor(account_id, code) is None:
            return None
        codes = two_factor.new_recovery_codes()
        hashes = [two_factor.hash_recovery_code(each) for each in codes]
        with session_scope(self._engine) as session:
            account = _in_use(session, account_id)
            if account is None or account.totp_secret is None:
                return None  # switched off in between
            self._replace_recovery_codes(session, account_id, hashes)
        return codes

    def code_already_used(self, account_id: int, code: str) -> bool:
        if not two_factor.looks_like_totp(code):
            return False
        with session_scope(self._engine) as session:
            account = _in_use(session, account_id)
            if account is None or account.totp_secret is None or account.totp_last_step is None:
                return False
            step = two_factor.matching_step(account.totp_secret, code, self._clock(), after_step=None)
            return step is not None and step <= account.totp_last_step

    def _use_totp(self, account_id: int, code: str) -> bool:
        with session_scope(self._engine) as session:
            account = _in_use(session, account_id)
            if account is None or account.totp_secret is None:
                return False
            step = two_factor.matching_step(
                account.totp_secret, code, self._clock(), after_step=account.totp_last_step
            )
            if step is None:
                return False
            # Conditional on the step still being newer, so a code raced in twice
            # (or with an older one from the window) is accepted once (RFC 6238 §5.2).
            used = session.exec(
                update(Account)
                .where(
                    col(Account.id) == account_id,
                    col(Account.totp_secret) == account.totp_secret,
                    or_(col(Account.totp_last_step).is_(None), col(Account.totp_last_step) < step),
                )
                .values(totp_last_step=step)
            )
            return used.rowcount == 1

    @staticmethod
    def _replace_recovery_codes(session: Session, account_id: int, hashes: list[str]) -> None:
        session.exec(delete(RecoveryCode).where(col(RecoveryCode.account_id) == account_id))
        for code_hash in hashes:
            session.add(RecoveryCode(account_id=account_id, code_hash=code_hash))

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
