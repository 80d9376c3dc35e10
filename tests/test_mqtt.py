"""hub/mqtt.py's own encoding of reply properties, against paho's."""

from __future__ import annotations

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hub.mqtt import CorrelationData
from hub.protocol import MAX_CORRELATION_BYTES


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
