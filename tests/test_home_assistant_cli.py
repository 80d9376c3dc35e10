"""`linkhub homeassistant` against `linkhub run` (its own mosquitto): it prints
what to type into Home Assistant's MQTT integration, and that login works on the
broker for what Home Assistant needs; asked again, the old password stops
working; with discovery off it says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from device_doubles import RawClient
from test_shell_path import started_hub

from hub.core import home_assistant as ha

pytestmark = pytest.mark.timeout(120)


def printed_login(output: str) -> dict[str, str]:
    fields = dict(re.findall(r"^\s+(Broker|Port|Username|Password)\s+(\S+)\s*$", output, re.MULTILINE))
    assert set(fields) == {"Broker", "Port", "Username", "Password"}, output
    return fields


def test_linkhub_homeassistant_prints_a_login_that_reads_discovery(tmp_path: Path) -> None:
    with started_hub(tmp_path / "data") as hub:
        done = hub.cli("homeassistant")
        assert done.returncode == 0, done.stderr
        assert "Settings > Devices & services > Add integration > MQTT" in done.stdout
        first = printed_login(done.stdout)
        assert (first["Broker"], first["Port"], first["Username"]) == (
            "127.0.0.1",
            str(hub.mqtt_port),
            "linkhub-homeassistant",
        )
        client = RawClient(hub.mqtt_port, first["Username"], first["Password"])
        try:
            assert not client.connack_reason.is_failure
            assert client.subscribe(ha.config_subscription())
            message = client.next_message()  # the hub's own entities, retained
            assert message.topic.startswith(f"{ha.DISCOVERY_PREFIX}/") and message.retain
        finally:
            client.close()

        again = printed_login(hub.cli("homeassistant").stdout)
        assert again["Password"] != first["Password"]
        assert RawClient(hub.mqtt_port, first["Username"], first["Password"]).connack_reason.is_failure
        newer = RawClient(hub.mqtt_port, again["Username"], again["Password"])
        assert not newer.connack_reason.is_failure
        newer.close()


def test_linkhub_homeassistant_says_when_discovery_is_off(tmp_path: Path) -> None:
    with started_hub(tmp_path / "data", "--no-home-assistant") as hub:
        done = hub.cli("homeassistant")
        assert done.returncode == 1
        assert "Home Assistant discovery is off" in done.stderr and "[home_assistant_off]" in done.stderr
