"""The link state machine: no I/O, no clock, no database (h11-style).

Rules, in words:
- A request starts PENDING with a user code. A device repeats the same request
  (same request_id) to poll (RFC 8628 §3.4-3.5); each poll answers the current
  state, so lost replies, broker restarts and hub restarts cost nothing.
- A person approves (credentials are issued, then sent) or denies a PENDING
  request. Past its lifetime a PENDING request is EXPIRED.
- APPROVED becomes LINKED only when the device shows up with its new
  credentials: delivery is confirmed, not assumed. Until then a poll re-sends
  the same credentials; after it the secret is forgotten.
- Unlinking a device ends the request that linked it: an APPROVED request
  whose device never came forgets its (now revoked) credentials and answers
  like a LINKED one, so a late poll is told `already_linked`, never handed
  dead credentials.
- Every other (state, event) pair is an error, raised, never ignored.
"""

from __future__ import annotations

from enum import StrEnum

from hub.errors import LinkHubError


class LinkState(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    LINKED = "linked"


class LinkEvent(StrEnum):
    POLL = "poll"  # the device (re)sent its request
    APPROVE = "approve"  # a person approved the code
    DENY = "deny"  # a person denied the code
    EXPIRE = "expire"  # the code's lifetime ran out
    CONFIRM = "confirm"  # the device came online with its new credentials
    UNLINK = "unlink"  # a person unlinked the device this request linked


class LinkOutput(StrEnum):
    REPLY_PENDING = "reply_pending"
    ISSUE_CREDENTIALS = "issue_credentials"
    REPLY_APPROVED = "reply_approved"
    REPLY_DENIED = "reply_denied"
    REPLY_EXPIRED = "reply_expired"
    REPLY_ALREADY_LINKED = "reply_already_linked"
    FORGET_CREDENTIALS = "forget_credentials"


S, E, Out = LinkState, LinkEvent, LinkOutput

TRANSITIONS: dict[tuple[LinkState, LinkEvent], tuple[LinkState, tuple[LinkOutput, ...]]] = {
    (S.PENDING, E.POLL): (S.PENDING, (Out.REPLY_PENDING,)),
    (S.PENDING, E.APPROVE): (S.APPROVED, (Out.ISSUE_CREDENTIALS, Out.REPLY_APPROVED)),
    (S.PENDING, E.DENY): (S.DENIED, (Out.REPLY_DENIED,)),
    (S.PENDING, E.EXPIRE): (S.EXPIRED, (Out.REPLY_EXPIRED,)),
    (S.APPROVED, E.POLL): (S.APPROVED, (Out.REPLY_APPROVED,)),
    (S.APPROVED, E.CONFIRM): (S.LINKED, (Out.FORGET_CREDENTIALS,)),
    (S.DENIED, E.POLL): (S.DENIED, (Out.REPLY_DENIED,)),
    (S.EXPIRED, E.POLL): (S.EXPIRED, (Out.REPLY_EXPIRED,)),
    (S.LINKED, E.POLL): (S.LINKED, (Out.REPLY_ALREADY_LINKED,)),
    (S.LINKED, E.CONFIRM): (S.LINKED, ()),
    (S.APPROVED, E.UNLINK): (S.LINKED, (Out.FORGET_CREDENTIALS,)),
    (S.LINKED, E.UNLINK): (S.LINKED, ()),
}


class InvalidTransition(LinkHubError):
    """(state, event) has no rule. Callers turn this into a message for the person."""

    def __init__(self, state: LinkState, event: LinkEvent) -> None:
        super().__init__(f"cannot {event} a link request that is {state}")
        self.state = state
        self.event = event


def step(state: LinkState, event: LinkEvent) -> tuple[LinkState, tuple[LinkOutput, ...]]:
    try:
        return TRANSITIONS[(state, event)]
    except KeyError:
        raise InvalidTransition(state, event) from None


def is_expired(state: LinkState, expires_at_s: float, now_s: float) -> bool:
    """A PENDING request whose lifetime ran out; `now_s` is passed in, never read here."""
    return state is LinkState.PENDING and now_s >= expires_at_s
