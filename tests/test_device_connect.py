"""A simulated device whose first connect finds no broker tries again with
backoff (docs/protocol.md, "Connecting"), as firmware should: it does not give
up at once, and does not retry what the broker refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FakeClock, RunningBroker, free_port, start_broker

from firmware_sim.mqtt_client import BrokerUnreachable, ConnectRefused, DeviceMqttClient
from hub.broker.managed import ADMIN_USERNAME, ManagedBroker, ManagedBrokerConfig


def test_a_first_connect_waits_for_a_broker_that_is_not_up_yet(tmp_path: Path) -> None:
    port = free_port()
    directory = tmp_path / "mosquitto"
    password = ManagedBroker(ManagedBrokerConfig(directory, "127.0.0.1", port)).prepare() and (
        (directory / "admin-password").read_text().strip()
    )
    waits: list[float] = []
    started: list[RunningBroker] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:  # the broker comes up during the second wait
            started.append(start_broker(directory, port))

    client = DeviceMqttClient(
        client_id="early-device", username=ADMIN_USERNAME, password=password, mqtt5=True
    )
    try:
        attempts = client.connect_retrying(
            "127.0.0.1", port, timeout=5, retry_for_s=60, sleep=sleep, jitter=lambda: 1.0
        )
        assert attempts == 3
        assert waits == [0.5, 1.0]
    finally:
        client.close()
        for running in started:
            running.broker.stop()


def test_a_first_connect_gives_up_when_its_time_is_up() -> None:
    clock = FakeClock()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)

    client = DeviceMqttClient(client_id="lonely-device", username="u", password="p", mqtt5=True)
    with pytest.raises(BrokerUnreachable):
        client.connect_retrying(
            "127.0.0.1", free_port(), timeout=1, retry_for_s=20, sleep=sleep, clock=clock, jitter=lambda: 0.0
        )
    # Half of each delay (jitter 0): 15.75 s waited, and 16 more would pass the 20 s.
    assert waits == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]


def test_a_refused_connect_is_not_retried(broker: RunningBroker) -> None:
    waits: list[float] = []
    client = DeviceMqttClient(client_id="wrong-device", username="nobody", password="wrong", mqtt5=True)
    with pytest.raises(ConnectRefused):
        client.connect_retrying("127.0.0.1", broker.port, timeout=5, retry_for_s=60, sleep=waits.append)
    assert waits == []
