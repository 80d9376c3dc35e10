"""The pages' sessions, recorded on the hub: signing out ends a session there,
not only in the browser that signed out.

Flask's session is a signed cookie: on its own, a copy of it (taken from the
LAN while the pages are plain HTTP, or from a shared computer) opens the pages
until it expires, whatever its owner does. So each signed-in session also holds
a random token, and the hub keeps a row for it (`web_session`, only the token's
SHA-256: a copied database opens nothing). Every request needs the row; signing
out deletes it; "sign out everywhere" deletes the account's rows here and asks
the account service to end the account's sessions on every hub (web/auth.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import col, delete

from hub.store.engine import session_scope
from hub.store.models import WebSession


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionRecords:
    """The signed-in sessions of the pages, in the hub's own database."""

    def __init__(self, engine: Engine, clock: Callable[[], float]) -> None:
        self._engine = engine
        self._clock = clock

    def start(self, account_id: int, lifetime_s: float) -> str:
        """A new session's token (for the cookie); expired rows go at the same time."""
        token = secrets.token_urlsafe(32)
        now = self._clock()
        with session_scope(self._engine) as session:
            session.exec(delete(WebSession).where(col(WebSession.expires_at_s) <= now))
            session.add(
                WebSession(
                    token_hash=_hash(token),
                    account_id=account_id,
                    created_at_s=now,
                    expires_at_s=now + lifetime_s,
                )
            )
        return token

    def is_live(self, token: object, account_id: int) -> bool:
        """Whether this session was started for this account, is not over and was not ended."""
        if not isinstance(token, str) or not token:
            return False
        with session_scope(self._engine) as session:
            row = session.get(WebSession, _hash(token))
            return row is not None and row.account_id == account_id and row.expires_at_s > self._clock()

    def end(self, token: object) -> None:
        if isinstance(token, str) and token:
            with session_scope(self._engine) as session:
                session.exec(delete(WebSession).where(col(WebSession.token_hash) == _hash(token)))

    def end_all(self, account_id: int) -> int:
        """Every session of the account on this hub; how many there were."""
        with session_scope(self._engine) as session:
            ended = session.exec(delete(WebSession).where(col(WebSession.account_id) == account_id))
            return int(ended.rowcount)
