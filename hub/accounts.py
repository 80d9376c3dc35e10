"""Accounts of the household: creating them and checking a sign-in.

Passwords are hashed with argon2 (argon2-cffi's defaults follow RFC 9106's
recommendations), so a copied database does not give the passwords away.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from hub.errors import AccountError
from hub.models import Account
from hub.store import session_scope

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")
MIN_PASSWORD_LENGTH = 8
_hasher = PasswordHasher()
# Verifying against this when the name is unknown costs the same time as a real
# check, so timing does not tell whether an account exists.
_DUMMY_HASH = _hasher.hash("linkhub-no-such-account")


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    name: str
    is_owner: bool


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
            stored = account.password_hash if account else _DUMMY_HASH
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
