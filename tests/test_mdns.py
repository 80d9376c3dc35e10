"""mDNS: the hub advertising itself and the device finding it.

Pure parts (TXT records, which addresses count as the home network, flags,
choosing among hubs) are tested here with fake address lists and never touch
a network. Everything that multicasts runs in tests/mdns_scenarios.py inside
a fresh network namespace (`unshare --net`), on that namespace's own
loopback: never on this machine's real interfaces. The scenarios are started
together, each in its own namespace, so the file takes about as long as the
slowest one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import RunningBroker

import firmware_sim.cli as device_cli
from firmware_sim import discovery
from firmware_sim.discovery import FoundHub, choose_hub, hub_from_records
from hub.config.model import HubConfig, mdns_host_label
from hub.daemon import Hub
from hub.errors import ConfigError
from hub.net import mdns
from hub.net.addresses import (
    InterfaceAddress,
    home_network_addresses,
    interface_addresses,
    is_home_network,
    lan_addresses,
    mdns_addresses,
    unknown_mdns_interfaces,
)
from hub.net.mdns import HubAnnouncement, broker_host_for_txt, serves_web_page, service_infos, txt_records
from linkhub.cli import build_parser, run_config
from linkhub_protocol import MDNS_SERVICE_TYPE

SCENARIOS = Path(__file__).with_name("mdns_scenarios.py")

# What this sandbox has: nothing that is a home network.
SANDBOX = [InterfaceAddress("lo", "127.0.0.1"), InterfaceAddress("eth0", "192.0.2.2")]
# A busy machine: only the three RFC 1918 ranges count.
BUSY = [
    InterfaceAddress("lo", "127.0.0.1"),
    InterfaceAddress("eth0", "192.0.2.2"),  # documentation range: `is_private`, not a LAN
    InterfaceAddress("wlan0", "192.168.1.20"),
    InterfaceAddress("docker0", "172.17.0.1"),
    InterfaceAddress("eth1", "172.32.0.1"),  # just outside 172.16/12
    InterfaceAddress("tun0", "100.64.0.5"),  # carrier-grade NAT
    InterfaceAddress("eth2", "10.1.2.3"),
    InterfaceAddress("eth3", "169.254.3.4"),  # link-local
    InterfaceAddress("eth4", "198.18.0.1"),  # benchmarking: `is_private` too
    InterfaceAddress("wlan0", "192.168.1.20"),  # listed twice: reported once
]
ANNOUNCEMENT = HubAnnouncement(label="linkhub", hub_id="a1b2c3d4e5f6", mqtt_port=1884, http_port=8080)


# --- which addresses count as the home network (hub/net/addresses.py) -------------------------
@pytest.mark.parametrize(
    ("address", "home"),
    [
        ("10.0.0.1", True),
        ("10.255.255.254", True),
        ("172.16.0.1", True),
        ("172.31.255.254", True),
        ("192.168.0.1", True),
        ("172.15.255.254", False),
        ("172.32.0.1", False),
        ("192.0.2.2", False),
        ("198.18.0.1", False),
        ("100.64.0.5", False),
        ("169.254.3.4", False),
        ("127.0.0.1", False),
        ("8.8.8.8", False),
        ("fd00::2", False),
        ("not an address", False),
    ],
)
def test_only_rfc1918_is_the_home_network(address: str, home: bool) -> None:
    assert is_home_network(address) is home
    assert discovery.is_home_network(address) is home  # the device's copy of the rule


def test_default_mdns_addresses_are_the_rfc1918_ones() -> None:
    assert home_network_addresses(BUSY) == ["192.168.1.20", "172.17.0.1", "10.1.2.3"]
    assert mdns_addresses((), BUSY) == ["192.168.1.20", "172.17.0.1", "10.1.2.3"]
    assert lan_addresses(BUSY) == ["192.168.1.20", "172.17.0.1", "10.1.2.3"]
    assert discovery.home_network_addresses([entry.address for entry in BUSY]) == [
        "192.168.1.20",
        "172.17.0.1",
        "10.1.2.3",
    ]


def test_no_home_network_means_nowhere() -> None:
    """This sandbox (eth0 192.0.2.2): a plain `linkhub run` must not multicast on it."""
    assert mdns_addresses((), SANDBOX) == []
    assert lan_addresses(SANDBOX) == []
    assert discovery.home_network_addresses(["127.0.0.1", "192.0.2.2"]) == []


def test_requested_interfaces_by_name_or_address_whatever_their_range() -> None:
    assert mdns_addresses(("lo",), BUSY) == ["127.0.0.1"]
    assert mdns_addresses(("eth0",), SANDBOX) == ["192.0.2.2"]  # a person chose it
    assert mdns_addresses(("127.0.0.1", "wlan0", "192.168.1.20"), BUSY) == ["127.0.0.1", "192.168.1.20"]
    assert mdns_addresses(("wlan9",), BUSY) == []  # gone for now: skipped, never raises


def test_unknown_requested_interfaces_are_reported() -> None:
    assert unknown_mdns_interfaces(("lo", "10.1.2.3"), BUSY) == []
    assert unknown_mdns_interfaces(("wlan9", "10.9.9.9", "fd00::2", "lo"), BUSY) == [
        "wlan9",
        "10.9.9.9",
        "fd00::2",
    ]


def test_lan_addresses_reads_the_interfaces_with_the_same_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    adapters = [
        SimpleNamespace(
            nice_name="lo", ips=[SimpleNamespace(ip="127.0.0.1"), SimpleNamespace(ip=("::1", 0, 0))]
        ),
        SimpleNamespace(nice_name="eth0", ips=[SimpleNamespace(ip="192.0.2.2")]),
        SimpleNamespace(nice_name="wlan0", ips=[SimpleNamespace(ip="192.168.1.20")]),
    ]
    monkeypatch.setattr("hub.net.addresses.ifaddr.get_adapters", lambda: adapters)
    assert interface_addresses() == [
        InterfaceAddress("lo", "127.0.0.1"),
        InterfaceAddress("eth0", "192.0.2.2"),
        InterfaceAddress("wlan0", "192.168.1.20"),
    ]
    assert lan_addresses() == ["192.168.1.20"]


# --- the records (hub/net/mdns.py) ----------------------------------------------------------
def test_txt_records() -> None:
    assert txt_records(ANNOUNCEMENT, ["192.168.1.20"]) == {
        "v": "1",
        "mqtt_port": "1884",
        "link_path": "/link",
        "http_port": "8080",
        "hub_id": "a1b2c3d4e5f6",
        "name": "linkhub",
    }


@pytest.mark.parametrize(
    ("broker_host", "expected"),
    [
        (None, None),  # the hub's own broker on every address
        ("0.0.0.0", None),
        ("192.168.1.20", None),  # one of the advertised addresses
        ("127.0.0.1", None),  # this machine
        ("localhost", None),
        ("linkhub.local", None),  # the hub's own mDNS name
        ("192.168.1.50", "192.168.1.50"),  # an external broker elsewhere
        ("broker.lan", "broker.lan"),
    ],
)
def test_mqtt_host_only_when_the_broker_is_elsewhere(broker_host: str | None, expected: str | None) -> None:
    announcement = HubAnnouncement("linkhub", "id", 1884, 8080, broker_host=broker_host)
    assert broker_host_for_txt(announcement, ["192.168.1.20"]) == expected
    assert txt_records(announcement, ["192.168.1.20"]).get("mqtt_host") == expected


def test_service_infos_broker_and_web_page() -> None:
    broker, page = service_infos(ANNOUNCEMENT, ["192.168.1.20"])
    assert (broker.type, broker.name, broker.port) == (
        MDNS_SERVICE_TYPE,
        "linkhub._linkhub._tcp.local.",
        1884,
    )
    assert broker.server == page.server == "linkhub.local."
    assert broker.parsed_addresses() == page.parsed_addresses() == ["192.168.1.20"]
    assert broker.decoded_properties["v"] == "1"
    assert (page.type, page.port, page.decoded_properties) == ("_http._tcp.local.", 8080, {"path": "/link"})


def test_web_page_advertised_only_where_it_listens() -> None:
    local_page = HubAnnouncement("linkhub", "id", 1884, 8080, http_host="127.0.0.1")
    assert serves_web_page(ANNOUNCEMENT, ["192.168.1.20"])
    assert serves_web_page(local_page, ["127.0.0.1"])
    assert not serves_web_page(local_page, ["192.168.1.20"])
    assert [info.type for info in service_infos(local_page, ["192.168.1.20"])] == [MDNS_SERVICE_TYPE]


# --- flags and config ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("typed", "label"),
    [("linkhub", "linkhub"), ("Kitchen-Hub", "kitchen-hub"), ("hub2.local", "hub2"), ("hub2.local.", "hub2")],
)
def test_mdns_name_forgives_case_and_dot_local(typed: str, label: str) -> None:
    assert mdns_host_label(typed) == label


@pytest.mark.parametrize("typed", ["", "-hub", "hub-", "my hub", "hub.lan", "a" * 64, "hüb"])
def test_mdns_name_refuses_what_is_not_one_label(typed: str) -> None:
    with pytest.raises(ConfigError, match="--mdns-name"):
        mdns_host_label(typed)


def test_hub_config_checks_the_label(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--mdns-name"):
        HubConfig(data_dir=tmp_path, database_url="sqlite://", mdns_name="Not.A.Label")


def test_run_flags_reach_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LINKHUB_MDNS_NAME", raising=False)
    parse = build_parser().parse_args
    plain = run_config(parse(["run", "--data-dir", str(tmp_path)]))
    assert (plain.mdns, plain.mdns_name, plain.mdns_interfaces) == (True, "linkhub", ())
    chosen = run_config(
        parse(["run", "--data-dir", str(tmp_path), "--mdns-name", "Kitchen.local",
               "--mdns-interface", "wlan0", "--mdns-interface", "192.168.1.20"])
    )  # fmt: skip
    assert (chosen.mdns_name, chosen.mdns_interfaces) == ("kitchen", ("wlan0", "192.168.1.20"))
    assert run_config(parse(["run", "--data-dir", str(tmp_path), "--no-mdns"])).mdns is False


class PollCounter:
    """interface_addresses, counted: a test waits for the advertiser's nth look
    at the interfaces instead of sleeping for it."""

    def __init__(self, addresses: Callable[[], Any]) -> None:
        self._addresses = addresses
        self._calls = 0
        self._lock = threading.Lock()
        self._waits: list[tuple[int, threading.Event]] = []

    def __call__(self) -> Any:
        with self._lock:
            self._calls += 1
            for count, event in self._waits:
                if self._calls >= count:
                    event.set()
        return self._addresses()

    def reached(self, count: int) -> threading.Event:
        event = threading.Event()
        with self._lock:
            self._waits.append((count, event))
            if self._calls >= count:
                event.set()
        return event


# --- the hub's wiring (hub/daemon.py), with zeroconf replaced -----------------------------
def _no_zeroconf(*args: object, **kwargs: object) -> None:
    raise AssertionError("zeroconf must not be started in this test")


def test_no_home_network_logs_one_line_and_advertises_nowhere(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    polls = PollCounter(lambda: SANDBOX)
    monkeypatch.setattr(mdns, "interface_addresses", polls)
    monkeypatch.setattr(mdns, "Zeroconf", _no_zeroconf)
    with caplog.at_level(logging.INFO, logger="hub.net.mdns"):
        advertiser = mdns.advertise_hub(ANNOUNCEMENT, (), poll_interval_s=0.02)
        assert polls.reached(5).wait(10), "the advertiser stopped looking at the interfaces"
        assert advertiser.addresses == []  # five looks at the interfaces: still nothing
        advertiser.stop()
    assert [record.getMessage() for record in caplog.records] == [mdns.NO_HOME_NETWORK]
    assert mdns.NO_HOME_NETWORK == (
        "mDNS: no interface with a home-network (RFC 1918) address; pass --mdns-interface to choose one"
    )


class FakeAdvertiser:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.started_with: tuple[HubAnnouncement, tuple[str, ...]] | None = None
        self.sweeper_alive_at_stop: bool | None = None

    def __call__(self, announcement: HubAnnouncement, requested: tuple[str, ...]) -> FakeAdvertiser:
        self.started_with = (announcement, requested)
        return self

    def stop(self) -> None:
        self.sweeper_alive_at_stop = self.hub.sweeper_running


def test_hub_advertises_after_its_broker_and_withdraws_first(
    tmp_path: Path, broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = HubConfig(
        data_dir=tmp_path / "hub",
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        http_host="127.0.0.1",
        http_port=8099,
        external_broker=broker.external,
        mdns_name="kitchen",
    )
    hub = Hub(config)
    fake = FakeAdvertiser(hub)
    monkeypatch.setattr("hub.net.mdns.advertise_hub", fake)
    hub.start()
    try:
        assert fake.started_with is not None
        announcement, requested = fake.started_with
        hub_id = (config.data_dir / "hub-id").read_text().strip()
        assert announcement == HubAnnouncement(
            label="kitchen",
            hub_id=hub_id,
            mqtt_port=broker.port,
            http_port=8099,
            broker_host="127.0.0.1",  # an external broker: named, then dropped as loopback
            http_host="127.0.0.1",
        )
        assert requested == ()
    finally:
        hub.stop()
    assert fake.sweeper_alive_at_stop is True  # withdrawn before anything else stopped


def test_unknown_mdns_interface_fails_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mdns, "interface_addresses", lambda: SANDBOX)
    config = HubConfig(data_dir=tmp_path / "hub", database_url="sqlite://", mdns_interfaces=("wlan9",))
    with pytest.raises(ConfigError, match="--mdns-interface wlan9"):
        Hub(config).start()
    assert not config.data_dir.exists()


def test_no_mdns_never_touches_zeroconf(
    tmp_path: Path, broker: RunningBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(mdns, "Zeroconf", _no_zeroconf)
    monkeypatch.setattr("hub.net.mdns.advertise_hub", _no_zeroconf)
    config = HubConfig(
        data_dir=tmp_path / "hub",
        database_url=f"sqlite:///{tmp_path / 'hub.db'}",
        external_broker=broker.external,
        mdns=False,
        mdns_interfaces=("wlan9",),  # not even checked
    )
    hub = Hub(config)
    hub.start()  # _no_zeroconf raises if anything reaches zeroconf
    try:
        assert hub.endpoints is not None and hub.advertiser is None
    finally:
        hub.stop()


# --- the device's choice (firmware_sim/discovery.py, firmware_sim/cli.py) -----------------
def found(name: str, port: int = 1884, host: str = "192.168.1.20") -> FoundHub:
    return FoundHub(name=name, host=host, port=port, txt={"v": "1", "name": name})


def test_hub_from_records() -> None:
    txt = {"v": "1", "mqtt_port": "1885", "hub_id": "abc", "name": "linkhub"}
    hub = hub_from_records("linkhub", txt, ["192.168.1.20"], 1884, "linkhub.local.")
    assert hub is not None
    assert (hub.name, hub.host, hub.port, hub.hub_id, hub.url) == (
        "linkhub",
        "192.168.1.20",
        1885,
        "abc",
        "mqtt://192.168.1.20:1885",
    )
    elsewhere = hub_from_records("h", {**txt, "mqtt_host": "broker.lan"}, ["192.168.1.20"], 1884, None)
    assert elsewhere is not None and elsewhere.host == "broker.lan"
    srv_port = hub_from_records("h", {"v": "1", "mqtt_port": "nope"}, ["192.168.1.20"], 1884, None)
    assert srv_port is not None and srv_port.port == 1884
    assert hub_from_records("h", {**txt, "v": "2"}, ["192.168.1.20"], 1884, None) is None
    assert hub_from_records("h", {"mqtt_port": "1884"}, ["192.168.1.20"], 1884, None) is None
    assert hub_from_records("h", txt, [], 1884, None) is None


def test_choose_no_hub() -> None:
    assert choose_hub([], None, 5.0) == (
        None,
        {
            "event": "error",
            "error": "no_hub_found",
            "error_description": "no LinkHub answered on the local network within 5 s; "
            "pass --hub mqtt://HOST:PORT",
        },
    )


def test_choose_one_hub() -> None:
    hub = found("linkhub")
    assert choose_hub([hub], None, 5.0) == (
        hub,
        {"event": "hub", "name": "linkhub", "host": "192.168.1.20", "port": 1884},
    )


def test_choose_the_first_by_name_and_say_how_to_pick_another() -> None:
    hubs = [found("Attic", 1885), found("kitchen", 1886)]
    chosen, event = choose_hub(hubs, None, 5.0)
    assert chosen is hubs[0]
    assert event["name"] == "Attic"
    assert event["others"] == [{"name": "kitchen", "host": "192.168.1.20", "port": 1886}]
    assert "--hub-name NAME" in event["hint"] and "--hub mqtt://HOST:PORT" in event["hint"]


def test_choose_by_name() -> None:
    hubs = [found("attic", 1885), found("kitchen", 1886)]
    chosen, event = choose_hub(hubs, "KITCHEN", 5.0)
    assert chosen is hubs[1] and "others" not in event
    missing, error = choose_hub(hubs, "garage", 2.0)
    assert missing is None
    assert error["error"] == "no_hub_found"
    assert "'garage'" in error["error_description"] and "attic, kitchen" in error["error_description"]


def _device_link(tmp_path: Path, *extra: str) -> list[str]:
    return ["link", "--name", "Lamp", "--model", "L1", "--state", str(tmp_path / "s.json"), "--json", *extra]


def test_device_without_hub_discovers_and_reports_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    asked: list[tuple[float, Any]] = []

    def fake_discover(timeout_s: float, interfaces: Any, **_: Any) -> list[FoundHub]:
        asked.append((timeout_s, interfaces))
        return []

    monkeypatch.setattr(discovery, "discover", fake_discover)
    assert device_cli.main(_device_link(tmp_path)) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == {
        "event": "error",
        "error": "no_hub_found",
        "error_description": "no LinkHub answered on the local network within 5 s; pass --hub mqtt://HOST:PORT",
    }
    assert asked == [(5.0, None)]
    assert not (tmp_path / "s.json").exists()


def test_device_with_no_home_network_does_not_multicast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On this sandbox the device's default rule finds nowhere to look."""
    adapters = [
        SimpleNamespace(nice_name="lo", ips=[SimpleNamespace(ip="127.0.0.1")]),
        SimpleNamespace(nice_name="eth0", ips=[SimpleNamespace(ip="192.0.2.2")]),
    ]
    monkeypatch.setattr(discovery.ifaddr, "get_adapters", lambda: adapters)
    monkeypatch.setattr(discovery, "Zeroconf", _no_zeroconf)
    assert device_cli.main(_device_link(tmp_path, "--discover-timeout", "1")) == 1
    (line,) = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert event["error"] == "no_hub_found"
    assert "RFC 1918" in event["error_description"] and "--hub mqtt://HOST:PORT" in event["error_description"]


def test_device_discovery_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(discovery, "Zeroconf", _no_zeroconf)  # usage errors must stop before browsing
    parse = device_cli.build_parser().parse_args
    args = parse(_device_link(tmp_path, "--hub-name", "attic", "--discover-timeout", "2",
                              "--mdns-interface", "192.168.1.20"))  # fmt: skip
    assert (args.hub, args.hub_name, args.discover_timeout, args.mdns_interface) == (
        None,
        "attic",
        2.0,
        ["192.168.1.20"],
    )
    assert device_cli.main(_device_link(tmp_path, "--hub", "mqtt://h:1884", "--hub-name", "attic")) == 2
    assert device_cli.main(_device_link(tmp_path, "--mdns-interface", "wlan0")) == 2
    assert device_cli.main(_device_link(tmp_path, "--discover-timeout", "0")) == 2
    capsys.readouterr()


# --- on the network, inside network namespaces --------------------------------------------
class Namespaces:
    """Every scenario at once, each in its own fresh network namespace."""

    NAMES = ("one", "two", "none", "stop", "follow", "end_to_end")
    TIMEOUT_S = 60  # each scenario bounds its own waits; this is the backstop

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started = time.monotonic()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for name in self.NAMES:
            command = [
                "unshare", "--net", "--", "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
                sys.executable, str(SCENARIOS), name,
            ]  # fmt: skip
            with (directory / f"{name}.out").open("wb") as out, (directory / f"{name}.err").open("wb") as err:
                self.processes[name] = subprocess.Popen(
                    command, stdout=out, stderr=err, start_new_session=True
                )

    def result(self, name: str) -> list[dict[str, Any]]:
        process = self.processes[name]
        try:
            process.wait(timeout=max(1.0, self.started + self.TIMEOUT_S - time.monotonic()))
        except subprocess.TimeoutExpired:
            self._kill(process)
            pytest.fail(f"scenario {name} did not finish in {self.TIMEOUT_S} s: {self._output(name)}")
        lines = (self.directory / f"{name}.out").read_text().splitlines()
        observed = [json.loads(line) for line in lines if line.startswith("{")]
        assert observed and observed[-1] == {"done": True}, self._output(name)
        return observed[:-1]

    def _output(self, name: str) -> str:
        out = (self.directory / f"{name}.out").read_text()
        err = (self.directory / f"{name}.err").read_text()
        return f"stdout:\n{out}\nstderr:\n{err[-3000:]}"

    @staticmethod
    def _kill(process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the session this test started, and only it
            process.wait(timeout=10)

    def close(self) -> None:
        for process in self.processes.values():
            self._kill(process)


@pytest.fixture(scope="module")
def namespaces(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespaces]:
    try:
        probe = subprocess.run(["unshare", "--net", "--", "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot create a network namespace (unshare --net): {exc}")
    if probe.returncode != 0:
        pytest.skip(f"cannot create a network namespace (unshare --net): {probe.stderr.strip()}")
    running = Namespaces(tmp_path_factory.mktemp("mdns-scenarios"))
    yield running
    running.close()


def merged(observed: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for item in observed:
        result |= item
    return result


def test_one_hub_is_found_with_its_txt(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("one"))
    assert seen["advertised"] is True
    (hub,) = seen["found"]
    assert (hub["name"], hub["host"], hub["port"], hub["server"]) == (
        "alpha",
        "127.0.0.1",
        18831,
        "alpha.local.",
    )
    assert hub["txt"] == {
        "v": "1",
        "mqtt_port": "18831",
        "link_path": "/link",
        "http_port": "8080",
        "hub_id": "id-alpha",
        "name": "alpha",
    }
    assert seen["discover_seconds"] < 5


def test_two_hubs_the_device_takes_the_first_by_name(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("two"))
    hub_event, *rest = seen["device_events"]
    assert hub_event["event"] == "hub"
    assert (hub_event["name"], hub_event["host"], hub_event["port"]) == ("alpha", "127.0.0.1", 18831)
    assert hub_event["others"] == [{"name": "zulu", "host": "127.0.0.1", "port": 18832}]
    assert "--hub-name NAME" in hub_event["hint"] and "--hub mqtt://HOST:PORT" in hub_event["hint"]
    # Nothing listens there: the device did go to the hub it named.
    assert rest and rest[0]["error"] == "broker_unreachable"
    assert "127.0.0.1:18831" in rest[0]["error_description"]
    assert seen["device_exit"] == 1


def test_no_hub_is_a_clear_error_after_the_timeout(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("none"))
    assert seen["device_events"] == [
        {
            "event": "error",
            "error": "no_hub_found",
            "error_description": "no LinkHub answered on the local network within 1 s; "
            "pass --hub mqtt://HOST:PORT",
        }
    ]
    assert seen["device_exit"] == 1
    assert 1 <= seen["device_seconds"] < 5


def test_stop_unregisters(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("stop"))
    assert seen["watch_saw_added"] is True
    assert seen["watch_saw_removed"] is True  # goodbye packets, not a TTL running out
    assert seen["removed_after_s"] < 2
    assert seen["after_stop"]["found"] == []


def test_default_rule_and_address_changes_on_a_real_socket(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("follow"))
    assert seen["initial"] == []
    assert seen["after_add"] == ["10.9.0.1"]  # and not 192.0.2.9
    assert [(hub["name"], hub["host"]) for hub in seen["first"]["found"]] == [("alpha", "10.9.0.1")]
    assert seen["after_change"] == ["10.9.0.7"]
    assert [(hub["name"], hub["host"]) for hub in seen["second"]["found"]] == [("alpha", "10.9.0.7")]
    assert seen["log"].count(mdns.NO_HOME_NETWORK) == 1


def test_end_to_end_link_without_hub_flag(namespaces: Namespaces) -> None:
    seen = merged(namespaces.result("end_to_end"))
    assert seen["hub_ready"] is True
    assert seen["account_add_exit"] == 0, seen["account_add_stderr"]
    events = seen["device_events"]
    assert events[0] == {"event": "hub", "name": "linkhub", "host": "127.0.0.1", "port": seen["mqtt_port"]}
    assert [event["event"] for event in events] == ["hub", "code", "linked"]
    assert seen["approve_exit"] == 0, seen["approve_stderr"]
    assert seen["device_exit"] == 0
    assert seen["hub_exit"] == 0
    assert any("advertising linkhub.local." in line for line in seen["hub_mdns_log"])
    assert any("stopped advertising" in line for line in seen["hub_mdns_log"])
