"""The link flow on a real mosquitto: a simulated device against an in-process hub,
with the person's approval made through the hub's own service functions."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, start_broker, wait_until
from device_doubles import DeviceThread, RawClient, bootstrap_client, link_request, new_reply_topic

import linkhub_protocol as protocol
from hub.daemon import Hub
from hub.errors import LinkDecisionError
from hub.services.links import CodeStatus
from linkhub_protocol import DeviceInfo, ErrorCode, ErrorReply, PendingReply


def owner(hub: Hub, name: str = "alice") -> int:
    return hub.accounts.create(name, "correct horse battery").id


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_device_links_and_reconnects_with_its_own_credentials(
    make_hub: HubFactory, database_url: str, broker: RunningBroker, tmp_path: Path, mqtt5: bool
) -> None:
    hub = make_hub(database_url=database_url)
    account_id = owner(hub)
    device = DeviceThread(broker.port, tmp_path / "lamp.json", mqtt5=mqtt5).start()
    code = device.wait_code()
    assert len(code) == 9 and code[4] == "-"

    lookup = hub.links.lookup_code(code.lower().replace("-", " "))
    assert lookup.status is CodeStatus.PENDING
    assert lookup.request is not None and lookup.request.device_name == "Kitchen Lamp"

    linked = hub.links.approve(code, account_id)
    assert device.next_event()["event"] == "linked"
    assert device.join() == 0

    state = device.saved_state()
    assert state["device_id"] == linked.device_id
    assert state["mqtt"]["username"] == state["mqtt"]["client_id"] == linked.device_id
    assert state["mqtt"]["port"] == broker.port and len(state["mqtt"]["password"]) >= 24

    # Linked only once the device came back with its new credentials.
    wait_until(lambda: hub.links.list_devices(account_id)[0].confirmed, what="device confirmed")
    (listed,) = hub.links.list_devices(account_id)
    assert listed.name == "Kitchen Lamp" and listed.last_seen_at_s is not None
    assert hub.links.lookup_code(code).status is CodeStatus.USED


def test_deny_reaches_the_device(hub: Hub, broker: RunningBroker, tmp_path: Path) -> None:
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    hub.links.deny(code, None)
    event = device.next_event()
    assert event["event"] == "error" and event["error"] == "access_denied"
    assert device.join() == 1
    assert hub.links.lookup_code(code).status is CodeStatus.DENIED
    with pytest.raises(LinkDecisionError) as info:
        hub.links.approve(code, owner(hub))
    assert info.value.reason == CodeStatus.DENIED
    assert "mqtt" not in device.saved_state()


def test_expiry_uses_the_hubs_clock_not_sleep(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock, code_lifetime_s=600)
    account_id = owner(hub)
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    clock.advance(599)
    assert hub.links.lookup_code(code).status is CodeStatus.PENDING
    clock.advance(1)
    assert hub.links.lookup_code(code).status is CodeStatus.EXPIRED
    event = device.next_event()
    assert (event["event"], event["error"]) == ("error", "expired_token")
    assert device.join() == 1
    with pytest.raises(LinkDecisionError) as info:
        hub.links.approve(code, account_id)
    assert info.value.reason == CodeStatus.EXPIRED
    assert hub.links.list_devices() == []


def test_unknown_malformed_and_used_codes_are_told_apart(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    account_id = owner(hub)
    assert hub.links.lookup_code("hello").status is CodeStatus.MALFORMED
    assert hub.links.lookup_code("BCDF-GHJK").status is CodeStatus.UNKNOWN
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    hub.links.approve(code, account_id)
    assert device.join() == 0
    with pytest.raises(LinkDecisionError) as info:
        hub.links.approve(code, account_id)
    assert info.value.reason == CodeStatus.USED
    assert len(hub.links.list_devices()) == 1


def request(client: RawClient, request_id: str, reply_to: str, **device: str) -> None:
    info = DeviceInfo(device.get("name", "Desk Fan"), device.get("model", "FAN-2"))
    assert client.publish(client.request_topic, protocol.encode(link_request(request_id, reply_to, info)))


def reply(client: RawClient) -> protocol.LinkReply:
    parsed = protocol.parse_link_reply(client.next_message().payload)
    assert not isinstance(parsed, protocol.Rejection), parsed
    return parsed


def test_a_repeated_request_gets_the_same_code(hub: Hub, broker: RunningBroker) -> None:
    client = bootstrap_client(broker.port)
    reply_to = new_reply_topic()
    assert client.subscribe(reply_to)
    request_id = secrets.token_urlsafe(18)
    request(client, request_id, reply_to)
    first = reply(client)
    request(client, request_id, reply_to)
    second = reply(client)
    assert isinstance(first, PendingReply) and isinstance(second, PendingReply)
    assert first.user_code == second.user_code
    # Someone else reusing that request id with their own reply topic learns nothing.
    other = new_reply_topic()
    assert client.subscribe(other)
    request(client, request_id, other)
    answer = reply(client)
    assert isinstance(answer, ErrorReply) and answer.error is ErrorCode.INVALID_REQUEST
    client.close()


def test_mqtt5_replies_echo_correlation_data(hub: Hub, broker: RunningBroker) -> None:
    client = bootstrap_client(broker.port)
    reply_to = new_reply_topic()
    assert client.subscribe(reply_to)
    body = json.loads(
        protocol.encode(link_request(secrets.token_urlsafe(18), reply_to, DeviceInfo("Fan", "F-1")))
    )
    del body["reply_to"]  # an MQTT 5 device may name it only as the Response Topic
    correlation = secrets.token_bytes(16)
    assert client.publish(
        client.request_topic,
        json.dumps(body).encode(),
        response_topic=reply_to,
        correlation=correlation,
    )
    message = client.next_message()
    assert message.properties.CorrelationData == correlation
    assert isinstance(protocol.parse_link_reply(message.payload), PendingReply)
    client.close()


@pytest.mark.parametrize(
    ("payload", "error"),
    [
        (b"not json at all", ErrorCode.INVALID_REQUEST),
        (b'{"v": 1, "type": "link_request"}', ErrorCode.INVALID_REQUEST),
        (b'{"v": 9, "type": "link_request"}', ErrorCode.UNSUPPORTED_VERSION),
        (
            json.dumps(
                {
                    "v": 1,
                    "type": "link_request",
                    "request_id": "r" * 20,
                    "device": {"name": "\x00", "model": "m"},
                }
            ).encode(),
            ErrorCode.INVALID_REQUEST,
        ),
    ],
    ids=["garbage", "missing-fields", "version", "control-chars"],
)
def test_malformed_requests_get_an_error_and_the_hub_stays_up(
    hub: Hub, broker: RunningBroker, payload: bytes, error: ErrorCode
) -> None:
    client = bootstrap_client(broker.port)
    reply_to = new_reply_topic()
    assert client.subscribe(reply_to)
    # MQTT 5: the response topic tells the hub where to answer even when the body is garbage.
    correlation = secrets.token_bytes(8)
    assert client.publish(client.request_topic, payload, response_topic=reply_to, correlation=correlation)
    message = client.next_message()
    assert message.properties.CorrelationData == correlation  # even an error answers its request
    answer = protocol.parse_link_reply(message.payload)
    assert isinstance(answer, ErrorReply) and answer.error is error
    # ...and the next good request is served as usual.
    request(client, secrets.token_urlsafe(18), reply_to)
    assert isinstance(reply(client), PendingReply)
    client.close()


def test_pending_request_survives_a_hub_restart(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    data_dir = tmp_path / "hub"
    first = make_hub(data_dir=data_dir)
    account_id = owner(first)
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    first.stop()

    second = make_hub(data_dir=data_dir)
    assert second.links.lookup_code(code).status is CodeStatus.PENDING
    second.links.approve(code, account_id)
    event = device.next_event()
    while event["event"] == "code":  # a poll answered by the new hub repeats the same code
        assert event["user_code"] == code
        event = device.next_event()
    assert event["event"] == "linked"
    assert device.join() == 0


def test_broker_restart_mid_flow(make_hub: HubFactory, tmp_path: Path) -> None:
    own = start_broker(tmp_path / "mosquitto")
    try:
        hub = make_hub(on_broker=own)
        account_id = owner(hub)
        device = DeviceThread(own.port, tmp_path / "lamp.json").start()
        code = device.wait_code()
        own.broker.kill()
        wait_until(
            lambda: hub.main_connection is not None and not hub.main_connection.connected.is_set(),
            what="the hub noticing its broker gone",
        )
        own = start_broker(tmp_path / "mosquitto", port=own.port)
        # The dynamic-security state (bootstrap, hub identity) is kept in its file.
        wait_until(
            lambda: hub.main_connection is not None and hub.main_connection.connected.is_set(),
            what="hub reconnect",
        )
        hub.links.approve(code, account_id)
        events = []
        while not events or events[-1]["event"] == "code":
            events.append(device.next_event(20))
        assert events[-1]["event"] == "linked", events
        assert device.join() == 0
    finally:
        own.broker.stop()


def test_devices_can_be_sent_to_a_broker_address_of_their_own(
    make_hub: HubFactory, broker: RunningBroker
) -> None:
    """A broker in a container: the hub reaches it by one name, devices by another."""
    hub = make_hub(device_broker="hub.lan:1999")
    assert hub.endpoints is not None
    assert (hub.endpoints.device_broker.host, hub.endpoints.device_broker.port) == ("hub.lan", 1999)
    assert hub.endpoints.broker.port == broker.port
