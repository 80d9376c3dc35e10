"""Unlinking a device clears all it left retained, however much (issue 19,
item 9): in rounds until none is left, retried as a job until done; and devices
linked by an older hub get today's narrow role back at start."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import HubFactory, RunningBroker, wait_until
from device_doubles import RawClient
from test_unlink import accounts, hub_client, link_device, retained_under

import linkhub_protocol as protocol
from firmware_sim import state as state_file
from hub.broker.dynsec import Acl, device_acls, device_role

TOPICS = 3000


def park_retained(hub_client_: RawClient, root: str, count: int) -> None:
    """`count` retained messages under `root`, published without waiting for each
    acknowledgement (then for the last)."""
    for number in range(count - 1):
        hub_client_.client.publish(f"{root}/x/{number}", b"left behind", qos=1, retain=True)
    assert hub_client_.publish(f"{root}/x/{count - 1}", b"left behind", retain=True)


def test_unlink_clears_thousands_of_retained_topics(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub()
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    root = protocol.device_root(device_id)
    client = hub_client(hub, broker)
    try:
        park_retained(client, root, TOPICS)
    finally:
        client.close()
    started = time.monotonic()
    hub.links.unlink(device_id, alice, origin="web")
    assert retained_under(hub, broker, device_id) == {}, f"left after {time.monotonic() - started:.1f} s"


def test_an_unfinished_clearing_is_retried_until_done(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub()
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    hub.links.unlink(device_id, alice, origin="web")
    client = hub_client(hub, broker)
    try:  # more left behind after the unlink's own sweep (say, it ran out of time)
        park_retained(client, protocol.device_root(device_id), 50)
    finally:
        client.close()
    hub.retry_clearing(device_id)
    wait_until(lambda: not retained_under(hub, broker, device_id), what="the job cleared them")
    wait_until(lambda: device_id not in hub.clearing_jobs(), what="the job finished")
    assert retained_under(hub, broker, device_id) == {}
    assert hub.links.unfinished_clearings() == []


def test_an_unfinished_clearing_outlives_a_restart(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """A hub that stops before its clearing job is done: the next hub on the same
    database takes the job up at start (before revision 0007 it was in memory
    only, and the retained messages stayed for the life of the broker)."""
    first = make_hub(data_dir=tmp_path / "hub")
    alice, _ = accounts(first)
    device_id = link_device(first, broker, tmp_path / "lamp.json", alice)
    first.links.unlink(device_id, alice, origin="web")
    assert first.links.unfinished_clearings() == []  # the unlink's own sweep finished
    first.stop()
    client = hub_client(first, broker)
    try:  # what the stopped hub had not cleared yet
        park_retained(client, protocol.device_root(device_id), 50)
    finally:
        client.close()
    first.links.clearing_unfinished(device_id)  # as the stopped hub recorded it
    assert retained_under(first, broker, device_id)

    second = make_hub(data_dir=tmp_path / "hub")
    wait_until(lambda: not retained_under(second, broker, device_id), what="the next hub cleared them")
    wait_until(lambda: second.links.unfinished_clearings() == [], what="the job recorded as finished")


def test_a_device_linked_by_an_older_hub_gets_the_narrow_role_at_start(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub(data_dir=tmp_path / "hub")
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    root = protocol.device_root(device_id)
    assert hub.broker_admin is not None
    hub.broker_admin.ensure_role(
        device_role(device_id), [Acl("publishClientSend", f"{root}/#", True)]
    )  # the old rule
    creds = state_file.load(tmp_path / "lamp.json").mqtt
    assert creds is not None

    def may_publish_anywhere_below() -> bool:
        device = RawClient(broker.port, device_id, creds.password, client_id=device_id)
        try:
            return device.publish(f"{root}/anything/below", b"{}")
        finally:
            device.close()

    assert may_publish_anywhere_below()
    hub.stop()
    make_hub(data_dir=tmp_path / "hub")  # the same hub, started again
    assert not may_publish_anywhere_below()


def test_a_device_linked_before_descriptions_may_send_them_after_the_hub_starts(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """A role made before issue 15 names only the status and settings topics:
    the hub's start adds the description and state topics (device_acls)."""
    hub = make_hub(data_dir=tmp_path / "hub")
    alice, _ = accounts(hub)
    device_id = link_device(hub, broker, tmp_path / "lamp.json", alice)
    root = protocol.device_root(device_id)
    assert hub.broker_admin is not None
    older = [a for a in device_acls(device_id) if not a.topic.endswith(("/description", "/state"))]
    hub.broker_admin.sync_role(device_role(device_id), older)
    creds = state_file.load(tmp_path / "lamp.json").mqtt
    assert creds is not None

    def may_describe() -> bool:
        device = RawClient(broker.port, device_id, creds.password, client_id=device_id)
        try:
            return device.publish(f"{root}/description", b"{}") and device.publish(f"{root}/state", b"{}")
        finally:
            device.close()

    assert not may_describe()
    hub.stop()
    make_hub(data_dir=tmp_path / "hub")
    assert may_describe()
