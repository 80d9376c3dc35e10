"""Link requests on a real mosquitto: credentials sealed to the device's key, the
key every request must carry, the client id in the request topic, and the
limits on new requests (per client, in total, and the cap on pending codes)."""

from __future__ import annotations

import base64
import json
import queue
import secrets
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker
from device_doubles import (
    BootstrapDevice,
    DeviceThread,
    RawClient,
    bootstrap_client,
    link_request,
    new_reply_topic,
)
from sqlmodel import Session, func, select

import linkhub_protocol as protocol
from firmware_sim import keys
from hub.broker.connection import BrokerAddress
from hub.broker.dynsec import BOOTSTRAP_ROLE, Acl, DynSecAdmin, bootstrap_acls
from hub.core.rate_limits import LimitsPolicy
from hub.daemon import Hub
from hub.store.models import LinkRequestRecord
from linkhub_protocol import ApprovedReply, DeviceInfo, ErrorCode, ErrorReply, PendingReply

LAMP = DeviceInfo("Kitchen Lamp", "LMP-1", address="127.0.0.1")


def owner(hub: Hub) -> int:
    return hub.accounts.create("alice", "correct horse battery").id


def stored_requests(hub: Hub) -> int:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        return session.exec(select(func.count()).select_from(LinkRequestRecord)).one()


def stored(hub: Hub, request_id: str) -> LinkRequestRecord | None:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        return session.get(LinkRequestRecord, request_id)


def answer(client: RawClient) -> protocol.LinkReply:
    parsed = protocol.parse_link_reply(client.next_message().payload)
    assert not isinstance(parsed, protocol.Rejection), parsed
    return parsed


# --- sealed credentials ------------------------------------------------------------------
def test_credentials_travel_sealed_and_another_client_on_the_reply_topic_learns_nothing(
    hub: Hub, broker: RunningBroker
) -> None:
    """The worst case for an unlinked snoop: it knows the reply topic (it listened
    on the LAN, or the device used a bad token) and subscribes to it, which the
    broker allows. It receives the approved reply, byte for byte what went on the
    wire, and still cannot read the password."""
    device = BootstrapDevice(broker.port, LAMP)
    snoop = bootstrap_client(broker.port)
    try:
        assert snoop.subscribe(device.reply_to)
        pending = device.request()
        assert isinstance(answer(snoop), PendingReply)
        record = stored(hub, device.request_id)
        assert record is not None and record.client_id == device.client.client_id
        assert record.device_public_key == keys.public_key(device.private_key)

        hub.links.approve(pending.user_code, owner(hub))
        approved = device.wait_reply()
        assert isinstance(approved, ApprovedReply)
        credentials = device.credentials(approved)
        assert credentials.username == credentials.client_id == approved.device_id
        assert len(credentials.password) >= 24

        wire = snoop.next_message().payload
        assert credentials.password.encode() not in wire and b"password" not in wire
        assert set(json.loads(wire)) == {
            "v",
            "type",
            "status",
            "request_id",
            "device_id",
            "sealed_credentials",
        }
        seen = protocol.parse_link_reply(wire)
        assert isinstance(seen, ApprovedReply)
        with pytest.raises(keys.UnreadableCredentials):
            keys.open_credentials(keys.new_private_key(), seen)

        # A poll gets the same credentials, sealed afresh to the same key.
        device.send()
        again = device.wait_reply()
        assert isinstance(again, ApprovedReply) and again.sealed_credentials != approved.sealed_credentials
        assert device.credentials(again) == credentials

        # ...and they are the real thing: the broker takes them.
        own = RawClient(
            broker.port, credentials.username, credentials.password, client_id=credentials.client_id
        )
        assert not own.connack_reason.is_failure
        own.close()
    finally:
        snoop.close()
        device.close()


def test_the_simulated_device_opens_its_credentials(hub: Hub, broker: RunningBroker, tmp_path: Path) -> None:
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    saved = device.saved_state()["pending"]
    pending_key = saved["private_key"]
    record = stored(hub, saved["request_id"])
    assert record is not None and record.device_public_key == keys.public_key(pending_key)
    assert record.client_id is not None and record.client_id.startswith("lh-boot-")
    hub.links.approve(code, owner(hub))
    assert device.join() == 0
    state = device.saved_state()
    assert "pending" not in state and len(state["mqtt"]["password"]) >= 24  # the key went with the attempt


def bad_key_request(client: RawClient, public_key: str | None) -> ErrorReply:
    reply_to = new_reply_topic()
    assert client.subscribe(reply_to)
    body = json.loads(protocol.encode(link_request(secrets.token_urlsafe(18), reply_to, LAMP)))
    if public_key is None:
        del body["public_key"]
    else:
        body["public_key"] = public_key
    assert client.publish(client.request_topic, json.dumps(body).encode())
    refused = answer(client)
    assert isinstance(refused, ErrorReply) and refused.request_id == body["request_id"]
    return refused


def test_a_request_without_a_public_key_is_refused_and_nothing_is_stored(
    hub: Hub, broker: RunningBroker
) -> None:
    client = bootstrap_client(broker.port)
    try:
        refused = bad_key_request(client, None)
        assert refused.error is ErrorCode.INVALID_REQUEST
        assert "public_key" in refused.error_description and "sealed" in refused.error_description
        # A key libsodium refuses (a small-order point) passes the codec but not the hub.
        small_order = base64.b64encode(bytes([1]) + bytes(31)).decode()
        refused = bad_key_request(client, small_order)
        assert refused.error is ErrorCode.INVALID_REQUEST and "not a usable" in refused.error_description
        assert stored_requests(hub) == 0
    finally:
        client.close()


def test_a_request_under_a_client_id_the_hub_cannot_take_is_answered(hub: Hub, broker: RunningBroker) -> None:
    """A client id that is not one topic level of [A-Za-z0-9_-] (here, a dot)."""
    client = bootstrap_client(broker.port, client_id="lamp.kitchen")
    try:
        reply_to = new_reply_topic()
        assert client.subscribe(reply_to)
        request = link_request(secrets.token_urlsafe(18), reply_to, LAMP)
        assert client.publish(f"{protocol.LINK_REQUEST_ROOT}/lamp.kitchen", protocol.encode(request))
        refused = answer(client)
        assert isinstance(refused, ErrorReply) and refused.error is ErrorCode.INVALID_REQUEST
        assert "client id" in refused.error_description
        assert stored_requests(hub) == 0
    finally:
        client.close()


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_both_mqtt_versions_publish_under_their_client_id(
    hub: Hub, broker: RunningBroker, mqtt5: bool
) -> None:
    client = bootstrap_client(broker.port, mqtt5=mqtt5)
    try:
        reply_to = new_reply_topic()
        assert client.subscribe(reply_to)
        request = link_request(secrets.token_urlsafe(18), reply_to, LAMP)
        client.publish(client.request_topic, protocol.encode(request))
        assert isinstance(answer(client), PendingReply)
        record = stored(hub, request.request_id)
        assert record is not None and record.client_id == client.client_id
    finally:
        client.close()


# --- limits --------------------------------------------------------------------------------
def new_request(client: RawClient, reply_to: str) -> tuple[str, protocol.LinkReply]:
    request = link_request(secrets.token_urlsafe(18), reply_to, LAMP)
    assert client.publish(client.request_topic, protocol.encode(request))
    reply = answer(client)
    assert reply.request_id == request.request_id
    return request.request_id, reply


def subscribed(port: int, **kwargs: object) -> tuple[RawClient, str]:
    client = bootstrap_client(port, **kwargs)  # type: ignore[arg-type]
    reply_to = new_reply_topic()
    assert client.subscribe(reply_to)
    return client, reply_to


def test_a_flooding_client_gets_slow_down_while_another_still_gets_a_code(
    make_hub: HubFactory, broker: RunningBroker, caplog: pytest.LogCaptureFixture
) -> None:
    hub = make_hub(limits=LimitsPolicy(link_requests_per_client="3 per minute"))
    flood, flood_reply = subscribed(broker.port)
    lamp, lamp_reply = subscribed(broker.port)
    try:
        first_id, first = new_request(flood, flood_reply)
        for _ in range(2):
            assert isinstance(new_request(flood, flood_reply)[1], PendingReply)
        refused_id, refused = new_request(flood, flood_reply)
        assert isinstance(refused, ErrorReply) and refused.error is ErrorCode.SLOW_DOWN
        assert refused.retry_after is not None and 1 <= refused.retry_after <= 60
        assert "this client (at most 3 per minute)" in refused.error_description
        assert stored(hub, refused_id) is None and stored_requests(hub) == 3  # nothing written
        for _ in range(5):  # the flood goes on: refused alike, and the log says so once
            assert isinstance(new_request(flood, flood_reply)[1], ErrorReply)
        assert stored_requests(hub) == 3
        lines = [
            r.getMessage() for r in caplog.records if "new link request(s) over a limit" in r.getMessage()
        ]
        assert len(lines) == 1 and lines[0].startswith("refused 1 new link request(s)"), lines
        assert flood.client_id in lines[0]

        assert isinstance(new_request(lamp, lamp_reply)[1], PendingReply)  # someone else is served

        # Polls of a request the hub has are answered, however often: they are not new.
        assert isinstance(first, PendingReply)
        request = link_request(first_id, flood_reply, LAMP)
        for _ in range(5):
            assert flood.publish(flood.request_topic, protocol.encode(request))
            poll = answer(flood)
            assert isinstance(poll, PendingReply) and poll.user_code == first.user_code
    finally:
        flood.close()
        lamp.close()


def test_a_flood_under_many_client_ids_meets_the_total(make_hub: HubFactory, broker: RunningBroker) -> None:
    hub = make_hub(
        limits=LimitsPolicy(link_requests_per_client="100 per minute", link_requests_total="4 per minute")
    )
    clients = [subscribed(broker.port) for _ in range(5)]
    try:
        replies = [new_request(client, reply_to)[1] for client, reply_to in clients]
        assert all(isinstance(r, PendingReply) for r in replies[:4])
        assert isinstance(replies[4], ErrorReply) and replies[4].error is ErrorCode.SLOW_DOWN
        assert "at most 4 per minute from all clients" in replies[4].error_description
        assert stored_requests(hub) == 4
    finally:
        for client, _ in clients:
            client.close()


def test_the_pending_cap_holds_until_a_code_is_decided(make_hub: HubFactory, broker: RunningBroker) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock, code_lifetime_s=600, limits=LimitsPolicy(max_pending_requests=2))
    clients = [subscribed(broker.port) for _ in range(3)]
    try:
        (_, first), (_, second) = (new_request(*clients[0]), new_request(*clients[1]))
        assert isinstance(first, PendingReply) and isinstance(second, PendingReply)
        clock.advance(100)
        third_id, third = new_request(*clients[2])
        assert isinstance(third, ErrorReply) and third.error is ErrorCode.TOO_MANY_PENDING
        assert third.retry_after == 501  # when the first code expires, by the hub's clock
        assert stored(hub, third_id) is None and stored_requests(hub) == 2

        hub.links.deny(first.user_code, None)  # a slot frees up...
        assert isinstance(answer(clients[0][0]), ErrorReply)  # (the denied device is told)
        client, reply_to = clients[2]
        again = link_request(third_id, reply_to, LAMP)  # ...and the same request, resent, gets it
        assert client.publish(client.request_topic, protocol.encode(again))
        assert isinstance(answer(client), PendingReply)
        assert stored_requests(hub) == 3
    finally:
        for client, _ in clients:
            client.close()


def test_the_simulated_device_waits_out_a_busy_hub(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """too_many_pending is not final: the device says it waits, then resends the
    same request and gets its code once a slot is free."""
    clock = FakeClock()
    hub = make_hub(clock=clock, code_lifetime_s=60, limits=LimitsPolicy(max_pending_requests=1))
    holder, reply_to = subscribed(broker.port)
    try:
        _, held = new_request(holder, reply_to)
        assert isinstance(held, PendingReply)
        clock.advance(59)  # the held code expires in a second, by the hub's clock
        device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
        waiting = device.next_event()
        assert waiting["event"] == "waiting" and waiting["error"] == "too_many_pending"
        assert 1 <= waiting["retry_after"] <= 5
        clock.advance(2)  # the held code expired: its slot is free
        event = device.next_event()
        while event["event"] == "waiting":
            event = device.next_event()
        assert event["event"] == "code"
        hub.links.approve(event["user_code"], owner(hub))
        assert device.join() == 0
        assert device.next_event()["event"] == "linked"
    finally:
        holder.close()
    with pytest.raises(queue.Empty):
        device.events.get_nowait()


# --- the bootstrap role on a broker an older hub set up ---------------------------------------
def test_an_older_hubs_bootstrap_rules_are_replaced(make_hub: HubFactory, own_broker: RunningBroker) -> None:
    """A broker set up by a hub from before per-client request topics lets the
    bootstrap identity publish to `linkhub/v1/link/request`; a hub of today
    removes that rule, keeps the rest, and adds the per-client one."""
    old = [Acl("publishClientSend", protocol.LINK_REQUEST_ROOT, True)] + [
        acl for acl in bootstrap_acls(per_client=False) if acl.acltype != "publishClientSend"
    ]
    external = own_broker.external
    admin = DynSecAdmin(
        BrokerAddress("127.0.0.1", own_broker.port), external.admin_username, external.admin_password
    )
    admin.start()
    try:
        admin.ensure_role(BOOTSTRAP_ROLE, old)
        hub = make_hub(on_broker=own_broker)
        (role,) = admin.call([{"command": "getRole", "rolename": BOOTSTRAP_ROLE}])
        rules = {
            Acl(a["acltype"], a["topic"], a["allow"], a.get("priority", 0))
            for a in role["data"]["role"]["acls"]
        }
        assert hub.broker_expands_client_id is not None
        assert rules == set(bootstrap_acls(per_client=hub.broker_expands_client_id))
    finally:
        admin.stop()
    client = bootstrap_client(own_broker.port)
    try:
        assert not client.publish(protocol.LINK_REQUEST_ROOT, b"{}")  # the old topic: refused now
        reply_to = new_reply_topic()
        assert client.subscribe(reply_to)
        assert isinstance(new_request(client, reply_to)[1], PendingReply)
    finally:
        client.close()
