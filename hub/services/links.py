"""Link requests over their whole life: the state machine in `linking` applied to
the database, with credentials issued through an injected issuer.

Decide, then send: request handling returns the reply for the MQTT shell to
publish. Decisions made by a person (web page, CLI) push their reply through the
injected sender at once, so the device does not wait for its next poll; if that
push is lost, the poll delivers the same answer.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Table, bindparam, func, insert, or_, update
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, col, select

import linkhub_protocol as protocol
from hub.config.model import DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S
from hub.core import codes, sealing
from hub.core.link_limits import LinkRequestLimits, LogEvery
from hub.core.linking import InvalidTransition, LinkEvent, LinkOutput, LinkState, is_expired, step
from hub.core.origin import Origin, origin_words
from hub.core.rate_limits import LimitsPolicy
from hub.errors import LinkDecisionError, LinkHubError, UnlinkRefused
from hub.services import metrics
from hub.services.activity import ActivityKind, ActivityLog
from hub.store.engine import session_scope
from hub.store.models import BrokerIdentity, Device, LinkRequestRecord
from linkhub_protocol import (
    ERROR_DESCRIPTIONS,
    ApprovedReply,
    ErrorCode,
    ErrorReply,
    LinkCredentials,
    LinkReply,
    LinkRequest,
    MqttCredentials,
    PendingReply,
)

log = logging.getLogger(__name__)
_REQUESTS: Table = LinkRequestRecord.__table__  # type: ignore[attr-defined]

# The request path's statements, built once (building them per batch was a tenth
# of the request thread's time). Codes are matched on `user_code` alone and the
# rest checked in Python: asked for the state too, SQLite walked the index of
# every pending row instead (docs/performance.md).
_TAKEN = sql_select(_REQUESTS.c.user_code, _REQUESTS.c.state, _REQUESTS.c.expires_at_s).where(
    _REQUESTS.c.user_code.in_(bindparam("user_codes", expanding=True))
)
_KNOWN_OR_TAKEN = sql_select(
    _REQUESTS.c.request_id, _REQUESTS.c.user_code, _REQUESTS.c.state, _REQUESTS.c.expires_at_s
).where(
    or_(
        _REQUESTS.c.request_id.in_(bindparam("request_ids", expanding=True)),
        _REQUESTS.c.user_code.in_(bindparam("user_codes", expanding=True)),
    )
)
_INSERT_REQUESTS = insert(_REQUESTS)

Clock = Callable[[], float]

# An approval records its device's broker identity, asks the broker for it, then
# commits its device row: seconds, or ~20 s when the broker is slow to answer
# (hub/broker/dynsec.py: three tries of 5 s). The reconciler leaves a recorded identity
# this young alone, so that it never removes one whose approval is still under way.
APPROVAL_GRACE_S = 120.0
# How long the devices page tells of a device whose credentials expired unused.
EXPIRED_SHOWN_FOR_S = 7 * 86400.0


class CredentialIssuer(Protocol):
    def issue_device(self, device_id: str, password: str) -> None: ...
    def revoke_device(self, device_id: str) -> None: ...
    def device_clients(self) -> set[str]:
        """The device identities the broker holds now (their usernames)."""
        ...


class RevokedReason(StrEnum):
    """Why a broker identity was removed (broker_identity.revoked_reason)."""

    UNLINKED = "unlinked"  # a person unlinked the device
    APPROVAL_FAILED = "approval_failed"  # its approval did not commit
    ORPHAN = "orphan"  # found on the broker with no linked device (a hub died mid-approval)
    NEVER_CONNECTED = "never_connected"  # approved, but the device never came (issue 19 item 17)


class ReplySender(Protocol):
    def send_reply(self, reply_to: str, reply: LinkReply, correlation: bytes | None) -> None: ...


class RetainedTopics(Protocol):
    def clear_device_topics(self, device_id: str) -> list[str]:
        """Empty every retained message under the device's topics; the topics cleared.
        Raises LinkHubError if the broker did not confirm."""
        ...


@dataclass(frozen=True, slots=True)
class LinkPolicy:
    code_lifetime_s: int
    poll_interval_s: int
    link_page_url: str  # e.g. http://192.168.1.10:8080/link
    device_broker_host: str  # where linked devices connect
    device_broker_port: int
    # The broker's TLS port and the CA (PEM) its certificate is signed by; both
    # or neither. Sent with the credentials so the device connects with TLS.
    device_broker_tls_port: int | None = None
    device_broker_ca_cert: str | None = field(default=None, repr=False)
    # A device approved but never connected loses its credentials after this long.
    unconfirmed_lifetime_s: int = DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S


class CodeStatus(StrEnum):
    """What the /link page can say about a typed code; each has its own message."""

    MALFORMED = "malformed"
    UNKNOWN = "unknown"
    PENDING = "pending"
    EXPIRED = "expired"
    DENIED = "denied"
    USED = "used"
    # Used, and by an account other than the one asking: a code read off someone
    # else's screen, or a device that is not where the person thinks it is.
    USED_BY_OTHER_ACCOUNT = "used_by_other_account"


@dataclass(frozen=True, slots=True)
class LinkRequestView:
    user_code: str  # XXXX-XXXX
    device_name: str
    device_model: str
    device_address: str | None
    requested_at_s: float
    expires_at_s: float
    state: LinkState


@dataclass(frozen=True, slots=True)
class CodeLookup:
    status: CodeStatus
    request: LinkRequestView | None = None


@dataclass(frozen=True, slots=True)
class DeviceView:
    device_id: str
    account_id: int
    name: str
    model: str
    address: str | None
    linked_at_s: float
    confirmed: bool
    online: bool
    last_seen_at_s: float | None
    # While the hub has no broker connection nobody knows who is online: since
    # when (wall clock), and `online` is then False whatever was last heard.
    status_unknown_since_s: float | None = None


@dataclass(frozen=True, slots=True)
class ExpiredDeviceView:
    """A device approved but never connected, whose credentials expired."""

    device_id: str
    name: str
    model: str
    linked_at_s: float
    expired_at_s: float


@dataclass(frozen=True, slots=True)
class OutboundReply:
    reply_to: str
    reply: LinkReply
    correlation: bytes | None


@dataclass(frozen=True, slots=True)
class InboundRequest:
    """A parsed link request as it arrived: `client_id` is the one in its topic."""

    request: LinkRequest
    correlation: bytes | None
    client_id: str


@dataclass(slots=True)
class _PendingCount:
    """The codes waiting, as read at `read_at_s` and counted on as new ones are taken."""

    waiting: int
    first_expiry_s: float | None
    read_at_s: float


_STATE_TO_CODE_STATUS = {
    LinkState.PENDING: CodeStatus.PENDING,
    LinkState.EXPIRED: CodeStatus.EXPIRED,
    LinkState.DENIED: CodeStatus.DENIED,
    LinkState.APPROVED: CodeStatus.USED,
    LinkState.LINKED: CodeStatus.USED,
}

DECISION_MESSAGES = {
    CodeStatus.MALFORMED: "That is not a code: codes are 8 letters like BCDF-GHJK (no vowels).",
    CodeStatus.UNKNOWN: "No device is waiting with that code. Check the code on the device's screen.",
    CodeStatus.EXPIRED: "That code has expired. Ask the device for a new code.",
    CodeStatus.DENIED: "That code was denied. Ask the device for a new code if that was a mistake.",
    CodeStatus.USED: "That code was already used to link a device.",
    CodeStatus.USED_BY_OTHER_ACCOUNT: (
        "This code was already used to link a device to another account. If that was not you, "
        "check the code on your device's screen and ask the hub's owner who linked it."
    ),
}


class LinkService:
    def __init__(
        self,
        engine: Engine,
        policy: LinkPolicy,
        issuer: CredentialIssuer,
        sender: ReplySender,
        *,
        clock: Clock,
        activity: ActivityLog,
        retained: RetainedTopics,
        rng: random.Random | None = None,
        request_limits: LinkRequestLimits | None = None,
    ) -> None:
        self._engine = engine
        self._request_limits = request_limits or LinkRequestLimits(LimitsPolicy())
        self._refusals_logged = LogEvery()
        self._activity = activity
        self._retained = retained
        self._policy = policy
        self._issuer = issuer
        self._sender = sender
        self._clock = clock
        self._rng = rng or random.SystemRandom()
        # Decisions on one hub are serial: a double-clicked "approve" issues once.
        self._decision_lock = threading.Lock()
        self._pending_cache: _PendingCount | None = None

    # --- device side ----------------------------------------------------------
    def handle_requests(self, batch: list[InboundRequest]) -> list[OutboundReply]:
        """Answer requests that arrived together, in one transaction: one commit
        (one fsync) and a few statements for the whole batch instead of five
        statements and a commit per request (docs/performance.md, link).

        Each answer is what that request alone would get, in arrival order: a
        new request_id gets a code (within the limits), a known one is a poll,
        the same request_id twice in a batch is a request, then a poll.
        """
        now = self._clock()
        try:
            with self._engine.begin() as connection:
                return self._answer_batch(connection, batch, now)
        except IntegrityError:
            # Another hub process on this database stored one of these requests a
            # moment ago. One at a time, that one is known now and answered as a poll.
            if len(batch) > 1:
                return [reply for item in batch for reply in self.handle_requests([item])]
            with self._engine.begin() as connection:
                return self._answer_batch(connection, batch, now)

    def handle_request(
        self, request: LinkRequest, correlation: bytes | None, client_id: str
    ) -> OutboundReply:
        """One request; `client_id` is the one in the request topic."""
        return self.handle_requests([InboundRequest(request, correlation, client_id)])[0]

    def _answer_batch(
        self, connection: Connection, batch: list[InboundRequest], now: float
    ) -> list[OutboundReply]:
        """The batch on SQLAlchemy Core, with statements built once (_KNOWN_OR_TAKEN,
        _INSERT_REQUESTS): one query for the known request_ids and the codes drawn for
        the new ones, one INSERT. Building statements and ORM objects per batch was
        most of the request thread's time (docs/performance.md). Polls, the rare
        case here, go through the ORM and the state machine."""
        drawn = [codes.generate(self._rng) for _ in batch]
        asked = {item.request.request_id for item in batch}
        known_ids: set[str] = set()
        taken: set[str] = set()
        for request_id, user_code, state, expires_at_s in connection.execute(
            _KNOWN_OR_TAKEN, {"request_ids": list(asked), "user_codes": drawn}
        ):
            if request_id in asked:
                known_ids.add(request_id)
            if state == LinkState.PENDING and expires_at_s > now:
                taken.add(user_code)
        polls = self._polls(connection, batch, known_ids, now) if known_ids else {}
        # New requests as plain rows: building and flushing an ORM object per
        # request cost a fifth of the request thread's time.
        new_rows: dict[str, dict[str, Any]] = {}
        # A ready answer, or a new request to answer once the rows have their codes.
        answers: list[OutboundReply | InboundRequest] = []
        pending: _PendingCount | None = None
        counted_afresh = False
        for index, item in enumerate(batch):
            request, correlation = item.request, item.correlation
            if request.request_id in new_rows:
                answers.append(item)  # twice in this batch
                continue
            if request.request_id in known_ids:
                answers.append(polls[index])
                continue
            if pending is None:
                pending = self._pending_count(connection, now)
            refused = self._refuse_new(request, item.client_id, pending, now)
            at_cap = refused is not None and refused.error is ErrorCode.TOO_MANY_PENDING
            if at_cap and not counted_afresh:
                # The cap decides: count exactly (codes may have been decided since).
                pending = self._pending_count(connection, now, afresh=True)
                pending.waiting += len(new_rows)  # taken in this batch, not stored yet
                counted_afresh = True
                refused = self._refuse_new(request, item.client_id, pending, now)
            if refused is not None:
                # Nothing is written: the device resends the same request later.
                answers.append(OutboundReply(request.reply_to, refused, correlation))
                continue
            pending.waiting += 1
            row = self._new_row(request, correlation, item.client_id, now)
            if drawn[index] not in taken:
                row["user_code"] = drawn[index]
                taken.add(drawn[index])
            new_rows[request.request_id] = row
            answers.append(item)
        if new_rows:
            clashed = [row for row in new_rows.values() if not row["user_code"]]
            if clashed:
                self._give_codes(connection, clashed, taken, now)
            connection.execute(_INSERT_REQUESTS, list(new_rows.values()))
            metrics.of(self._engine).link_requests.inc(len(new_rows))
        return [
            answer
            if isinstance(answer, OutboundReply)
            else self._answer_new(new_rows[answer.request.request_id], answer, now)
            for answer in answers
        ]

    def _polls(
        self, connection: Connection, batch: list[InboundRequest], known_ids: set[str], now: float
    ) -> dict[int, OutboundReply]:
        """The answers to the batch's requests the hub already knows (by position),
        each applied to its record in this transaction."""
        answers: dict[int, OutboundReply] = {}
        with Session(bind=connection, expire_on_commit=False) as session:
            known = {
                record.request_id: record
                for record in session.exec(
                    select(LinkRequestRecord).where(col(LinkRequestRecord.request_id).in_(known_ids))
                ).all()
            }
            for index, item in enumerate(batch):
                record = known.get(item.request.request_id)
                if record is not None:
                    answers[index] = self._poll(record, item.request, item.correlation, now)
            session.flush()
        return answers

    def _answer_new(self, row: dict[str, Any], item: InboundRequest, now: float) -> OutboundReply:
        """The answer to a request stored in this batch (or repeated in it)."""
        if item.request.reply_to != row["reply_to"]:
            return self._wrong_reply_topic(item.request, item.correlation)
        reply = self._pending_reply(row["request_id"], row["user_code"], row["expires_at_s"], now)
        return OutboundReply(item.request.reply_to, reply, item.correlation)

    @staticmethod
    def _wrong_reply_topic(request: LinkRequest, correlation: bytes | None) -> OutboundReply:
        # Only the device that made the request knows its reply topic.
        return OutboundReply(
            request.reply_to,
            ErrorReply(
                request.request_id,
                ErrorCode.INVALID_REQUEST,
                "request_id is in use with another reply topic; make a new request_id",
            ),
            correlation,
        )

    def _poll(
        self, record: LinkRequestRecord, request: LinkRequest, correlation: bytes | None, now: float
    ) -> OutboundReply:
        """A request_id the hub knows: the answer its state gives now."""
        if record.reply_to != request.reply_to:
            return self._wrong_reply_topic(request, correlation)
        if correlation is not None:
            record.correlation_hex = correlation.hex()
        outputs = self._apply(record, LinkEvent.POLL, now)
        return self._reply(record, outputs, now)

    def _pending_count(self, connection: Connection, now: float, *, afresh: bool = False) -> _PendingCount:
        """How many codes wait now: read from the database at most once a second,
        and counted on in between as this process takes new ones (a COUNT over
        every pending row for every batch cost a tenth of the request thread's
        time). Codes decided meanwhile only make the count too high, so whoever
        refuses at the cap asks again `afresh`; hubs sharing the database see
        each other's new codes within that second."""
        cached = self._pending_cache
        if not afresh and cached is not None and now - cached.read_at_s < 1.0:
            return cached
        waiting, first_expiry_s = connection.execute(
            sql_select(func.count(), func.min(_REQUESTS.c.expires_at_s)).where(
                _REQUESTS.c.state == LinkState.PENDING, _REQUESTS.c.expires_at_s > now
            )
        ).one()
        self._pending_cache = _PendingCount(waiting, first_expiry_s, now)
        return self._pending_cache

    def _refuse_new(
        self, request: LinkRequest, client_id: str, pending: _PendingCount, now: float
    ) -> ErrorReply | None:
        """The answer to a new request that is not taken, or None to take it."""
        if not sealing.is_usable(request.public_key):
            return ErrorReply(
                request.request_id,
                ErrorCode.INVALID_REQUEST,
                "public_key is not a usable X25519 public key: credentials are only sent sealed to it",
            )
        first = pending.first_expiry_s
        refusal = self._request_limits.admit(
            client_id,
            pending=pending.waiting,
            next_expiry_in_s=None if first is None else int(first - now) + 1,
        )
        if refusal is None:
            return None
        refused = self._refusals_logged.due(now)
        if refused:
            log.warning(
                "refused %d new link request(s) over a limit (at most one such line a minute); "
                "the latest from client %r: %s",
                refused,
                client_id,
                refusal.description,
            )
        return ErrorReply(request.request_id, refusal.error, refusal.description, refusal.retry_after_s)

    def _new_row(
        self, request: LinkRequest, correlation: bytes | None, client_id: str, now: float
    ) -> dict[str, Any]:
        """A new request's row in link_request, its user code still to be given."""
        return {
            "request_id": request.request_id,
            "user_code": "",
            "reply_to": request.reply_to,
            "device_public_key": request.public_key,
            "client_id": client_id,
            "correlation_hex": correlation.hex() if correlation else None,
            "device_name": request.device.name,
            "device_model": request.device.model,
            "device_address": request.device.address,
            "device_firmware": request.device.firmware,
            "state": str(LinkState.PENDING),
            "created_at_s": now,
            "expires_at_s": now + self._policy.code_lifetime_s,
            "decided_at_s": None,
            "account_id": None,
            "device_id": None,
            "issued_password": None,
        }

    def _give_codes(
        self, connection: Connection, rows: list[dict[str, Any]], taken: set[str], now: float
    ) -> None:
        """A user code for each row whose first draw clashed with a live code (rare:
        see docs/security.md for the odds), none the same as a live one or as one
        `taken` in this batch; adds the codes given to `taken`."""
        needing = rows
        for _ in range(20):
            fresh = [codes.generate(self._rng) for _ in needing]
            live = taken | {
                code
                for code, state, expires_at_s in connection.execute(_TAKEN, {"user_codes": fresh})
                if state == LinkState.PENDING and expires_at_s > now
            }
            clashing = []
            for row, code in zip(needing, fresh, strict=True):
                if code in live:
                    clashing.append(row)
                else:
                    row["user_code"] = code
                    live.add(code)
                    taken.add(code)
            if not clashing:
                return
            needing = clashing
        raise LinkHubError("could not find a free user code")  # 20 clashes: the space is full

    def handle_rejection(
        self, rejection: protocol.Rejection, correlation: bytes | None
    ) -> OutboundReply | None:
        if rejection.reply_to is None or not protocol.is_valid_reply_topic(rejection.reply_to):
            return None  # nowhere we may answer: the device's own timeout tells it
        reply = ErrorReply(rejection.request_id, rejection.error, rejection.description)
        return OutboundReply(rejection.reply_to, reply, correlation)

    def broker_lost(self) -> None:
        """The hub lost its broker: nobody is known to be online any more. Each device
        says again when the hub is back (its retained status, or a fresh one when it
        reconnects, MQTT 5 §3.3.1.3), so the flags are cleared, not guessed at."""
        with session_scope(self._engine) as session:
            session.execute(update(Device).where(col(Device.online)).values(online=False))

    def device_status(self, device_id: str, online: bool) -> None:
        """The device's status topic: its first appearance confirms the link."""
        now = self._clock()
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None:
                return  # an unlinked device's late status (say, a will) changes nothing
            # Conditional, not a plain write of what was read: an unlink committed since
            # the read wins, so an unlinked device is never left marked online.
            session.execute(
                update(Device)
                .where(col(Device.device_id) == device_id, col(Device.unlinked_at_s).is_(None))
                .values(online=online, last_seen_at_s=now)
            )
            if online and not device.confirmed:
                device.confirmed = True
                record = session.get(LinkRequestRecord, device.request_id)
                if record is not None:
                    self._apply(record, LinkEvent.CONFIRM, now)
                    session.add(record)
            session.add(device)

    def expire_due(self) -> list[OutboundReply]:
        """Pending requests whose lifetime ran out, with the reply each device is owed."""
        now = self._clock()
        out = []
        with session_scope(self._engine) as session:
            due = session.exec(
                select(LinkRequestRecord).where(
                    LinkRequestRecord.state == LinkState.PENDING, LinkRequestRecord.expires_at_s <= now
                )
            ).all()
            for record in due:
                outputs = self._apply(record, LinkEvent.POLL, now)
                session.add(record)
                out.append(self._reply(record, outputs, now))
        return out

    # --- person side ----------------------------------------------------------
    def lookup_code(self, typed: str, account_id: int | None = None) -> CodeLookup:
        """What a typed code stands for now.

        With `account_id` (the person asking), a code already used for another
        account says so: the plain "already used" would let them think it was
        their own device.
        """
        code = codes.normalise(typed)
        if code is None:
            return CodeLookup(CodeStatus.MALFORMED)
        now = self._clock()
        with session_scope(self._engine) as session:
            record = self._latest_with_code(session, code)
            if record is None:
                return CodeLookup(CodeStatus.UNKNOWN)
            state = LinkState(record.state)
            if is_expired(state, record.expires_at_s, now):
                state = LinkState.EXPIRED
            status = _STATE_TO_CODE_STATUS[state]
            if status is CodeStatus.USED and account_id is not None and record.account_id != account_id:
                status = CodeStatus.USED_BY_OTHER_ACCOUNT
            return CodeLookup(status, _request_view(record, state))

    def approve(
        self, typed: str, account_id: int, *, origin: Origin | None = None, address: str | None = None
    ) -> DeviceView:
        """Issue the device's broker identity, then tell the device. Raises LinkDecisionError.

        In three steps, since the broker and the database cannot commit together:
        the identity is recorded (broker_identity, committed), the broker makes it,
        and the device row commits with the record marked linked. A hub killed
        between the last two leaves a record the reconciler acts on.

        `origin` ("web", "cli") and `address` (the person's) go to the activity log.
        """
        with self._decision_lock:
            now = self._clock()
            issued: str | None = None
            try:
                with session_scope(self._engine) as session:
                    record = self._decidable(session, typed, now)
                    outputs = self._apply(record, LinkEvent.APPROVE, now)
                    assert LinkOutput.ISSUE_CREDENTIALS in outputs
                    if record.device_public_key is None:
                        # Asked before credentials were sealed (an older hub stored it): nothing to seal to.
                        raise LinkDecisionError(
                            CodeStatus.EXPIRED,
                            "This device asked in a way that cannot receive sealed credentials. "
                            "Ask the device for a new code.",
                        )
                    device_id = f"dev-{secrets.token_hex(6)}"
                    password = secrets.token_urlsafe(24)
                    record.device_id = device_id
                    record.issued_password = password
                    record.account_id = account_id
                    record.decided_at_s = now
                    # Sealed before the broker hears of it, so nothing is issued that cannot be sent.
                    reply = self._reply(record, outputs, now)
                    # The intent is committed first, in a transaction of its own: a hub that
                    # dies after the broker made the identity leaves a row that names it,
                    # and the reconciler removes it (reconcile_identities).
                    self._record_identity(device_id, record.request_id, now)
                    issued = device_id
                    # The broker learns the credentials before anyone can be told them;
                    # if it does not confirm, nothing is stored and the code stays pending.
                    self._issuer.issue_device(device_id, password)
                    self._mark_identity_linked(session, device_id, now)
                    device = Device(
                        device_id=device_id,
                        account_id=account_id,
                        name=record.device_name,
                        model=record.device_model,
                        address=record.device_address,
                        request_id=record.request_id,
                        linked_at_s=now,
                    )
                    session.add(record)
                    session.add(device)
                    self._activity.add(
                        session,
                        ActivityKind.LINK_APPROVED,
                        account_id,
                        address=address,
                        device_id=device_id,
                        detail=_decision_detail(record, origin),
                    )
                    view = _device_view(device)
            except BaseException:
                if issued is not None:
                    # Stored nothing after all (the commit failed): the broker must not
                    # keep an identity no device row names. If this fails too, the
                    # reconciler finds it from its broker_identity row.
                    self._revoke_quietly(issued)
                raise
        metrics.of(self._engine).link_approvals.inc()
        self._push(reply)
        return view

    def _revoke_quietly(self, device_id: str) -> None:
        """After a failed approval. Nothing can link this identity any more (its
        approval did not commit), so the broker goes first; if either step fails
        the reconciler finishes it from the broker_identity row."""
        try:
            self._issuer.revoke_device(device_id)
        except LinkHubError as exc:
            log.error(
                "device %s: approval failed and its broker identity could not be removed now (%s); "
                "the hub removes it when it next reconciles the broker's identities",
                device_id,
                exc,
            )
            return
        try:
            self._mark_identity_revoked(device_id, RevokedReason.APPROVAL_FAILED, self._clock())
        except Exception as exc:  # the database failed the approval too, say a full disk
            log.warning("device %s: broker identity removed, but not recorded as such (%s)", device_id, exc)

    # --- broker identities: recorded first, reconciled with the broker -------------
    def _record_identity(self, device_id: str, request_id: str, now: float) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                insert(BrokerIdentity.__table__),  # type: ignore[attr-defined]
                {"device_id": device_id, "request_id": request_id, "issued_at_s": now},
            )

    @staticmethod
    def _mark_identity_linked(session: Session, device_id: str, now: float) -> None:
        """In the approval's transaction: it commits with the device row, unless the
        reconciler claimed the identity meanwhile (the approval then fails)."""
        done = session.execute(
            update(BrokerIdentity)
            .where(col(BrokerIdentity.device_id) == device_id, col(BrokerIdentity.revoked_at_s).is_(None))
            .values(linked_at_s=now)
        )
        if done.rowcount != 1:  # type: ignore[attr-defined]
            raise LinkHubError(
                f"the approval of {device_id} took so long that the hub removed its broker identity; "
                "approve the code again"
            )

    def _mark_identity_revoked(self, device_id: str, reason: RevokedReason, now: float) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(BrokerIdentity)
                .where(col(BrokerIdentity.device_id) == device_id, col(BrokerIdentity.revoked_at_s).is_(None))
                .values(revoked_at_s=now, revoked_reason=str(reason))
            )

    # --- clearing an unlinked device's retained topics, as a job ----------------
    def unfinished_clearings(self) -> list[str]:
        """Unlinked devices whose retained topics the hub has not finished
        emptying (revision 0007): the jobs to take up again at start."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                sql_select(col(BrokerIdentity.device_id)).where(
                    col(BrokerIdentity.revoked_reason) == str(RevokedReason.UNLINKED),
                    col(BrokerIdentity.retained_cleared_at_s).is_(None),
                )
            )
            return [device_id for (device_id,) in rows]

    def clearing_unfinished(self, device_id: str) -> None:
        """Record that the device's retained topics still need emptying."""
        self._set_cleared_at(device_id, None)

    def clearing_finished(self, device_id: str) -> None:
        self._set_cleared_at(device_id, self._clock())

    def _set_cleared_at(self, device_id: str, at_s: float | None) -> None:
        with self._engine.begin() as connection:
            connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.device_id) == device_id,
                    col(BrokerIdentity.revoked_reason) == str(RevokedReason.UNLINKED),
                )
                .values(retained_cleared_at_s=at_s)
            )

    def reconcile_identities(self) -> list[str]:
        """Remove the device identities the broker holds that no linked device names:
        those this hub recorded (broker_identity) whose approval never committed
        (a hub killed between the broker and the database), and those of devices
        unlinked since (e.g. brought back by a restored copy of the broker's file).

        An identity this database never recorded is left alone: hubs with separate
        databases may share a broker, and another hub's devices are not ours
        (`linkhub devices unlink ID` removes one by hand). One younger than
        APPROVAL_GRACE_S whose approval has not committed is left for next time.
        Each removal is claimed in the database before the broker is asked, so an
        approval that commits meanwhile fails instead of naming a removed identity.
        Returns the identities removed (logged, and counted in /metrics).
        """
        on_broker = self._issuer.device_clients()
        now = self._clock()
        removed: list[str] = []
        with self._decision_lock:
            for device_id in sorted(self._orphans(on_broker, now)):
                if not self._claim_orphan(device_id, now):
                    continue
                try:
                    self._issuer.revoke_device(device_id)
                except LinkHubError as exc:
                    log.error("could not remove the orphaned broker identity %s (%s)", device_id, exc)
                    continue
                removed.append(device_id)
                metrics.of(self._engine).orphan_identities_revoked.inc()
                log.warning(
                    "removed broker identity %s: no linked device names it (its approval never "
                    "committed, or the device was unlinked)",
                    device_id,
                )
            self._close_unissued(on_broker, now)
        return removed

    def _orphans(self, on_broker: set[str], now: float) -> set[str]:
        if not on_broker:
            return set()
        with session_scope(self._engine) as session:
            recorded = session.exec(
                select(BrokerIdentity).where(col(BrokerIdentity.device_id).in_(on_broker))
            ).all()
            linked = set(
                session.exec(
                    select(Device.device_id).where(
                        col(Device.device_id).in_(on_broker), col(Device.unlinked_at_s).is_(None)
                    )
                ).all()
            )
        return {
            row.device_id
            for row in recorded
            if row.device_id not in linked
            and not (
                row.linked_at_s is None
                and row.revoked_at_s is None
                and row.issued_at_s > now - APPROVAL_GRACE_S
            )
        }

    def _claim_orphan(self, device_id: str, now: float) -> bool:
        """Mark the identity revoked in one conditional statement, so that it holds
        against an approval committing at the same moment (on PostgreSQL the
        statement waits for that approval's row lock and then sees linked_at_s set;
        on SQLite writes are serial). True if the broker's login may be deleted:
        claimed now, or revoked before (an unlinked device, a failed approval),
        which no approval can link any more."""
        with self._engine.begin() as connection:
            claimed = connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.device_id) == device_id,
                    col(BrokerIdentity.revoked_at_s).is_(None),
                    col(BrokerIdentity.linked_at_s).is_(None),
                )
                .values(revoked_at_s=now, revoked_reason=str(RevokedReason.ORPHAN))
            ).rowcount
            if claimed:
                return True
            revoked_at_s = connection.execute(
                sql_select(col(BrokerIdentity.revoked_at_s)).where(col(BrokerIdentity.device_id) == device_id)
            ).scalar()
            return revoked_at_s is not None

    def _close_unissued(self, on_broker: set[str], now: float) -> None:
        """Recorded identities the broker never made (the hub died before asking, or
        the broker refused): closed, so they are not looked at again."""
        with self._engine.begin() as connection:
            connection.execute(
                update(BrokerIdentity)
                .where(
                    col(BrokerIdentity.linked_at_s).is_(None),
                    col(BrokerIdentity.revoked_at_s).is_(None),
                    col(BrokerIdentity.issued_at_s) <= now - APPROVAL_GRACE_S,
                    col(BrokerIdentity.device_id).not_in(on_broker),
                )
                .values(revoked_at_s=now, revoked_reason=str(RevokedReason.APPROVAL_FAILED))
            )

    def deny(
        self, typed: str, account_id: int | None, *, origin: Origin | None = None, address: str | None = None
    ) -> LinkRequestView:
        """`account_id` None: the hub's operator (`linkhub link deny`); the event then
        belongs to no account (`linkhub activity` without --account shows it)."""
        with self._decision_lock:
            now = self._clock()
            with session_scope(self._engine) as session:
                record = self._decidable(session, typed, now)
                outputs = self._apply(record, LinkEvent.DENY, now)
                record.account_id = account_id
                record.decided_at_s = now
                session.add(record)
                self._activity.add(
                    session,
                    ActivityKind.LINK_DENIED,
                    account_id,
                    address=address,
                    detail=_decision_detail(record, origin),
                )
                reply = self._reply(record, outputs, now)
                view = _request_view(record, LinkState(record.state))
        metrics.of(self._engine).link_denials.inc()
        self._push(reply)
        return view

    def was_unlinked(self, device_id: str) -> bool:
        """A device this hub unlinked: a retained status of it is a ghost to clear.

        A device id this hub never saw is not one: hubs with separate databases
        may share a broker, and another hub's devices are not ours to touch.
        """
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            return device is not None and device.unlinked_at_s is not None

    def unlink(
        self, device_id: str, account_id: int | None, *, origin: Origin, address: str | None = None
    ) -> DeviceView:
        """Take a linked device off the hub. Raises UnlinkRefused.

        `account_id` is the person asking: only the device's own account may
        unlink it, and another account's device is refused exactly like an
        unknown id. None is the hub's operator (the `linkhub` command on the
        control socket), who may unlink any device, as `link deny` may deny any
        code. `origin` ("web", "api", "cli") and `address` go to the activity log.

        The broker deletes the device's client first, which disconnects it at
        once and refuses its password from then on; only once the broker
        confirmed is the device marked unlinked, so a failure leaves it linked
        and the person can simply try again. Its settings (the shadow here, the
        account service's records and change log) stay as history; the device
        is no longer listed, and a new link gives it a new id.

        The operator (`account_id` None) may also unlink a device identity that
        only the broker holds (no linked device row names it), e.g. one left by a
        hub killed mid-approval before identities were recorded first.
        """
        with self._decision_lock:
            now = self._clock()
            with session_scope(self._engine) as session:
                device = session.get(Device, device_id)
                if device is None and account_id is None:
                    return self._unlink_broker_only(session, device_id, now)
                if device is None or (account_id is not None and device.account_id != account_id):
                    raise UnlinkRefused("unknown_device", f"There is no linked device {device_id!r}.")
                if device.unlinked_at_s is not None:
                    if account_id is None and device_id in self._issuer.device_clients():
                        # Unlinked here, yet back on the broker (say, from a restored copy of its file).
                        return self._unlink_broker_only(session, device_id, now)
                    raise UnlinkRefused(
                        "already_unlinked", f"{device.name} ({device_id}) is already unlinked."
                    )
                detail = f"{device.name} ({device.model}), unlinked {origin_words(origin)}"
                view = self._take_off(session, device, now, RevokedReason.UNLINKED, detail, address)
        self._clear_retained(device_id)
        return view

    def _take_off(
        self,
        session: Session,
        device: Device,
        now: float,
        reason: RevokedReason,
        detail: str,
        address: str | None = None,
    ) -> DeviceView:
        """Unlink `device` in the caller's transaction; the broker's client is
        deleted last, so that nothing is stored if the broker does not confirm."""
        device_id = device.device_id
        device.unlinked_at_s = now
        device.online = False
        # Written even if it was False when read: a status ("online") the hub
        # handled since would otherwise survive, as the ORM writes changes only.
        flag_modified(device, "online")
        session.add(device)
        record = session.get(LinkRequestRecord, device.request_id)
        if record is not None:
            # A device approved but never connected: its poll must not hand out dead credentials.
            self._apply(record, LinkEvent.UNLINK, now)
            session.add(record)
        session.execute(
            update(BrokerIdentity)
            .where(col(BrokerIdentity.device_id) == device_id, col(BrokerIdentity.revoked_at_s).is_(None))
            .values(revoked_at_s=now, revoked_reason=str(reason))
        )
        view = _device_view(device)
        self._activity.add(
            session,
            ActivityKind.DEVICE_UNLINKED,
            device.account_id,
            address=address,
            device_id=device_id,
            detail=detail,
        )
        # Last before the commit: if the broker does not confirm, nothing is stored.
        # (Retrying is safe: revoking a client that is already gone succeeds.)
        self._issuer.revoke_device(device_id)
        return view

    def _clear_retained(self, device_id: str) -> None:
        try:
            cleared = self._retained.clear_device_topics(device_id)
            log.info("unlinked %s; cleared retained %s", device_id, ", ".join(cleared))
        except LinkHubError as exc:
            # Unlinked all the same: the hub clears a leftover retained status when it sees it.
            log.warning("unlinked %s, but its retained topics were not cleared now (%s)", device_id, exc)

    def _unlink_broker_only(self, session: Session, device_id: str, now: float) -> DeviceView:
        """The operator's unlink of an identity the broker holds and no linked device
        row names (left by a hub that died mid-approval before this hub recorded
        identities first, or by another hub): deleted from the broker."""
        if device_id not in self._issuer.device_clients():
            raise UnlinkRefused("unknown_device", f"There is no linked device {device_id!r}.")
        row = session.get(BrokerIdentity, device_id)
        record = session.get(LinkRequestRecord, row.request_id) if row is not None else None
        if row is not None and row.revoked_at_s is None:
            row.revoked_at_s = now
            row.revoked_reason = str(RevokedReason.UNLINKED)
            session.add(row)
        self._issuer.revoke_device(device_id)
        log.warning(
            "removed broker identity %s, which no linked device names (linkhub devices unlink)", device_id
        )
        return DeviceView(
            device_id=device_id,
            account_id=record.account_id if record is not None and record.account_id is not None else 0,
            name=record.device_name if record is not None else "(no device row)",
            model=record.device_model if record is not None else "broker identity only",
            address=record.device_address if record is not None else None,
            linked_at_s=row.issued_at_s if row is not None else now,
            confirmed=False,
            online=False,
            last_seen_at_s=None,
        )

    # --- devices approved that never came (issue 19 item 17) ------------------------
    def expire_unconfirmed(self) -> list[str]:
        """Devices approved longer than `unconfirmed_lifetime_s` ago that never
        connected: unlinked, their broker identity deleted and the password held
        for them forgotten. Credentials that were never used should not stay valid
        for ever: whoever read them (the device's reply topic, a backup) could
        use them at any later time."""
        now = self._clock()
        cutoff = now - self._policy.unconfirmed_lifetime_s
        with session_scope(self._engine) as session:
            due = session.exec(
                select(Device.device_id).where(
                    col(Device.confirmed).is_(False),
                    col(Device.unlinked_at_s).is_(None),
                    col(Device.linked_at_s) <= cutoff,
                )
            ).all()
        expired: list[str] = []
        lifetime = _duration(self._policy.unconfirmed_lifetime_s)
        for device_id in due:
            with self._decision_lock, session_scope(self._engine) as session:
                device = session.get(Device, device_id)
                if device is None or device.confirmed or device.unlinked_at_s is not None:
                    continue  # it came, or was unlinked, meanwhile
                detail = (
                    f"{device.name} ({device.model}) never connected: its credentials expired "
                    f"{lifetime} after it was approved"
                )
                self._take_off(session, device, now, RevokedReason.NEVER_CONNECTED, detail)
            metrics.of(self._engine).unconfirmed_devices_expired.inc()
            log.info("device %s never connected in %s: its credentials expired", device_id, lifetime)
            expired.append(device_id)
        return expired

    def expired_unconfirmed(self, account_id: int) -> list[ExpiredDeviceView]:
        """The account's devices whose credentials expired unused lately, newest first."""
        since = self._clock() - EXPIRED_SHOWN_FOR_S
        with session_scope(self._engine) as session:
            found = session.exec(
                select(Device, BrokerIdentity)
                .join(BrokerIdentity, col(BrokerIdentity.device_id) == col(Device.device_id))
                .where(
                    Device.account_id == account_id,
                    BrokerIdentity.revoked_reason == str(RevokedReason.NEVER_CONNECTED),
                    col(BrokerIdentity.revoked_at_s) >= since,
                )
                .order_by(col(BrokerIdentity.revoked_at_s).desc())
            ).all()
            return [
                ExpiredDeviceView(d.device_id, d.name, d.model, d.linked_at_s, b.revoked_at_s or 0.0)
                for d, b in found
            ]

    @property
    def unconfirmed_lifetime_s(self) -> int:
        return self._policy.unconfirmed_lifetime_s

    def list_devices(self, account_id: int | None = None) -> list[DeviceView]:
        """Linked devices; unlinked ones are history, kept but not listed."""
        with session_scope(self._engine) as session:
            query = (
                select(Device).where(col(Device.unlinked_at_s).is_(None)).order_by(col(Device.linked_at_s))
            )
            if account_id is not None:
                query = query.where(Device.account_id == account_id)
            unknown_since = metrics.of(self._engine).status_unknown_since()
            return [_device_view(d, unknown_since) for d in session.exec(query).all()]

    def linked_device(self, device_id: str, account_id: int) -> DeviceView | None:
        """The account's linked device with this id, or None: one row, where
        listing the account's devices to pick one read them all."""
        with session_scope(self._engine) as session:
            device = session.get(Device, device_id)
            if device is None or device.unlinked_at_s is not None or device.account_id != account_id:
                return None
            return _device_view(device, metrics.of(self._engine).status_unknown_since())

    # --- internals ------------------------------------------------------------
    def _decidable(self, session: Session, typed: str, now: float) -> LinkRequestRecord:
        code = codes.normalise(typed)
        if code is None:
            raise LinkDecisionError(CodeStatus.MALFORMED, DECISION_MESSAGES[CodeStatus.MALFORMED])
        record = self._latest_with_code(session, code)
        if record is None:
            raise LinkDecisionError(CodeStatus.UNKNOWN, DECISION_MESSAGES[CodeStatus.UNKNOWN])
        if is_expired(LinkState(record.state), record.expires_at_s, now):
            # The person noticed first: store it and tell the device now, as the sweep would.
            outputs = self._apply(record, LinkEvent.POLL, now)
            session.add(record)
            session.commit()
            self._push(self._reply(record, outputs, now))
        status = _STATE_TO_CODE_STATUS[LinkState(record.state)]
        if status is not CodeStatus.PENDING:
            raise LinkDecisionError(status, DECISION_MESSAGES[status])
        return record

    @staticmethod
    def _latest_with_code(session: Session, code: str) -> LinkRequestRecord | None:
        return session.exec(
            select(LinkRequestRecord)
            .where(LinkRequestRecord.user_code == code)
            .order_by(col(LinkRequestRecord.created_at_s).desc())
        ).first()

    def _apply(self, record: LinkRequestRecord, event: LinkEvent, now: float) -> tuple[LinkOutput, ...]:
        state = LinkState(record.state)
        if is_expired(state, record.expires_at_s, now):
            state, _ = step(state, LinkEvent.EXPIRE)
            metrics.of(self._engine).link_expiries.inc()
        try:
            new_state, outputs = step(state, event)
        except InvalidTransition as exc:
            raise LinkDecisionError(_STATE_TO_CODE_STATUS[state], str(exc)) from exc
        record.state = new_state
        if LinkOutput.FORGET_CREDENTIALS in outputs:
            record.issued_password = None
        return outputs

    def _pending_reply(
        self, request_id: str, user_code: str, expires_at_s: float, now: float
    ) -> PendingReply:
        display = codes.display(user_code)
        page = self._policy.link_page_url
        return PendingReply(
            request_id=request_id,
            user_code=display,
            verification_uri=page,
            verification_uri_complete=f"{page}?code={display}",
            expires_in=max(0, int(expires_at_s - now)),
            interval=self._policy.poll_interval_s,
        )

    def _reply(self, record: LinkRequestRecord, outputs: tuple[LinkOutput, ...], now: float) -> OutboundReply:
        reply: LinkReply
        if LinkOutput.REPLY_PENDING in outputs:
            reply = self._pending_reply(record.request_id, record.user_code, record.expires_at_s, now)
        elif LinkOutput.REPLY_APPROVED in outputs:
            assert record.device_id is not None and record.issued_password is not None
            if record.device_public_key is None:
                raise LinkHubError(f"request {record.request_id} has no public key to seal credentials to")
            credentials = LinkCredentials(
                request_id=record.request_id,
                device_id=record.device_id,
                mqtt=MqttCredentials(
                    host=self._policy.device_broker_host,
                    port=self._policy.device_broker_port,
                    client_id=record.device_id,
                    username=record.device_id,
                    password=record.issued_password,
                    tls_port=self._policy.device_broker_tls_port,
                    ca_cert=self._policy.device_broker_ca_cert,
                ),
            )
            # Sealed afresh for every send (a new ephemeral key each time), to the
            # key of the first request: the password never travels in the clear.
            reply = ApprovedReply(
                request_id=record.request_id,
                device_id=record.device_id,
                sealed_credentials=sealing.seal(record.device_public_key, protocol.encode(credentials)),
            )
        else:
            error = {
                LinkOutput.REPLY_DENIED: ErrorCode.ACCESS_DENIED,
                LinkOutput.REPLY_EXPIRED: ErrorCode.EXPIRED_TOKEN,
                LinkOutput.REPLY_ALREADY_LINKED: ErrorCode.ALREADY_LINKED,
            }[next(o for o in outputs if o.name.startswith("REPLY_"))]
            reply = ErrorReply(record.request_id, error, ERROR_DESCRIPTIONS[error])
        correlation = bytes.fromhex(record.correlation_hex) if record.correlation_hex else None
        return OutboundReply(record.reply_to, reply, correlation)

    def _push(self, outbound: OutboundReply) -> None:
        try:
            self._sender.send_reply(outbound.reply_to, outbound.reply, outbound.correlation)
        except LinkHubError as exc:
            # The decision is stored; the device's next poll gets the same answer.
            log.warning("could not push a link reply now (%s); the device's next poll gets it", exc)


def _duration(seconds: float) -> str:
    """`86400` -> "24 h", `600` -> "10 min": for the activity log and the page."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


def _decision_detail(record: LinkRequestRecord, origin: Origin | None) -> str:
    """Which device asked, with what it reported, and where the person decided."""
    where = f" from {record.device_address}" if record.device_address else ""
    how = f", decided {origin_words(origin)}" if origin else ""
    return f"{record.device_name} ({record.device_model}){where}, code {codes.display(record.user_code)}{how}"


def _request_view(record: LinkRequestRecord, state: LinkState) -> LinkRequestView:
    return LinkRequestView(
        user_code=codes.display(record.user_code),
        device_name=record.device_name,
        device_model=record.device_model,
        device_address=record.device_address,
        requested_at_s=record.created_at_s,
        expires_at_s=record.expires_at_s,
        state=state,
    )


def _device_view(device: Device, unknown_since_s: float | None = None) -> DeviceView:
    return DeviceView(
        device_id=device.device_id,
        account_id=device.account_id,
        name=device.name,
        model=device.model,
        address=device.address,
        linked_at_s=device.linked_at_s,
        confirmed=device.confirmed,
        online=device.online and unknown_since_s is None,
        last_seen_at_s=device.last_seen_at_s,
        status_unknown_since_s=unknown_since_s,
    )
