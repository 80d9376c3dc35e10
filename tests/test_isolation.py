"""The broker's rules, shown on a real mosquitto 2.0 with dynamic security:
an unlinked device can only ask and hear its own answer; a linked device can
only use its own subtree."""

from __future__ import annotations

import queue
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from conftest import RunningBroker
from device_doubles import DeviceThread, RawClient, bootstrap_client, new_reply_topic

import linkhub_protocol as protocol
from hub.broker.managed import find_mosquitto
from hub.daemon import Hub


@pytest.mark.parametrize(
    "topic_filter",
    [
        "#",
        "+/#",
        "linkhub/#",
        "linkhub/v1/link/reply/+",
        "linkhub/v1/link/reply/#",
        "linkhub/v1/link/+/" + "a" * 24,
        "+/v1/link/reply/" + "a" * 24,
        "linkhub/v1/link/request",
        "linkhub/v1/link/request/+",
        "linkhub/v1/link/request/#",
        "$share/linkhub-hubs/linkhub/v1/link/request",
        "$share/linkhub-hubs/linkhub/v1/link/request/+",
        "$share/snoop/linkhub/v1/link/reply/+",
        "$share/snoop/#",
        "linkhub/v1/devices/#",
        "$CONTROL/#",
        "$SYS/#",
    ],
)
def test_an_unlinked_client_cannot_subscribe_beyond_one_reply_topic(
    hub: Hub, broker: RunningBroker, topic_filter: str
) -> None:
    snoop = bootstrap_client(broker.port)
    try:
        assert snoop.subscribe(new_reply_topic())  # its own reply topic: granted
        assert not snoop.subscribe(topic_filter)  # MQTT 5 SUBACK 0x87
    finally:
        snoop.close()


def test_an_unlinked_client_cannot_forge_replies_or_reach_devices(hub: Hub, broker: RunningBroker) -> None:
    forger = bootstrap_client(broker.port)
    try:
        assert not forger.publish(new_reply_topic(), b'{"v":1}')  # PUBACK 135
        assert not forger.publish("linkhub/v1/devices/dev-000000000000/status", b"{}")
        assert not forger.publish("$CONTROL/dynamic-security/v1", b'{"commands":[]}')
        assert forger.publish(forger.request_topic, b"{}")  # the one thing it may send
        assert not forger.publish(protocol.LINK_REQUEST_ROOT, b"{}")  # not without its client id
        assert not forger.publish(f"{forger.request_topic}/more", b"{}")
    finally:
        forger.close()


def _mosquitto_version() -> tuple[int, int]:
    banner = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True).stdout
    found = re.search(r"mosquitto version (\d+)\.(\d+)", banner)
    assert found, banner
    return int(found[1]), int(found[2])


def test_link_requests_go_under_the_clients_own_id_where_the_broker_can_enforce_it(
    hub: Hub, broker: RunningBroker
) -> None:
    """mosquitto expands %c in dynamic-security ACLs from 2.1 on (issue 3191). The
    hub finds out by trying; where it can, a bootstrap client may publish a link
    request only under its own client id, so the per-client limit counts clients.
    On 2.0 any one-level id is accepted, and the id is only a claim
    (docs/security.md, "Link requests"): this test pins down both."""
    enforced = _mosquitto_version() >= (2, 1)
    assert hub.broker_expands_client_id is enforced
    client = bootstrap_client(broker.port)
    try:
        assert client.publish(client.request_topic, b"{}")
        assert client.publish(protocol.link_request_topic("lh-boot-someone-else"), b"{}") is not enforced
    finally:
        client.close()


def test_another_unlinked_client_never_sees_a_reply_or_credentials(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    snoop = bootstrap_client(broker.port)
    granted = [f for f in ("#", "linkhub/v1/link/reply/+", "linkhub/v1/link/reply/#") if snoop.subscribe(f)]
    assert granted == []
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    hub.links.approve(code, hub.accounts.create("alice", "correct horse battery").id)
    assert device.join() == 0
    password = device.saved_state()["mqtt"]["password"]
    with pytest.raises(queue.Empty):
        snoop.next_message(timeout_s=0.5)
    snoop.close()
    assert len(password) >= 24


@pytest.fixture
def linked(hub: Hub, broker: RunningBroker, tmp_path: Path) -> dict[str, str]:
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    code = device.wait_code()
    hub.links.approve(code, hub.accounts.create("alice", "correct horse battery").id)
    assert device.join() == 0
    state = device.saved_state()
    return {"device_id": state["device_id"], "password": state["mqtt"]["password"]}


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
def test_a_linked_device_is_confined_to_its_own_subtree(
    broker: RunningBroker, linked: dict[str, str], mqtt5: bool
) -> None:
    device_id = linked["device_id"]
    own = protocol.device_root(device_id)
    client = RawClient(broker.port, device_id, linked["password"], client_id=device_id, mqtt5=mqtt5)
    try:
        assert not client.connack_reason.is_failure
        assert client.subscribe(f"{own}/#")
        for topic_filter in (
            "#",
            "linkhub/v1/devices/+/status",
            "linkhub/v1/devices/dev-ffffffffffff/#",
            "linkhub/v1/link/reply/+",
            protocol.link_request_subscription(),
            f"{protocol.LINK_REQUEST_ROOT}/+",
            "$CONTROL/#",
        ):
            assert not client.subscribe(topic_filter), topic_filter
        if mqtt5:  # MQTT 3.1.1 clients are dropped silently instead (3.1.1 has no negative PUBACK)
            # Its fixed topics only (docs/protocol.md), so it can retain no more than those.
            for leaf in protocol.DEVICE_SENDS:
                assert client.publish(protocol.device_topic(device_id, leaf), b"{}"), leaf
            for topic in (
                f"{own}/command",
                f"{own}/states",
                f"{own}/settings/desired",
                f"{own}/reply",
                f"{own}/x/" + "y" * 10,
                "linkhub/v1/devices/dev-ffffffffffff/state",
                protocol.link_request_topic(device_id),
                "linkhub/v1/link/reply/" + "a" * 24,
                "$CONTROL/dynamic-security/v1",
            ):
                assert not client.publish(topic, b"{}"), topic
    finally:
        client.close()


def test_linked_credentials_are_bound_to_the_device_client_id(
    broker: RunningBroker, linked: dict[str, str]
) -> None:
    impostor = RawClient(broker.port, linked["device_id"], linked["password"], client_id="someone-else")
    assert impostor.connack_reason.is_failure
    impostor.close()
    wrong = RawClient(
        broker.port, linked["device_id"], secrets.token_urlsafe(24), client_id=linked["device_id"]
    )
    assert wrong.connack_reason.is_failure
    wrong.close()
