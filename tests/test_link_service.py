"""The link service on its own (the `services` tier): a SQLite file and the
in-memory fakes of the broker-facing interfaces (tests/fakes.py), no mosquitto.
The same paths the real-broker tests take end to end, each in milliseconds:
a request, its code, an approval that issues an identity and pushes sealed
credentials, a denial, a broker that does not answer, an unlink, and the
reconciler removing an identity whose approval never committed."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeClock
from device_doubles import link_request, new_reply_topic
from fakes import FakeIssuer, FakeReplies, FakeRetained

from firmware_sim import keys
from hub.core.origin import Origin
from hub.errors import LinkDecisionError, LinkHubError
from hub.services.activity import ActivityLog
from hub.services.links import APPROVAL_GRACE_S, CodeStatus, InboundRequest, LinkPolicy, LinkService
from hub.services.local_accounts import AccountService
from hub.store.engine import make_engine
from linkhub_protocol import ApprovedReply, DeviceInfo, ErrorCode, ErrorReply, PendingReply

LAMP = DeviceInfo("Kitchen Lamp", "LMP-1", address="192.168.1.23")
POLICY = LinkPolicy(
    code_lifetime_s=900,
    poll_interval_s=5,
    link_page_url="http://hub.test:8080/link",
    device_broker_host="hub.test",
    device_broker_port=1883,
)


class Parts:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.engine = make_engine(f"sqlite:///{tmp_path / 'linkhub.db'}")
        self.issuer, self.replies, self.retained = FakeIssuer(), FakeReplies(), FakeRetained()
        self.accounts = AccountService(self.engine, self.clock)
        self.links = LinkService(
            self.engine,
            POLICY,
            self.issuer,
            self.replies,
            clock=self.clock,
            activity=ActivityLog(self.engine, self.clock),
            retained=self.retained,
        )

    def ask(self) -> tuple[InboundRequest, str]:
        """A device's link request; its private key to open the answer with."""
        private_key = keys.new_private_key()
        request = link_request(secrets.token_urlsafe(16), new_reply_topic(), LAMP, private_key)
        return InboundRequest(request, None, "lamp-1"), private_key

    def code_for(self, inbound: InboundRequest) -> str:
        (answer,) = self.links.handle_requests([inbound])
        assert isinstance(answer.reply, PendingReply), answer.reply
        return answer.reply.user_code


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(tmp_path)
    yield made
    made.engine.dispose()


def test_a_request_gets_a_code_and_a_resend_the_same_code(parts: Parts) -> None:
    inbound, _ = parts.ask()
    code = parts.code_for(inbound)
    assert parts.code_for(inbound) == code  # a resend is a poll
    assert parts.links.lookup_code(code).status is CodeStatus.PENDING


def test_an_approval_issues_an_identity_and_pushes_credentials_only_the_device_can_open(parts: Parts) -> None:
    alice = parts.accounts.create("alice", "correct horse battery")
    inbound, private_key = parts.ask()
    device = parts.links.approve(parts.code_for(inbound), alice.id, origin=Origin.WEB)
    assert set(parts.issuer.identities) == {device.device_id}
    ((reply_to, reply),) = parts.replies.sent
    assert reply_to == inbound.request.reply_to and isinstance(reply, ApprovedReply)
    credentials = keys.open_credentials(private_key, reply)
    assert (credentials.username, credentials.password) == (
        device.device_id,
        parts.issuer.identities[device.device_id],
    )
    assert credentials.password not in repr(reply)
    assert [d.device_id for d in parts.links.list_devices(alice.id)] == [device.device_id]


def test_a_denial_is_pushed_and_the_code_is_spent(parts: Parts) -> None:
    inbound, _ = parts.ask()
    code = parts.code_for(inbound)
    parts.links.deny(code, None, origin=Origin.CLI)
    ((_, reply),) = parts.replies.sent
    assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.ACCESS_DENIED
    assert parts.links.lookup_code(code).status is CodeStatus.DENIED
    with pytest.raises(LinkDecisionError):
        parts.links.deny(code, None, origin=Origin.CLI)


def test_an_approval_the_broker_does_not_answer_stores_nothing_and_can_be_tried_again(parts: Parts) -> None:
    alice = parts.accounts.create("alice", "correct horse battery")
    inbound, _ = parts.ask()
    code = parts.code_for(inbound)
    parts.issuer.refuse_next = True
    with pytest.raises(LinkHubError):
        parts.links.approve(code, alice.id, origin=Origin.WEB)
    assert parts.issuer.identities == {} and parts.replies.sent == []
    assert parts.links.lookup_code(code).status is CodeStatus.PENDING
    device = parts.links.approve(code, alice.id, origin=Origin.WEB)  # the person tries again
    assert set(parts.issuer.identities) == {device.device_id}


def test_an_unlink_revokes_the_identity_and_clears_what_the_device_retained(parts: Parts) -> None:
    alice = parts.accounts.create("alice", "correct horse battery")
    inbound, _ = parts.ask()
    device = parts.links.approve(parts.code_for(inbound), alice.id, origin=Origin.WEB)
    parts.links.unlink(device.device_id, alice.id, origin=Origin.WEB)
    assert parts.issuer.identities == {} and parts.retained.cleared == [device.device_id]
    assert parts.links.list_devices(alice.id) == [] and parts.links.was_unlinked(device.device_id)


def test_an_unlink_whose_clearing_cannot_run_leaves_it_recorded_as_unfinished(parts: Parts) -> None:
    alice = parts.accounts.create("alice", "correct horse battery")
    inbound, _ = parts.ask()
    device = parts.links.approve(parts.code_for(inbound), alice.id, origin=Origin.WEB)
    parts.retained.unreachable = True
    parts.links.unlink(device.device_id, alice.id, origin=Origin.WEB)  # unlinked all the same
    assert parts.links.unfinished_clearings() == [device.device_id]
    parts.links.clearing_finished(device.device_id)
    assert parts.links.unfinished_clearings() == []


def test_the_reconciler_removes_a_recorded_identity_whose_approval_never_committed(parts: Parts) -> None:
    """Recorded here, on the broker, no device row: a hub died between the two.
    Removed once older than an approval can take; one this database never
    recorded is another hub's, and stays."""
    another_hubs = "dev-0123456789ab"
    parts.issuer.identities[another_hubs] = "another hub's device, on a shared broker"
    cut_short = "dev-ba9876543210"
    parts.links.decisions.record_identity(cut_short, "request-under-way-000", parts.clock())
    parts.issuer.identities[cut_short] = "issued, then the hub died before its commit"
    assert parts.links.reconcile_identities() == []  # it may still be under way
    parts.clock.advance(APPROVAL_GRACE_S + 1)
    assert parts.links.reconcile_identities() == [cut_short]
    assert set(parts.issuer.identities) == {another_hubs}
