"""What the three parts of the link service share (hub/services/links.py):
the state they act on (LinkContext), the views and interfaces callers see,
and the one way a link request's state changes and is answered (LinkParts).

The parts: link_intake.py (requests from devices, polls, expiry),
link_decisions.py (a person's approve and deny) and device_registry.py (linked
devices: status, unlink, broker identities, clean-up).
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from sqlalchemy import Table, bindparam, insert, or_
from sqlalchemy import select as sql_select
from sqlalchemy.engine import Engine

import linkhub_protocol as protocol
from hub.config.model import DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S
from hub.core import codes, sealing
from hub.core.linking import InvalidTransition, LinkEvent, LinkOutput, LinkState, is_expired, step
from hub.core.origin import Origin, origin_words
from hub.errors import LinkDecisionError, LinkHubError
from hub.services import metrics
from hub.services.activity import ActivityLog
from hub.store.models import Device, LinkRequestRecord
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

log = logging.getLogger("hub.services.links")
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
    # Used, by the account asking: Back or Reload after its own approval. Not a
    # guess (web/code_limits.py does not count it): the page leads to the device.
    USED_BY_YOU = "used_by_you"


@dataclass(frozen=True, slots=True)
class LinkRequestView:
    user_code: str  # XXXX-XXXX
    device_name: str
    device_model: str
    device_address: str | None
    requested_at_s: float
    expires_at_s: float
    state: LinkState
    device_id: str | None = None  # once approved


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
    CodeStatus.USED_BY_YOU: "You already linked a device with this code: it is on your Devices page.",
    CodeStatus.USED_BY_OTHER_ACCOUNT: (
        "This code was already used to link a device to another account. If that was not you, "
        "check the code on your device's screen and ask the hub's owner who linked it."
    ),
}


@dataclass(slots=True)
class LinkContext:
    """The state every part acts on, one object shared by the three, so that
    one hub has one decision lock and one issuer (a test may swap the issuer
    here to kill a hub mid-approval)."""

    engine: Engine
    policy: LinkPolicy
    issuer: CredentialIssuer
    sender: ReplySender
    clock: Clock
    activity: ActivityLog
    retained: RetainedTopics
    rng: random.Random
    # Decisions on one hub are serial: a double-clicked "approve" issues once.
    decision_lock: threading.Lock = field(default_factory=threading.Lock)


class LinkParts:
    """The base of each part: the shared state, read through the context, and
    how a link request's state changes (hub/core/linking.py) and is answered."""

    def __init__(self, context: LinkContext) -> None:
        self.context = context

    @property
    def _engine(self) -> Engine:
        return self.context.engine

    @property
    def _policy(self) -> LinkPolicy:
        return self.context.policy

    @property
    def _issuer(self) -> CredentialIssuer:
        return self.context.issuer

    @property
    def _sender(self) -> ReplySender:
        return self.context.sender

    @property
    def _clock(self) -> Clock:
        return self.context.clock

    @property
    def _activity(self) -> ActivityLog:
        return self.context.activity

    @property
    def _retained(self) -> RetainedTopics:
        return self.context.retained

    @property
    def _rng(self) -> random.Random:
        return self.context.rng

    @property
    def _decision_lock(self) -> threading.Lock:
        return self.context.decision_lock

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
        device_id=record.device_id,
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
