"""Link requests from devices: new ones answered with a code (within the
request limits and the pending cap), resends answered as polls, all of one
batch in one transaction; and codes that expire told to their devices.

Decide, then send: request handling returns the reply for the MQTT shell to
publish (hub/daemon.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

import linkhub_protocol as protocol
from hub.core import codes, sealing
from hub.core.link_limits import LinkRequestLimits, LogEvery
from hub.core.linking import LinkEvent, LinkState
from hub.core.rate_limits import LimitsPolicy
from hub.errors import LinkHubError
from hub.services import metrics
from hub.services.link_parts import (
    _INSERT_REQUESTS,
    _KNOWN_OR_TAKEN,
    _REQUESTS,
    _TAKEN,
    InboundRequest,
    LinkContext,
    LinkParts,
    OutboundReply,
    _PendingCount,
    log,
)
from hub.store.engine import session_scope
from hub.store.models import LinkRequestRecord
from linkhub_protocol import (
    ErrorCode,
    ErrorReply,
    LinkRequest,
)


class LinkIntake(LinkParts):
    """Requests in, replies out (the device side of the link service)."""

    def __init__(self, context: LinkContext, request_limits: LinkRequestLimits | None = None) -> None:
        super().__init__(context)
        self._request_limits = request_limits or LinkRequestLimits(LimitsPolicy())
        self._refusals_logged = LogEvery()
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
