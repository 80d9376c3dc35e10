"""A person's decision on a code: looked up as typed, approved (the device's
broker identity recorded, then issued, then the device row committed) or
denied. The reply is pushed to the device at once through the injected sender;
if that push is lost, the device's next poll gets the same answer."""

from __future__ import annotations

import secrets

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from hub.core import codes
from hub.core.linking import LinkEvent, LinkOutput, LinkState, is_expired
from hub.core.origin import Origin
from hub.errors import LinkDecisionError, LinkHubError
from hub.services import metrics
from hub.services.activity import ActivityKind
from hub.services.link_parts import (
    _STATE_TO_CODE_STATUS,
    DECISION_MESSAGES,
    CodeLookup,
    CodeStatus,
    DeviceView,
    LinkParts,
    LinkRequestView,
    RevokedReason,
    _decision_detail,
    _device_view,
    _request_view,
    log,
)
from hub.store.engine import session_scope
from hub.store.models import BrokerIdentity, Device, LinkRequestRecord


class LinkDecisions(LinkParts):
    """Look up, approve and deny codes (the person's side of the link service)."""

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
            if status is CodeStatus.USED and account_id is not None:
                mine = record.account_id == account_id
                status = CodeStatus.USED_BY_YOU if mine else CodeStatus.USED_BY_OTHER_ACCOUNT
            return CodeLookup(status, _request_view(record, state))

    def waiting(self, limit: int = 50) -> list[LinkRequestView]:
        """The link requests waiting for a person now, newest first: what /link
        lists for every signed-in member of the household (docs/security.md,
        "Devices waiting to be linked"). At most `limit`; the pending cap keeps
        the whole list small anyway."""
        now = self._clock()
        with session_scope(self._engine) as session:
            records = session.exec(
                select(LinkRequestRecord)
                .where(
                    LinkRequestRecord.state == LinkState.PENDING.value,
                    col(LinkRequestRecord.expires_at_s) > now,
                )
                .order_by(col(LinkRequestRecord.created_at_s).desc(), col(LinkRequestRecord.user_code))
                .limit(limit)
            ).all()
            return [_request_view(record, LinkState.PENDING) for record in records]

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
                    self.record_identity(device_id, record.request_id, now)
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
    def record_identity(self, device_id: str, request_id: str, now: float) -> None:
        """Write down, and commit, that this hub is about to ask the broker for a
        device identity: the first step of an approval (the reconciler removes a
        recorded identity whose approval never committed)."""
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
