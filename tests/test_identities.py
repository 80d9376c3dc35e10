"""Broker identities and the database agree (issue 18 §4, issue 19 item 17), on a
real mosquitto 2.0 and on SQLite and PostgreSQL: a hub that dies between
creating a device's broker login and committing its device row leaves a login
the next hub removes; a login only the broker holds can be unlinked by hand;
a device approved but never connected loses its credentials after a while."""

from __future__ import annotations

import secrets
import socket
import threading
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, wait_until
from device_doubles import BootstrapDevice, RawClient
from sqlmodel import Session, select
from test_web import PASSWORD, control_app, page, signed_in_client

from hub.daemon import MAINTENANCE_INTERVAL_S, Hub
from hub.errors import LinkHubError, UnlinkRefused
from hub.services import metrics
from hub.services.activity import ActivityKind
from hub.services.links import APPROVAL_GRACE_S, CredentialIssuer, RevokedReason
from hub.store.models import BrokerIdentity, LinkRequestRecord
from linkhub import cli
from linkhub_protocol import ApprovedReply, DeviceInfo, ErrorCode, ErrorReply

LAMP = DeviceInfo(name="Desk Lamp", model="LMP-3")


class HubDied(BaseException):
    """The hub process is gone: nothing after this point runs (a SIGKILL, the OOM killer)."""


class DiesAfterIssuing:
    """The hub's issuer, in a hub that dies right after the broker made the device's
    login: the approval's database commit never happens, and a dead process sends
    the broker nothing more (its clean-up included)."""

    def __init__(self, issuer: CredentialIssuer) -> None:
        self._issuer = issuer
        self.issued: list[tuple[str, str]] = []

    def issue_device(self, device_id: str, password: str) -> None:
        self._issuer.issue_device(device_id, password)
        self.issued.append((device_id, password))
        raise HubDied

    def revoke_device(self, device_id: str) -> None:
        raise LinkHubError("the hub is dead")

    def device_clients(self) -> set[str]:
        raise LinkHubError("the hub is dead")


def can_connect(broker: RunningBroker, device_id: str, password: str) -> bool:
    client = RawClient(broker.port, device_id, password, client_id=device_id)
    try:
        return not client.connack_reason.is_failure
    finally:
        client.close()


def identity_row(hub: Hub, device_id: str) -> BrokerIdentity:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        row = session.get(BrokerIdentity, device_id)
        assert row is not None
        return row


def counted(hub: Hub, name: str) -> float:
    assert hub.engine is not None
    value = metrics.of(hub.engine).registry.get_sample_value(f"{name}_total")
    assert value is not None
    return value


def test_a_hub_killed_mid_approval_leaves_no_login_the_next_hub_keeps(
    make_hub: HubFactory, broker: RunningBroker, database_url: str, tmp_path: Path
) -> None:
    clock = FakeClock()
    data_dir = tmp_path / "hub"
    first = make_hub(data_dir=data_dir, database_url=database_url, clock=clock)
    alice = first.accounts.create("alice", PASSWORD).id
    device = BootstrapDevice(broker.port, LAMP)
    try:
        code = device.request().user_code
        dying = DiesAfterIssuing(first.links.context.issuer)
        first.links.context.issuer = dying
        with pytest.raises(HubDied):
            first.links.approve(code, alice)
        [(device_id, password)] = dying.issued
        # What the killed hub left: a login on the broker, no device row, the intent recorded.
        assert can_connect(broker, device_id, password)
        assert first.links.list_devices() == []
        row = identity_row(first, device_id)
        assert (row.linked_at_s, row.revoked_at_s) == (None, None)
        first.stop()

        # Restarted on the same database and broker, later than an approval can take.
        clock.advance(APPROVAL_GRACE_S + 1)
        second = make_hub(data_dir=data_dir, database_url=database_url, clock=clock)
        assert not can_connect(broker, device_id, password)
        row = identity_row(second, device_id)
        assert row.revoked_at_s == clock.now_s and row.revoked_reason == RevokedReason.ORPHAN
        assert counted(second, "linkhub_orphan_identities_revoked") == 1
        assert second.links.reconcile_identities() == []  # once is enough

        # The code was never used: the person approves it again, and the device links.
        linked = second.links.approve(code, alice)
        reply = device.wait_reply()
        assert isinstance(reply, ApprovedReply) and reply.device_id == linked.device_id != device_id
        credentials = device.credentials(reply)
        assert can_connect(broker, credentials.username, credentials.password)
    finally:
        device.close()


def test_the_reconciler_spares_approvals_under_way_and_other_hubs_logins(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock)
    issuer = hub.links.context.issuer
    # Recorded by this hub a moment ago, approval not committed yet: under way.
    young, young_password = f"dev-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    hub.links.decisions.record_identity(young, "req-under-way", clock())
    issuer.issue_device(young, young_password)
    # Made by a hub with another database on the same broker: not ours.
    foreign, foreign_password = f"dev-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    issuer.issue_device(foreign, foreign_password)
    try:
        assert hub.links.reconcile_identities() == []
        assert can_connect(broker, young, young_password) and can_connect(broker, foreign, foreign_password)

        # The hub's periodic run, once the approval has had its time: removed.
        clock.advance(max(APPROVAL_GRACE_S, MAINTENANCE_INTERVAL_S) + 1)
        wait_until(lambda: identity_row(hub, young).revoked_at_s is not None, what="the periodic reconcile")
        assert not can_connect(broker, young, young_password)
        assert can_connect(broker, foreign, foreign_password)
    finally:
        issuer.revoke_device(young)
        issuer.revoke_device(foreign)


def test_unlink_removes_a_login_only_the_broker_holds(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """`linkhub devices unlink ID` (the operator: no account) removes a device login
    no device row names, e.g. one left before this hub recorded intents first;
    a person signed in learns nothing of it."""
    hub = make_hub()
    alice = hub.accounts.create("alice", PASSWORD).id
    stray, password = f"dev-{secrets.token_hex(6)}", secrets.token_urlsafe(24)
    hub.links.context.issuer.issue_device(stray, password)
    try:
        with pytest.raises(UnlinkRefused) as refused:
            hub.links.unlink(stray, alice, origin="web")
        assert refused.value.reason == "unknown_device"
        assert can_connect(broker, stray, password)

        # What `linkhub devices unlink ID` asks of the control socket.
        removed = control_app(hub).test_client().delete(f"/v1/devices/{stray}")
        assert removed.status_code == 200, removed.get_json()
        assert removed.get_json()["device_id"] == stray and removed.get_json()["account"] is None
        assert not can_connect(broker, stray, password)
        with pytest.raises(UnlinkRefused) as gone:  # and now it is unknown everywhere
            hub.links.unlink(stray, None, origin="cli")
        assert gone.value.reason == "unknown_device"
    finally:
        hub.links.context.issuer.revoke_device(stray)
    # The hub's own logins are not device logins: unlink never reaches them.
    with pytest.raises(UnlinkRefused):
        hub.links.unlink("linkhub-admin", None, origin="cli")


def test_a_device_approved_but_never_connected_loses_its_credentials(
    make_hub: HubFactory, broker: RunningBroker, database_url: str
) -> None:
    clock = FakeClock()
    hub = make_hub(database_url=database_url, clock=clock)
    lifetime_s = hub.config.unconfirmed_device_lifetime_s
    assert lifetime_s == 86400  # the documented default
    client = signed_in_client(hub, clock)
    alice = hub.accounts.find("alice").id  # type: ignore[union-attr]
    device = BootstrapDevice(broker.port, LAMP)
    try:
        approved = hub.links.approve(device.request().user_code, alice)
        reply = device.wait_reply()
        assert isinstance(reply, ApprovedReply)
        credentials = device.credentials(reply)  # ...and the device never uses them
        waiting = page(client.get("/devices"))
        assert "Waiting for first connection" in waiting and "its credentials expire" in waiting

        clock.advance(lifetime_s - 60)  # not yet: still linked, still working
        assert hub.links.expire_unconfirmed() == []
        assert can_connect(broker, credentials.username, credentials.password)

        clock.advance(61)  # the hub's own periodic run expires it
        wait_until(lambda: hub.links.list_devices() == [], what="the expiry of the unused credentials")
        assert not can_connect(broker, credentials.username, credentials.password)
        assert hub.engine is not None
        with Session(hub.engine) as session:
            (record,) = session.exec(
                select(LinkRequestRecord).where(LinkRequestRecord.device_id == approved.device_id)
            ).all()
            assert record.issued_password is None
        assert identity_row(hub, approved.device_id).revoked_reason == RevokedReason.NEVER_CONNECTED
        assert counted(hub, "linkhub_unconfirmed_devices_expired") == 1

        device.send()  # a late poll is not handed the dead credentials
        late = device.wait_reply()
        assert isinstance(late, ErrorReply) and late.error is ErrorCode.ALREADY_LINKED

        # The day the clock moved outlived the web session (12 h on plain HTTP): sign in again.
        client = signed_in_client(hub, clock)
        shown = page(client.get("/devices"))
        assert 'data-status="credentials-expired"' in shown and "never connected" in shown
        assert "Desk Lamp (LMP-3)" in shown and "link it again" in shown
        (event,) = [e for e in hub.activity.recent(alice) if e.kind is ActivityKind.DEVICE_UNLINKED]
        assert "never connected" in event.detail and "24 h" in event.detail
    finally:
        device.close()


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["link", "approve", "BCDF-GHJK", "--account", "alice"], "approve the code again"),
        (["devices", "unlink", "dev-0a1b2c3d4e5f"], "linkhub devices unlink dev-0a1b2c3d4e5f` again is safe"),
    ],
    ids=["approve", "unlink"],
)
def test_the_command_says_what_to_do_when_the_hub_dies_mid_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], says: str
) -> None:
    """A hub that dies while it handles the command closes the control socket
    without an answer: the command says so and what to check, no traceback."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(data_dir / "hub.sock"))
    listener.listen(1)

    def die_mid_request() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)  # the request arrived...
        connection.close()  # ...and the hub was gone before it answered

    dying = threading.Thread(target=die_mid_request, daemon=True)
    dying.start()
    try:
        exit_code = cli.main([*argv, "--data-dir", str(data_dir)])
    finally:
        dying.join(timeout=10)
        listener.close()
    err = capsys.readouterr().err
    assert exit_code == 1
    assert "Traceback" not in err and "RemoteDisconnected" not in err
    assert err.startswith("linkhub: the hub stopped answering while ")
    assert "may or may not have been done" in err and says in err
