"""A guest on the bootstrap login against a device that is linking or linked,
and against the pending cap (issue 19, items 4, 7 and 11), on the real broker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from conftest import HubFactory, RunningBroker
from device_doubles import DeviceThread, RawClient, bootstrap_client
from test_link_requests import new_request, stored_requests, subscribed

import linkhub_protocol as protocol
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


def test_a_guest_who_does_not_know_a_devices_client_id_cannot_knock_it_off(
    hub: Hub, broker: RunningBroker
) -> None:
    """What mosquitto 2.0 leaves (docs/security.md, "Knocking a device off"): a
    connect with a device's exact client id takes its session over. The device's
    id has 48 random bits and its role binds it, so a guess is what a guest has;
    ids that differ in any way leave the device connected."""
    device_id = "dev-" + "a1b2c3d4e5f6"
    password = "p" * 32
    hub._admin.issue_device(device_id, password)  # type: ignore[union-attr]
    device = RawClient(broker.port, device_id, password, client_id=device_id)
    lost = threading.Event()
    device.client.on_disconnect = lambda *_args: lost.set()
    try:
        assert not device.connack_reason.is_failure
        for guess in ("dev-a1b2c3d4e5f7", "DEV-A1B2C3D4E5F6", f"{device_id}-", device_id[:-1]):
            guest = bootstrap_client(broker.port, client_id=guess)
            guest.close()
        assert not lost.wait(1.0)
        # ...and the same id, known, does take it over (the limit stated in docs/security.md).
        guest = bootstrap_client(broker.port, client_id=device_id)
        assert lost.wait(5)
        guest.close()
    finally:
        device.close()
        hub._admin.revoke_device(device_id)  # type: ignore[union-attr]


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
