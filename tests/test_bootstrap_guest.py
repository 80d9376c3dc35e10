"""A guest on the bootstrap login against a device that is linking or linked,
and against the pending cap (issue 19, items 4, 7, 10 and 11), on the real broker."""

from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path

from conftest import HubFactory, RunningBroker, free_port
from device_doubles import DeviceThread, RawClient, bootstrap_client
from test_link_requests import new_request, stored_requests, subscribed

import linkhub_protocol as protocol
from hub.broker.dynsec import DynSecAdmin, service_client_id
from hub.broker.managed import ADMIN_USERNAME, ManagedBroker, ManagedBrokerConfig
from hub.core.rate_limits import LimitsPolicy
from hub.daemon import Hub
from linkhub_protocol import ErrorCode, ErrorReply, PendingReply


def test_an_error_without_request_id_on_a_devices_reply_topic_does_not_end_its_attempt(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    """A guest who learnt a device's reply topic names it in garbage: the hub's
    error has `request_id: null`, which the device takes as not final."""
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    reply_to = protocol.reply_topic(device.saved_state()["pending"]["reply_token"])
    guest = bootstrap_client(broker.port)
    try:
        assert guest.publish(guest.request_topic, b"not json", response_topic=reply_to)
        event = device.next_event()
        assert event["event"] == "warning" and event["error"] == "invalid_request", event
    finally:
        guest.close()
    hub.links.approve(code, hub.accounts.create("alice", "correct horse battery").id)
    assert device.next_event()["event"] == "linked"
    assert device.join() == 0


def _linked_device(admin: DynSecAdmin, port: int, device_id: str) -> tuple[RawClient, threading.Event]:
    """A device identity issued as an approval issues it, connected, and an
    event set when the broker ends its session."""
    password = secrets.token_urlsafe(24)
    admin.issue_device(device_id, password)
    device = RawClient(port, device_id, password, client_id=device_id)
    assert not device.connack_reason.is_failure, device.connack_reason
    lost = threading.Event()
    device.client.on_disconnect = lambda *_args: lost.set()
    return device, lost


def test_the_bootstrap_login_cannot_take_a_linked_devices_client_id(hub: Hub, broker: RunningBroker) -> None:
    """Issue 19 item 4: the guard plugin refuses the bootstrap login any client
    id in the devices' (`dev-`) or the hub's (`linkhub-`) space, before
    mosquitto takes a session over; the device stays connected. Ids outside
    those spaces still connect."""
    assert broker.broker.bootstrap_guard is not None, broker.broker.bootstrap_guard_problem
    admin = hub.broker_admin
    assert admin is not None
    device_id = f"dev-{secrets.token_hex(6)}"
    device, lost = _linked_device(admin, broker.port, device_id)
    try:
        for taken in (device_id, f"{device_id}-", "dev-", service_client_id("hub"), "linkhub-links-00"):
            guest = bootstrap_client(broker.port, client_id=taken)
            try:
                assert guest.connack_reason.is_failure, taken
                assert guest.connack_reason.value == 0x87, guest.connack_reason  # Not authorized
            finally:
                guest.close()
        for free in ("lh-boot-5d1c0e7a9b2f4c36", "DEV-A1B2C3D4E5F6", "device-1", "linkhub"):
            guest = bootstrap_client(broker.port, client_id=free)
            try:
                assert not guest.connack_reason.is_failure, (free, guest.connack_reason)
            finally:
                guest.close()
        # A wrong bootstrap password is still dynamic security's to refuse.
        wrong = RawClient(broker.port, protocol.BOOTSTRAP_USERNAME, "not-the-password", client_id="lh-boot-x")
        try:
            assert wrong.connack_reason.is_failure
        finally:
            wrong.close()
        # The device itself still connects with its own id: the guard looks at the bootstrap login only.
        assert not lost.is_set()
        assert device.publish(protocol.device_status_topic(device_id), b'{"v":1,"online":true}')
    finally:
        device.close()
        admin.revoke_device(device_id)


def test_without_the_guard_a_guest_knocks_a_device_off(tmp_path: Path) -> None:
    """What the guard prevents, on a broker started without it (the code before
    issue 19's guard): a bootstrap connect with the device's exact id takes its
    session over (MQTT-3.1.4-3)."""
    unguarded = ManagedBroker(
        ManagedBrokerConfig(tmp_path / "mosquitto", "127.0.0.1", free_port(), bootstrap_guard=False)
    )
    unguarded.start()
    try:
        admin = DynSecAdmin(unguarded.address, ADMIN_USERNAME, unguarded.admin_password)
        admin.start()
        admin.ensure_bootstrap(per_client=False)
        device_id = f"dev-{secrets.token_hex(6)}"
        device, lost = _linked_device(admin, unguarded.config.port, device_id)
        try:
            guest = bootstrap_client(unguarded.config.port, client_id=device_id)
            assert not guest.connack_reason.is_failure
            assert lost.wait(5)
            guest.close()
        finally:
            device.close()
            admin.stop()
    finally:
        unguarded.stop()


def test_one_connection_cannot_fill_the_pending_cap(make_hub: HubFactory, broker: RunningBroker) -> None:
    """One client id (on mosquitto 2.1+, one connection) holds at most as many
    codes in a lifetime as it may ask for in a rate window: here 3, of 100."""
    hub = make_hub(limits=LimitsPolicy(link_requests_per_client="3 per second"))
    flood, flood_reply = subscribed(broker.port)
    lamp, lamp_reply = subscribed(broker.port)
    try:
        codes = 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            _request_id, reply = new_request(flood, flood_reply)
            if isinstance(reply, PendingReply):
                codes += 1
            elif isinstance(reply, ErrorReply) and reply.error is ErrorCode.TOO_MANY_PENDING:
                break
        else:
            raise AssertionError("the flooding client was never refused too_many_pending")
        assert codes == 3 and stored_requests(hub) == 3
        assert isinstance(new_request(lamp, lamp_reply)[1], PendingReply)  # the honest device's path
    finally:
        flood.close()
        lamp.close()
