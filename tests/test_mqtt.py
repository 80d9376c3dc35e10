"""hub/broker/connection.py: its own encoding of reply properties, against paho's;
the link-request responder."""

from __future__ import annotations

import queue
from typing import Any

import pytest
from conftest import HubFactory, RunningBroker
from device_doubles import BootstrapDevice
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

import linkhub_protocol as protocol
from hub.broker.connection import CorrelationData
from linkhub_protocol import MAX_CORRELATION_BYTES, DeviceInfo


@pytest.mark.parametrize(
    "correlation", [b"", b"\x00", b"request-1", bytes(range(256))[:MAX_CORRELATION_BYTES], b"\xff" * 200]
)
def test_correlation_data_packs_as_paho_packs_it(correlation: bytes) -> None:
    paho_properties = Properties(PacketTypes.PUBLISH)
    paho_properties.CorrelationData = correlation
    assert CorrelationData(correlation).pack() == paho_properties.pack()


def test_correlation_data_reads_like_pahos() -> None:
    ours = CorrelationData(b"abc")
    assert ours.CorrelationData == b"abc"
    assert "abc" in str(ours)


def test_the_responder_goes_on_answering_after_its_handler_failed(
    make_hub: HubFactory,
    broker: RunningBroker,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug while answering one batch costs that batch (its devices ask again),
    not the responder: the next request is answered."""
    make_hub()
    parse = protocol.parse_link_request
    failures: list[int] = []

    def fails_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug")
        return parse(*args, **kwargs)

    monkeypatch.setattr(protocol, "parse_link_request", fails_once)
    device = BootstrapDevice(broker.port, DeviceInfo("Kitchen Lamp", "LMP-1"))
    try:
        device.send()
        with pytest.raises(queue.Empty):
            device.client.next_message(timeout_s=1.0)  # that batch got no answer
        assert failures == [1]
        assert "could not answer 1 request(s)" in caplog.text
        assert device.request().user_code  # the resend is answered
    finally:
        device.close()
