"""Apps linked over HTTP: OAuth 2.0's device authorization grant (RFC 8628)
applied to the database, beside the MQTT link flow and through the same /link
page. The HTTP shell (web/oauth/) speaks the protocol with Authlib and calls
these methods; the rules are hub/core/oauth.py's.

An app asks (`start`), a person approves or denies its code on /link
(`lookup_code`, `approve`, `deny`), the app polls until it may exchange the
device_code for tokens, once (`poll`, `exchange`). Each approval is a family
of tokens (a linked app): refresh tokens rotate within it, and revoking it (the
devices page's Unlink, the app's own revocation, a refresh token used twice)
ends every token in it at once, since every use of a token is checked here.

Only hashes of device codes and tokens are stored: a copied database or backup
links nothing.
"""

from __future__ import annotations

import hashlib
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from hub.core import codes
from hub.core.oauth import (
    ACCESS_TOKEN_LIFETIME_S,
    ALL_SCOPES,
    REFRESH_TOKEN_LIFETIME_S,
    app_name_problem,
    client_id_problem,
    parse_scopes,
    poll_pace,
)
from hub.errors import AppRefused
from hub.services.activity import ActivityKind, ActivityLog
from hub.services.link_parts import DECISION_MESSAGES, CodeStatus
from hub.store.engine import session_scope
from hub.store.models import LinkRequestRecord, OAuthApp, OAuthFamily, OAuthGrant, OAuthToken

# Apps waiting for a person at once, all clients together: each costs a row, and
# a guest on the LAN must not fill the database or the /link list.
MAX_PENDING_GRANTS = 50
# A linked app's "last used" is written at most this often: not a write per API call.
LAST_USED_EVERY_S = 60.0

Clock = Callable[[], float]


class GrantState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXCHANGED = "exchanged"


class PollOutcome(StrEnum):
    """What a token request with a device_code gets (RFC 8628 §3.5)."""

    PENDING = "authorization_pending"
    SLOW_DOWN = "slow_down"
    DENIED = "access_denied"
    EXPIRED = "expired_token"
    APPROVED = "approved"  # tokens may be issued now, once
    INVALID = "invalid_grant"  # unknown, another client's, or already exchanged


class RevokedWhy(StrEnum):
    UNLINKED = "unlinked"  # by a person, on the devices page or the CLI
    APP_REVOKED = "app_revoked"  # the app itself, RFC 7009
    REFRESH_REUSED = "refresh_reused"  # a rotated refresh token used again
    ACCOUNT_REMOVED = "account_removed"


@dataclass(frozen=True, slots=True)
class AppView:
    """A registered app."""

    client_id: str
    name: str
    scopes: tuple[str, ...]
    registered_at_s: float


@dataclass(frozen=True, slots=True)
class AppClient:
    """Who is asking at the OAuth endpoints: a registered app, or (when the hub
    lets them ask) an unregistered public client, `name` None."""

    client_id: str
    name: str | None
    allowed_scopes: tuple[str, ...]

    @property
    def registered(self) -> bool:
        return self.name is not None


@dataclass(frozen=True, slots=True)
class AppRequestView:
    """An app's request as the /link page shows it."""

    user_code: str  # XXXX-XXXX, as the app shows it
    client_id: str
    app_name: str | None  # None: unregistered, shown as unverified
    scopes: tuple[str, ...]
    address: str | None
    requested_at_s: float
    expires_at_s: float
    state: GrantState
    account_id: int | None


@dataclass(frozen=True, slots=True)
class AppCodeLookup:
    status: CodeStatus
    request: AppRequestView | None = None


@dataclass(frozen=True, slots=True)
class StartedGrant:
    """The device authorization response's parts (RFC 8628 §3.2)."""

    device_code: str
    user_code: str  # canonical
    expires_in_s: int
    interval_s: int


@dataclass(frozen=True, slots=True)
class PollAnswer:
    outcome: PollOutcome
    account_id: int | None = None
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenOwner:
    """What a token stands for: a linked app acting for an account."""

    family_id: str
    account_id: int
    client_id: str
    scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in_s: int = ACCESS_TOKEN_LIFETIME_S


@dataclass(frozen=True, slots=True)
class LinkedAppView:
    family_id: str
    client_id: str
    app_name: str | None
    scopes: tuple[str, ...]
    linked_at_s: float
    last_used_s: float | None


# What a person is told about an app's code that cannot be decided, where it
# differs from a device's (the /link page and `linkhub link approve` alike).
APP_DECISION_MESSAGES = DECISION_MESSAGES | {
    CodeStatus.UNKNOWN: "No device or app is waiting with that code. Check the code it shows.",
    CodeStatus.EXPIRED: "That code has expired. Start linking in the app again for a new code.",
    CodeStatus.DENIED: "That code was denied. Start linking in the app again if that was a mistake.",
    CodeStatus.USED: "That code was already used to link an app.",
    CodeStatus.USED_BY_OTHER_ACCOUNT: (
        "This code was already used to link an app to another account. If that was not you, "
        "check the code the app shows and ask the hub's owner who linked it."
    ),
    CodeStatus.USED_BY_YOU: "You already linked an app with this code: it is on your Devices page.",
}


def token_hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def _scopes(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def _owner(family: OAuthFamily) -> TokenOwner:
    return TokenOwner(family.family_id, family.account_id, family.client_id, _scopes(family.scopes))


def _linked_view(family: OAuthFamily) -> LinkedAppView:
    return LinkedAppView(
        family.family_id,
        family.client_id,
        family.app_name,
        _scopes(family.scopes),
        family.linked_at_s,
        family.last_used_s,
    )


def _app_label(client_id: str, name: str | None) -> str:
    return name if name is not None else f"{client_id} (unverified)"


class AppService:
    def __init__(
        self,
        engine: Engine,
        activity: ActivityLog,
        clock: Clock,
        *,
        code_lifetime_s: float,
        poll_interval_s: int,
        allow_unregistered: bool,
        rng: random.Random | None = None,
    ) -> None:
        self._engine = engine
        self._activity = activity
        self._clock = clock
        self.code_lifetime_s = code_lifetime_s
        self.poll_interval_s = poll_interval_s
        self.allow_unregistered = allow_unregistered
        self._rng = rng or random.SystemRandom()

    # --- the owner's registry -------------------------------------------------------
    def register(self, client_id: str, name: str, scopes: str | tuple[str, ...]) -> AppView:
        """Register (or change) an app: its name is then shown as verified."""
        problem = client_id_problem(client_id) or app_name_problem(name)
        if problem:
            raise AppRefused("invalid_app", problem)
        allowed = parse_scopes(" ".join(scopes) if isinstance(scopes, tuple) else scopes)
        if not allowed:
            raise AppRefused("invalid_scope", "give the app at least one scope")
        now = self._clock()
        with session_scope(self._engine) as session:
            row = session.get(OAuthApp, client_id) or OAuthApp(
                client_id=client_id, name=name, scopes="", registered_at_s=now
            )
            row.name, row.scopes = name.strip(), " ".join(allowed)
            session.add(row)
        return AppView(client_id, name.strip(), allowed, row.registered_at_s)

    def remove(self, client_id: str) -> None:
        """Forget a registered app; apps linked with it stay linked until unlinked."""
        with session_scope(self._engine) as session:
            row = session.get(OAuthApp, client_id)
            if row is None:
                raise AppRefused("unknown_app", f"no app is registered with client_id {client_id!r}")
            session.delete(row)

    def apps(self) -> list[AppView]:
        with session_scope(self._engine) as session:
            rows = session.exec(select(OAuthApp).order_by(col(OAuthApp.name), col(OAuthApp.client_id))).all()
            return [AppView(r.client_id, r.name, _scopes(r.scopes), r.registered_at_s) for r in rows]

    def client(self, client_id: str) -> AppClient | None:
        """The client asking with `client_id`, or None when the hub does not serve it."""
        if client_id_problem(client_id):
            return None
        with session_scope(self._engine) as session:
            row = session.get(OAuthApp, client_id)
        if row is not None:
            return AppClient(client_id, row.name, _scopes(row.scopes))
        return AppClient(client_id, None, ALL_SCOPES) if self.allow_unregistered else None

    # --- the app asks ----------------------------------------------------------------
    def start(self, client: AppClient, scopes: tuple[str, ...], address: str | None) -> StartedGrant:
        """A new device authorization request: a device_code for the app, a user
        code for the person, stored as pending."""
        now = self._clock()
        device_code = secrets.token_urlsafe(32)
        with session_scope(self._engine) as session:
            pending = session.exec(
                select(func.count())
                .select_from(OAuthGrant)
                .where(OAuthGrant.state == GrantState.PENDING.value, col(OAuthGrant.expires_at_s) > now)
            ).one()
            if pending >= MAX_PENDING_GRANTS:
                raise AppRefused(
                    "temporarily_unavailable", "too many apps are waiting for a person; try later"
                )
            user_code = self._new_user_code(session, now)
            session.add(
                OAuthGrant(
                    device_code_hash=token_hash(device_code),
                    user_code=user_code,
                    client_id=client.client_id,
                    app_name=client.name,
                    scopes=" ".join(scopes),
                    address=(address or "")[:64] or None,
                    state=GrantState.PENDING.value,
                    created_at_s=now,
                    expires_at_s=now + self.code_lifetime_s,
                    interval_s=self.poll_interval_s,
                )
            )
        return StartedGrant(device_code, user_code, int(self.code_lifetime_s), self.poll_interval_s)

    def _new_user_code(self, session: Session, now: float) -> str:
        """A code no app or device is waiting with (one code, one thing to approve)."""
        while True:
            code = codes.generate(self._rng)
            app = session.exec(select(OAuthGrant.user_code).where(OAuthGrant.user_code == code)).first()
            device = session.exec(
                select(LinkRequestRecord.user_code).where(
                    LinkRequestRecord.user_code == code, col(LinkRequestRecord.expires_at_s) > now
                )
            ).first()
            if app is None and device is None:
                return code

    def poll(self, device_code: str, client_id: str) -> PollAnswer:
        """A token request with a device_code: its outcome, the poll's time kept
        for the next one's pace (RFC 8628 §3.5)."""
        now = self._clock()
        with session_scope(self._engine) as session:
            grant = session.get(OAuthGrant, token_hash(device_code), with_for_update=True)
            if grant is None or grant.client_id != client_id or grant.state == GrantState.EXCHANGED:
                return PollAnswer(PollOutcome.INVALID)
            if now >= grant.expires_at_s:
                return PollAnswer(PollOutcome.EXPIRED)
            if grant.state == GrantState.DENIED:
                return PollAnswer(PollOutcome.DENIED)
            if grant.state == GrantState.APPROVED:
                return PollAnswer(PollOutcome.APPROVED, grant.account_id, _scopes(grant.scopes))
            pace = poll_pace(grant.last_poll_s, grant.interval_s, now)
            grant.last_poll_s, grant.interval_s = now, pace.interval_s
            session.add(grant)
            return PollAnswer(PollOutcome.SLOW_DOWN if pace.too_soon else PollOutcome.PENDING)

    def exchange(self, device_code: str, client_id: str, tokens: IssuedTokens) -> TokenOwner:
        """The one exchange of an approved device_code: a new linked app holding
        `tokens`. A second exchange (two polls racing) is refused."""
        now = self._clock()
        family_id = secrets.token_hex(16)
        with session_scope(self._engine) as session:
            taken = session.execute(
                update(OAuthGrant)
                .where(
                    col(OAuthGrant.device_code_hash) == token_hash(device_code),
                    col(OAuthGrant.client_id) == client_id,
                    col(OAuthGrant.state) == GrantState.APPROVED.value,
                )
                .values(state=GrantState.EXCHANGED.value, family_id=family_id)
            )
            grant = session.get(OAuthGrant, token_hash(device_code))
            if taken.rowcount != 1 or grant is None or grant.account_id is None:  # type: ignore[attr-defined]
                raise AppRefused("invalid_grant", "this device_code was already exchanged")
            session.add(
                OAuthFamily(
                    family_id=family_id,
                    account_id=grant.account_id,
                    client_id=client_id,
                    app_name=grant.app_name,
                    scopes=grant.scopes,
                    linked_at_s=now,
                    last_used_s=now,
                )
            )
            self._add_tokens(session, family_id, tokens, now)
            return TokenOwner(family_id, grant.account_id, client_id, _scopes(grant.scopes))

    def _add_tokens(self, session: Session, family_id: str, tokens: IssuedTokens, now: float) -> None:
        session.add(
            OAuthToken(
                token_hash=token_hash(tokens.access_token),
                kind="access",
                family_id=family_id,
                issued_at_s=now,
                expires_at_s=now + tokens.expires_in_s,
            )
        )
        session.add(
            OAuthToken(
                token_hash=token_hash(tokens.refresh_token),
                kind="refresh",
                family_id=family_id,
                issued_at_s=now,
                expires_at_s=now + REFRESH_TOKEN_LIFETIME_S,
            )
        )

    # --- tokens ------------------------------------------------------------------
    def use_refresh_token(self, refresh_token: str, client_id: str) -> TokenOwner | None:
        """Spend a refresh token (good once). A second use of one means two parties
        hold it: the whole family is revoked (RFC 9700 §4.14.2) and None returned."""
        now = self._clock()
        with session_scope(self._engine) as session:
            row = session.get(OAuthToken, token_hash(refresh_token), with_for_update=True)
            if row is None or row.kind != "refresh":
                return None
            family = session.get(OAuthFamily, row.family_id)
            if family is None or family.client_id != client_id or family.revoked_at_s is not None:
                return None
            if row.used_at_s is not None:
                self._revoke(session, family, RevokedWhy.REFRESH_REUSED, now)
                return None
            if now >= row.expires_at_s:
                return None
            row.used_at_s = now
            family.last_used_s = now
            session.add_all([row, family])
            return _owner(family)

    def add_tokens(self, owner: TokenOwner, tokens: IssuedTokens) -> None:
        """The rotated tokens of a refresh, in the same family."""
        with session_scope(self._engine) as session:
            self._add_tokens(session, owner.family_id, tokens, self._clock())

    def authenticate(self, access_token: str) -> TokenOwner | None:
        """The app and account behind a bearer token, or None: unknown, expired,
        or its app unlinked (checked on every use, so an unlink is at once)."""
        now = self._clock()
        with session_scope(self._engine) as session:
            row = session.get(OAuthToken, token_hash(access_token))
            if row is None or row.kind != "access" or now >= row.expires_at_s:
                return None
            family = session.get(OAuthFamily, row.family_id)
            if family is None or family.revoked_at_s is not None:
                return None
            if family.last_used_s is None or now - family.last_used_s >= LAST_USED_EVERY_S:
                family.last_used_s = now
                session.add(family)
            return _owner(family)

    def find_token(self, value: str) -> TokenOwner | None:
        """Any token's owner, whatever its state (for revocation, RFC 7009 §2.1)."""
        with session_scope(self._engine) as session:
            row = session.get(OAuthToken, token_hash(value))
            family = session.get(OAuthFamily, row.family_id) if row is not None else None
            if family is None:
                return None
            return _owner(family)

    def revoke_family(self, family_id: str, why: RevokedWhy, *, address: str | None = None) -> None:
        with session_scope(self._engine) as session:
            family = session.get(OAuthFamily, family_id)
            if family is not None and family.revoked_at_s is None:
                self._revoke(session, family, why, self._clock(), address=address)

    def _revoke(
        self,
        session: Session,
        family: OAuthFamily,
        why: RevokedWhy,
        now: float,
        *,
        address: str | None = None,
    ) -> None:
        family.revoked_at_s, family.revoked_why = now, why.value
        session.add(family)
        label = _app_label(family.client_id, family.app_name)
        detail = {
            RevokedWhy.UNLINKED: f"{label}: unlinked",
            RevokedWhy.APP_REVOKED: f"{label}: the app gave up its access",
            RevokedWhy.REFRESH_REUSED: f"{label}: a refresh token was used twice; all its tokens revoked",
            RevokedWhy.ACCOUNT_REMOVED: f"{label}: the account was removed",
        }[why]
        self._activity.record(ActivityKind.APP_UNLINKED, family.account_id, address=address, detail=detail)

    # --- the person's side -----------------------------------------------------------
    def lookup_code(self, typed: str, account_id: int | None = None) -> AppCodeLookup:
        """What a typed code stands for among apps' requests, as for devices'."""
        code = codes.normalise(typed)
        if code is None:
            return AppCodeLookup(CodeStatus.MALFORMED)
        with session_scope(self._engine) as session:
            grant = self._latest(session, code)
            if grant is None:
                return AppCodeLookup(CodeStatus.UNKNOWN)
            view = self._view(grant)
        return AppCodeLookup(self._status(view, account_id), view)

    def _status(self, view: AppRequestView, account_id: int | None) -> CodeStatus:
        if view.state == GrantState.DENIED:
            return CodeStatus.DENIED
        if view.state in (GrantState.APPROVED, GrantState.EXCHANGED):
            if account_id is None:
                return CodeStatus.USED
            return (
                CodeStatus.USED_BY_YOU if view.account_id == account_id else CodeStatus.USED_BY_OTHER_ACCOUNT
            )
        if self._clock() >= view.expires_at_s:
            return CodeStatus.EXPIRED
        return CodeStatus.PENDING

    @staticmethod
    def _latest(session: Session, code: str) -> OAuthGrant | None:
        return session.exec(
            select(OAuthGrant)
            .where(OAuthGrant.user_code == code)
            .order_by(col(OAuthGrant.created_at_s).desc())
        ).first()

    @staticmethod
    def _view(grant: OAuthGrant) -> AppRequestView:
        return AppRequestView(
            user_code=codes.display(grant.user_code),
            client_id=grant.client_id,
            app_name=grant.app_name,
            scopes=_scopes(grant.scopes),
            address=grant.address,
            requested_at_s=grant.created_at_s,
            expires_at_s=grant.expires_at_s,
            state=GrantState(grant.state),
            account_id=grant.account_id,
        )

    def waiting(self, limit: int = 50) -> list[AppRequestView]:
        """Apps waiting for a person now, newest first (the /link list)."""
        now = self._clock()
        with session_scope(self._engine) as session:
            rows = session.exec(
                select(OAuthGrant)
                .where(OAuthGrant.state == GrantState.PENDING.value, col(OAuthGrant.expires_at_s) > now)
                .order_by(col(OAuthGrant.created_at_s).desc())
                .limit(limit)
            ).all()
            return [self._view(row) for row in rows]

    def approve(self, typed: str, account_id: int, *, address: str | None = None) -> AppRequestView:
        return self._decide(typed, account_id, GrantState.APPROVED, address)

    def deny(self, typed: str, account_id: int | None, *, address: str | None = None) -> AppRequestView:
        """Deny an app's code; `account_id` None: the hub's operator (`linkhub link deny`)."""
        return self._decide(typed, account_id, GrantState.DENIED, address)

    def _decide(
        self, typed: str, account_id: int | None, to: GrantState, address: str | None
    ) -> AppRequestView:
        code = codes.normalise(typed)
        now = self._clock()
        with session_scope(self._engine) as session:
            grant = self._latest(session, code) if code else None
            if grant is not None:
                session.refresh(grant, with_for_update=True)
            if grant is None or grant.state != GrantState.PENDING or now >= grant.expires_at_s:
                found = self._status(self._view(grant), account_id) if grant else CodeStatus.UNKNOWN
                raise AppRefused(found.value, APP_DECISION_MESSAGES[found])
            grant.state, grant.account_id, grant.decided_at_s = to.value, account_id, now
            session.add(grant)
            view = self._view(grant)
        label = _app_label(view.client_id, view.app_name)
        kind = ActivityKind.APP_LINKED if to is GrantState.APPROVED else ActivityKind.APP_DENIED
        detail = f"{label}: {' '.join(view.scopes) or 'no scopes'}"
        self._activity.record(kind, account_id, address=address, detail=detail)
        return view

    # --- linked apps -----------------------------------------------------------------
    def linked_apps(self, account_id: int) -> list[LinkedAppView]:
        with session_scope(self._engine) as session:
            return [_linked_view(family) for family in self._linked(session, account_id)]

    @staticmethod
    def _linked(session: Session, account_id: int) -> list[OAuthFamily]:
        return list(
            session.exec(
                select(OAuthFamily)
                .where(OAuthFamily.account_id == account_id, col(OAuthFamily.revoked_at_s).is_(None))
                .order_by(col(OAuthFamily.linked_at_s).desc())
            ).all()
        )

    def unlink_all(self, account_id: int) -> None:
        """Every app of a removed account: its tokens end with the account."""
        now = self._clock()
        with session_scope(self._engine) as session:
            for family in self._linked(session, account_id):
                self._revoke(session, family, RevokedWhy.ACCOUNT_REMOVED, now)

    def unlink(self, family_id: str, account_id: int, *, address: str | None = None) -> LinkedAppView:
        """A person unlinks an app of theirs: its tokens stop working at once."""
        with session_scope(self._engine) as session:
            family = session.get(OAuthFamily, family_id)
            if family is None or family.account_id != account_id or family.revoked_at_s is not None:
                raise AppRefused("unknown_app", "no such linked app on your account")
            view = _linked_view(family)
            self._revoke(session, family, RevokedWhy.UNLINKED, self._clock(), address=address)
        return view
