"""The link state machine on its own: no broker, no database, no clock."""

import pytest

from hub.core.linking import (
    TRANSITIONS,
    InvalidTransition,
    LinkEvent,
    LinkOutput,
    LinkState,
    is_expired,
    step,
)


def test_happy_path_issues_credentials_once_then_forgets_them() -> None:
    state, out = step(LinkState.PENDING, LinkEvent.POLL)
    assert (state, out) == (LinkState.PENDING, (LinkOutput.REPLY_PENDING,))
    state, out = step(state, LinkEvent.APPROVE)
    assert state is LinkState.APPROVED
    assert out == (LinkOutput.ISSUE_CREDENTIALS, LinkOutput.REPLY_APPROVED)
    # A lost reply: the device polls and gets the same credentials, none issued again.
    state, out = step(state, LinkEvent.POLL)
    assert (state, out) == (LinkState.APPROVED, (LinkOutput.REPLY_APPROVED,))
    state, out = step(state, LinkEvent.CONFIRM)
    assert (state, out) == (LinkState.LINKED, (LinkOutput.FORGET_CREDENTIALS,))
    assert step(state, LinkEvent.POLL) == (LinkState.LINKED, (LinkOutput.REPLY_ALREADY_LINKED,))


@pytest.mark.parametrize(
    ("event", "final", "reply"),
    [
        (LinkEvent.DENY, LinkState.DENIED, LinkOutput.REPLY_DENIED),
        (LinkEvent.EXPIRE, LinkState.EXPIRED, LinkOutput.REPLY_EXPIRED),
    ],
)
def test_final_outcomes_answer_every_later_poll(
    event: LinkEvent, final: LinkState, reply: LinkOutput
) -> None:
    state, out = step(LinkState.PENDING, event)
    assert (state, out) == (final, (reply,))
    assert step(state, LinkEvent.POLL) == (final, (reply,))


@pytest.mark.parametrize(
    ("state", "event"),
    [
        (LinkState.DENIED, LinkEvent.APPROVE),
        (LinkState.EXPIRED, LinkEvent.APPROVE),
        (LinkState.APPROVED, LinkEvent.APPROVE),
        (LinkState.LINKED, LinkEvent.DENY),
        (LinkState.PENDING, LinkEvent.CONFIRM),
    ],
)
def test_pairs_without_a_rule_raise(state: LinkState, event: LinkEvent) -> None:
    with pytest.raises(InvalidTransition) as info:
        step(state, event)
    assert info.value.state is state and info.value.event is event


def test_only_an_approval_issues_credentials() -> None:
    issuing = [pair for pair, (_, out) in TRANSITIONS.items() if LinkOutput.ISSUE_CREDENTIALS in out]
    assert issuing == [(LinkState.PENDING, LinkEvent.APPROVE)]


def test_expiry_applies_to_pending_requests_only() -> None:
    assert is_expired(LinkState.PENDING, expires_at_s=100.0, now_s=100.0)
    assert not is_expired(LinkState.PENDING, expires_at_s=100.0, now_s=99.9)
    assert not is_expired(LinkState.APPROVED, expires_at_s=100.0, now_s=500.0)
