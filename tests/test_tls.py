"""TLS on the hub's own mosquitto: the CA and server certificate the hub makes
(hub/broker/tls.py, no broker), a real mosquitto with the TLS listener, the device sim
linking and then running over TLS, /ca.pem, mDNS TXT and the configuration."""

from __future__ import annotations

import json
import os
import re
import socket
import ssl
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import HubFactory, free_port, hub_pages, wait_until
from cryptography import x509

from firmware_sim import state as state_file
from firmware_sim.discovery import hub_from_records
from firmware_sim.events import Event
from firmware_sim.link import link
from firmware_sim.mqtt_client import ConnectRefused, DeviceMqttClient, MqttError, TlsFailed, TlsUnavailable
from firmware_sim.run import run
from firmware_sim.transport import TlsChoice, linked_endpoint, read_ca_file
from hub.broker import tls
from hub.broker.managed import ADMIN_USERNAME, ManagedBroker, ManagedBrokerConfig
from hub.config.loader import KEYS, resolve
from hub.config.model import HubConfig
from hub.daemon import Hub
from hub.errors import ConfigError, PortInUse
from hub.net.mdns import HubAnnouncement, txt_records
from linkhub import cli
from linkhub_protocol import (
    DeviceInfo,
    LinkCredentials,
    MqttCredentials,
    Rejection,
    encode,
    parse_link_credentials,
)
from web import WebConfig

NOW = datetime(2030, 1, 15, 12, 0, tzinfo=UTC)
NAMES = ("192.168.1.20", "linkhub.local", "localhost", "127.0.0.1")
DEVICE = str(Path(sys.executable).parent / "linkhub-device")


def load_cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the CA and the server certificate (no broker) --------------------------------------------------


def test_server_names_cover_the_hub_s_names_once_each() -> None:
    names = tls.server_names(
        ["Hub.LAN", None, "0.0.0.0", "192.168.1.20", "", "hub.lan.", "192.168.1.20"], mdns_name="kitchen"
    )
    assert names == ("hub.lan", "192.168.1.20", "kitchen.local", "localhost", "127.0.0.1")


def test_the_ca_and_server_certificate_are_made_once_then_reused(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    made = tls.ensure_tls_files(directory, NAMES, now=NOW)
    assert made.changes == ("made a new CA: there was none", "made a new server certificate: there was none")
    assert mode(directory) == 0o700
    assert mode(directory / tls.CA_KEY) == 0o600 and mode(directory / tls.SERVER_KEY) == 0o600
    assert mode(directory / tls.CA_CERT) == 0o644 and mode(made.cert) == 0o644
    assert not [p for p in directory.iterdir() if p.name.endswith(".tmp")]

    ca, server = load_cert(made.ca_cert), load_cert(made.cert)
    assert made.ca_pem == made.ca_cert.read_text()
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert timedelta(days=3640) < ca.not_valid_after_utc - NOW < timedelta(days=3660)
    assert timedelta(days=720) < server.not_valid_after_utc - NOW < timedelta(days=740)
    assert server.not_valid_before_utc < NOW  # a device whose clock lags a little still accepts it
    server.verify_directly_issued_by(ca)
    assert tls.certificate_names(server) == frozenset(NAMES)
    eku = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]

    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    again = tls.ensure_tls_files(directory, NAMES, now=NOW + timedelta(days=300))
    assert again.changes == ()
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before


@pytest.mark.parametrize(
    ("names", "later", "reason"),
    [
        ((*NAMES, "192.168.1.30"), timedelta(0), "it does not name 192.168.1.30"),
        (NAMES, timedelta(days=710), "it expires on"),
    ],
    ids=["new-address", "near-expiry"],
)
def test_the_server_certificate_is_renewed_and_the_ca_kept(
    tmp_path: Path, names: tuple[str, ...], later: timedelta, reason: str
) -> None:
    directory = tmp_path / "tls"
    first = tls.ensure_tls_files(directory, NAMES, now=NOW)
    old_server = first.cert.read_bytes()
    renewed = tls.ensure_tls_files(directory, names, now=NOW + later)
    (change,) = renewed.changes
    assert change.startswith(f"made a new server certificate: {reason}")
    assert renewed.ca_pem == first.ca_pem  # what devices trust does not change
    assert renewed.cert.read_bytes() != old_server
    server = load_cert(renewed.cert)
    server.verify_directly_issued_by(load_cert(renewed.ca_cert))
    assert tls.certificate_names(server) >= set(names)
    assert server.not_valid_after_utc - (NOW + later) > timedelta(days=700)


def test_a_ca_near_its_end_is_replaced_and_the_server_certificate_with_it(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    first = tls.ensure_tls_files(directory, NAMES, now=NOW)
    later = NOW + timedelta(days=3640)
    replaced = tls.ensure_tls_files(directory, NAMES, now=later)
    assert replaced.changes[0].startswith("made a new CA: the CA expires on")
    assert replaced.changes[1] == "made a new server certificate: it was not signed by the current CA"
    assert replaced.ca_pem != first.ca_pem
    load_cert(replaced.cert).verify_directly_issued_by(load_cert(replaced.ca_cert))


def test_a_server_certificate_never_outlives_its_ca(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    tls.ensure_tls_files(directory, NAMES, now=NOW)
    ca = load_cert(directory / tls.CA_CERT)
    (directory / tls.SERVER_CERT).unlink()
    late = ca.not_valid_after_utc - timedelta(days=100)
    tls.ensure_tls_files(directory, NAMES, now=late)
    assert load_cert(directory / tls.SERVER_CERT).not_valid_after_utc == ca.not_valid_after_utc


def test_a_damaged_ca_is_refused_not_replaced(tmp_path: Path) -> None:
    directory = tmp_path / "tls"
    tls.ensure_tls_files(directory, NAMES, now=NOW)
    (directory / tls.CA_KEY).write_text("not a key\n")
    with pytest.raises(tls.TlsError) as info:
        tls.ensure_tls_files(directory, NAMES, now=NOW)
    assert "cannot be read" in str(info.value) and "delete" in str(info.value)
    assert (directory / tls.CA_KEY).read_text() == "not a key\n"


def test_a_ca_certificate_without_its_key_is_refused_not_replaced(tmp_path: Path) -> None:
    """Devices may trust that certificate: a silent new CA would cut every one of them off."""
    directory = tmp_path / "tls"
    tls.ensure_tls_files(directory, NAMES, now=NOW)
    trusted = (directory / tls.CA_CERT).read_bytes()
    (directory / tls.CA_KEY).unlink()
    with pytest.raises(tls.TlsError, match=r"its key .* is missing") as info:
        tls.ensure_tls_files(directory, NAMES, now=NOW)
    assert "backup" in str(info.value)
    assert (directory / tls.CA_CERT).read_bytes() == trusted
    assert not (directory / tls.CA_KEY).exists()


def test_a_ca_key_without_its_certificate_is_a_crash_mid_write_and_made_again(tmp_path: Path) -> None:
    """The key is written first: a key alone means the certificate never reached anyone."""
    directory = tmp_path / "tls"
    tls.ensure_tls_files(directory, NAMES, now=NOW)
    (directory / tls.CA_CERT).unlink()
    again = tls.ensure_tls_files(directory, NAMES, now=NOW)
    assert again.changes[0] == "made a new CA: there was none"
    load_cert(again.cert).verify_directly_issued_by(load_cert(again.ca_cert))


def test_a_ca_with_someone_else_s_key_is_refused(tmp_path: Path) -> None:
    tls.ensure_tls_files(tmp_path / "a", NAMES, now=NOW)
    tls.ensure_tls_files(tmp_path / "b", NAMES, now=NOW)
    (tmp_path / "a" / tls.CA_KEY).write_bytes((tmp_path / "b" / tls.CA_KEY).read_bytes())
    with pytest.raises(tls.TlsError, match="is not the key of"):
        tls.ensure_tls_files(tmp_path / "a", NAMES, now=NOW)


def test_a_server_certificate_from_another_ca_is_made_again(tmp_path: Path) -> None:
    mine = tls.ensure_tls_files(tmp_path / "mine", NAMES, now=NOW)
    theirs = tls.ensure_tls_files(tmp_path / "theirs", NAMES, now=NOW)
    for name in (tls.SERVER_CERT, tls.SERVER_KEY):
        (mine.directory / name).write_bytes((theirs.directory / name).read_bytes())
    again = tls.ensure_tls_files(mine.directory, NAMES, now=NOW)
    assert again.changes == ("made a new server certificate: it was not signed by the current CA",)
    load_cert(again.cert).verify_directly_issued_by(load_cert(again.ca_cert))


def _tls_server(files: tls.TlsFiles) -> tuple[socket.socket, ssl.SSLContext]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files.cert, files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    return listener, context


def _handshake(files: tls.TlsFiles, client: ssl.SSLContext, server_hostname: str) -> None:
    """One TLS handshake between `client` and a server using `files`, on loopback."""
    listener, server_context = _tls_server(files)
    errors: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(listener.getsockname(), timeout=5) as raw,
            client.wrap_socket(raw, server_hostname=server_hostname),
        ):
            pass
    finally:
        thread.join(5)
        listener.close()


def test_openssl_accepts_the_certificate_for_its_names_only(tmp_path: Path) -> None:
    """What a device does: trust only the hub's CA and check the host name."""
    from firmware_sim.mqtt_client import tls_context

    files = tls.ensure_tls_files(tmp_path / "tls", NAMES, now=datetime.now(UTC))
    for name in ("127.0.0.1", "linkhub.local", "localhost"):
        _handshake(files, tls_context(files.ca_pem), name)
    with pytest.raises(ssl.SSLCertVerificationError, match="match"):
        _handshake(files, tls_context(files.ca_pem), "not-the-hub.example")
    other = tls.ensure_tls_files(tmp_path / "other", NAMES, now=datetime.now(UTC))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(files, tls_context(other.ca_pem), "127.0.0.1")


# --- a real mosquitto with the TLS listener --------------------------------------------------------


@pytest.fixture
def tls_broker(tmp_path: Path) -> Iterator[ManagedBroker]:
    config = ManagedBrokerConfig(
        tmp_path / "broker",
        "127.0.0.1",
        free_port(),
        tls_port=free_port(),
        tls_names=tls.server_names(["127.0.0.1"], mdns_name="linkhub"),
    )
    broker = ManagedBroker(config)
    broker.start()
    yield broker
    broker.stop()


def admin_client(broker: ManagedBroker, *, ca_pem: str | None) -> DeviceMqttClient:
    return DeviceMqttClient(
        client_id=f"test-{os.getpid()}-{threading.get_ident()}",
        username=ADMIN_USERNAME,
        password=broker.admin_password,
        tls_ca_pem=ca_pem,
    )


def test_the_broker_listens_with_tls_on_the_hub_s_ca(tls_broker: ManagedBroker, tmp_path: Path) -> None:
    conf = (tls_broker.config.directory / "mosquitto.conf").read_text()
    tls_block = conf[conf.index(f"listener {tls_broker.config.tls_port} 127.0.0.1") :]
    assert "certfile" in tls_block and "keyfile" in tls_block and "tls_version tlsv1.2" in tls_block
    assert tls_broker.ca_pem is not None and tls_broker.ca_pem.startswith("-----BEGIN CERTIFICATE-----")

    with admin_client(tls_broker, ca_pem=tls_broker.ca_pem) as client:
        client.connect("127.0.0.1", tls_broker.config.tls_port, timeout=5)
        assert client.is_connected()
        client.subscribe("$CONTROL/dynamic-security/v1/response")  # same identity, same rights
    with admin_client(tls_broker, ca_pem=tls_broker.ca_pem) as client:
        client.connect("localhost", tls_broker.config.tls_port, timeout=5)  # a name it also carries
        assert client.is_connected()

    wrong = tls.ensure_tls_files(tmp_path / "someone-else", ("127.0.0.1",), now=datetime.now(UTC))
    with admin_client(tls_broker, ca_pem=wrong.ca_pem) as client, pytest.raises(TlsFailed) as info:
        client.connect("127.0.0.1", tls_broker.config.tls_port, timeout=5)
    assert "not the one this device trusts" in str(info.value)

    with admin_client(tls_broker, ca_pem=None) as client, pytest.raises(MqttError):
        client.connect("127.0.0.1", tls_broker.config.tls_port, timeout=3)  # plaintext on the TLS port
    with admin_client(tls_broker, ca_pem=tls_broker.ca_pem) as client, pytest.raises(TlsFailed):
        client.connect("127.0.0.1", tls_broker.config.port, timeout=3)  # TLS on the plaintext port
    with admin_client(tls_broker, ca_pem=None) as client:
        client.connect("127.0.0.1", tls_broker.config.port, timeout=5)  # the plain listener stays
        assert client.is_connected()


def test_a_restart_keeps_the_ca(tls_broker: ManagedBroker) -> None:
    ca_pem = tls_broker.ca_pem
    tls_broker.stop()
    tls_broker.start()
    assert tls_broker.ca_pem == ca_pem
    with admin_client(tls_broker, ca_pem=ca_pem) as client:
        client.connect("127.0.0.1", tls_broker.config.tls_port, timeout=5)


def test_a_taken_tls_port_is_named_with_the_way_out(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        broker = ManagedBroker(ManagedBrokerConfig(tmp_path / "b", "127.0.0.1", free_port(), tls_port=port))
        with pytest.raises(PortInUse) as info:
            broker.start()
    assert f"the TLS port {port}" in str(info.value) and "--mqtt-tls-port" in str(info.value)
    assert not broker.running


# --- the device sim over TLS, end to end ----------------------------------------------------------------


def owner(hub: Hub) -> int:
    return hub.accounts.create("alice", "correct horse battery").id


class Device:
    """firmware_sim's link or run in a thread, its events in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.exit_code: int | None = None
        self._thread: threading.Thread | None = None

    def start(self, target: Any, *args: Any, **kwargs: Any) -> Device:
        def body() -> None:
            self.exit_code = target(*args, on_event=self.events.append, **kwargs)

        self._thread = threading.Thread(target=body, daemon=True)
        self._thread.start()
        return self

    def wait_for(self, name: str, timeout_s: float = 20) -> Event:
        wait_until(lambda: any(e["event"] in (name, "error") for e in self.events), timeout_s, name)
        event = next(e for e in self.events if e["event"] in (name, "error"))
        assert event["event"] == name, event
        return event

    def join(self) -> int:
        assert self._thread is not None
        self._thread.join(20)
        assert self.exit_code is not None
        return self.exit_code


def link_device(hub: Hub, state: Path, *, port: int, ca_pem: str | None = None) -> Device:
    device = Device().start(
        link,
        "127.0.0.1",
        port,
        DeviceInfo("Kitchen Lamp", "LMP-1", address="127.0.0.1"),
        state,
        timeout_s=30,
        retry_interval_s=0.5,
        ca_pem=ca_pem,
    )
    code = device.wait_for("code")["user_code"]
    hub.links.approve(code, owner(hub))
    assert device.wait_for("linked")["tls"] is True  # its first own connection is already over TLS
    assert device.join() == 0
    return device


def broker_log(hub: Hub) -> str:
    return (hub.config.broker_dir / "mosquitto.log").read_text()


def test_a_device_links_then_runs_over_tls(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = make_hub(tls=True)
    assert hub.endpoints is not None and hub.endpoints.device_tls_port == hub.config.mqtt_tls_port
    state = tmp_path / "lamp.json"
    link_device(hub, state, port=hub.config.mqtt_port)  # asks on the plain listener

    saved = state_file.load(state)
    assert saved.mqtt is not None and saved.mqtt.tls_port == hub.config.mqtt_tls_port
    assert saved.mqtt.ca_cert == hub.ca_certificate and saved.mqtt.port == hub.config.mqtt_port
    assert mode(state) == 0o600

    stop = threading.Event()
    device = Device().start(run, state, stop=stop)
    online = device.wait_for("online")
    assert online == {"event": "online", "device_id": saved.device_id, "tls": True}
    # The broker saw the device come in on the TLS port.
    wait_until(
        lambda: re.search(rf"on port {hub.config.mqtt_tls_port}\.", broker_log(hub)), what="TLS connection"
    )
    wait_until(lambda: hub.links.list_devices(None)[0].online, what="the hub sees it online")
    stop.set()
    assert device.join() == 0
    wait_until(lambda: not hub.links.list_devices(None)[0].online, what="its offline status arrives")


def test_run_follows_the_saved_credentials_unless_told(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = make_hub(tls=True)
    state = tmp_path / "lamp.json"
    link_device(hub, state, port=hub.config.mqtt_port)
    saved = state_file.load(state)
    assert saved.mqtt is not None

    stop = threading.Event()
    plain = Device().start(run, state, stop=stop, tls=TlsChoice(use=False))
    assert plain.wait_for("online")["tls"] is False
    stop.set()
    assert plain.join() == 0

    # A saved CA that is not the hub's: the device refuses the broker.
    wrong = tls.ensure_tls_files(tmp_path / "other-ca", ("127.0.0.1",), now=datetime.now(UTC))
    state_file.save(state, saved.__class__(**{**_fields(saved), "mqtt": _with_ca(saved.mqtt, wrong.ca_pem)}))
    refused = Device().start(run, state, stop=threading.Event())
    event = refused.wait_for("error")
    assert event["error"] == "tls_failed" and "not the one this device trusts" in event["error_description"]
    assert refused.join() == 1

    # --cafile with the right CA overrides the saved one.
    stop = threading.Event()
    fixed = Device().start(run, state, stop=stop, tls=TlsChoice(ca_pem=hub.ca_certificate))
    assert fixed.wait_for("online")["tls"] is True
    stop.set()
    assert fixed.join() == 0


def _fields(st: state_file.DeviceState) -> dict[str, Any]:
    return {name: getattr(st, name) for name in st.__dataclass_fields__}


def _with_ca(creds: MqttCredentials, ca_pem: str) -> MqttCredentials:
    return MqttCredentials(
        creds.host, creds.port, creds.client_id, creds.username, creds.password, creds.tls_port, ca_pem
    )


def test_a_device_links_over_tls_with_the_ca_from_the_web_page(make_hub: HubFactory, tmp_path: Path) -> None:
    hub = make_hub(tls=True)
    page = web_app(hub).test_client().get("/ca.pem")
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(page.data)
    ca_pem = read_ca_file(ca_file)
    link_device(hub, tmp_path / "lamp.json", port=hub.config.mqtt_tls_port, ca_pem=ca_pem)
    log = broker_log(hub)
    # Both the bootstrap connection and the device's own one came in with TLS.
    assert len(re.findall(rf"on port {hub.config.mqtt_tls_port}\.", log)) >= 2


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])  # mqtts://: as `linkhub run` prints its TLS listener
def test_the_cli_links_and_runs_over_tls(make_hub: HubFactory, tmp_path: Path, scheme: str) -> None:
    hub = make_hub(tls=True)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(hub.ca_certificate or "")
    state = tmp_path / "lamp.json"
    linking = subprocess.Popen(
        [
            DEVICE, "link", "--name", "Lamp", "--model", "LMP-1", "--state", str(state),
            "--hub", f"{scheme}://127.0.0.1:{hub.config.mqtt_tls_port}", "--cafile", str(ca_file), "--json",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert linking.stdout is not None
    code = json.loads(linking.stdout.readline())
    assert code["event"] == "code", code
    hub.links.approve(code["user_code"], owner(hub))
    assert json.loads(linking.stdout.readline())["tls"] is True
    assert linking.wait(timeout=30) == 0

    running = subprocess.Popen(
        [DEVICE, "run", "--state", str(state), "--json"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert running.stdout is not None
        assert json.loads(running.stdout.readline()) == {
            "event": "online",
            "device_id": state_file.load(state).device_id,
            "tls": True,
        }
    finally:
        running.terminate()
        assert running.wait(timeout=20) == 0

    usage = subprocess.run(
        [DEVICE, "link", "--name", "L", "--model", "M", "--state", str(tmp_path / "b.json"), "--tls",
         "--hub", "mqtt://127.0.0.1:1"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert usage.returncode == 2 and "--tls needs --cafile FILE" in usage.stderr
    bad = subprocess.run(
        [DEVICE, "run", "--state", str(state), "--cafile", str(state), "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"] == "tls_unavailable"


def test_a_hub_without_tls_sends_no_tls_fields(make_hub: HubFactory) -> None:
    hub = make_hub()
    assert hub.ca_certificate is None
    assert hub.endpoints is not None and hub.endpoints.device_tls_port is None
    owner(hub)  # else every path redirects to /setup
    assert web_app(hub).test_client().get("/ca.pem").status_code == 404


# --- the web page's /ca.pem -------------------------------------------------------------------------


def web_app(hub: Hub) -> Any:
    return hub_pages(hub, WebConfig(secret_key="test", testing=True), ca_certificate=hub.ca_certificate)


def test_ca_pem_is_public_even_before_the_first_account(make_hub: HubFactory) -> None:
    hub = make_hub(tls=True)
    assert not hub.accounts.has_accounts()  # every page would redirect to /setup
    client = web_app(hub).test_client()
    response = client.get("/ca.pem")
    assert response.status_code == 200
    assert response.data.decode() == hub.ca_certificate == (hub.config.broker_dir / "tls/ca.pem").read_text()
    assert response.headers["Content-Type"] == "application/x-pem-file"
    assert "linkhub-ca.pem" in response.headers["Content-Disposition"]
    assert client.head("/ca.pem").data == b""
    assert client.post("/ca.pem").status_code == 405
    assert client.get("/link").status_code == 302  # the rest still wants /setup first


# --- the wire protocol and the device's state -------------------------------------------------------------


def test_the_credentials_carry_the_tls_port_and_ca() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    creds = MqttCredentials("hub.lan", 1884, "dev-abc123", "dev-abc123", "pw", tls_port=8883, ca_cert=pem)
    sealed = encode(LinkCredentials("r" * 16, "dev-abc123", creds))  # what the hub seals to the device
    opened = parse_link_credentials(sealed)
    assert isinstance(opened, LinkCredentials) and opened.mqtt == creds
    body = json.loads(sealed)
    assert (body["mqtt"]["tls_port"], body["mqtt"]["ca_cert"]) == (8883, pem)
    plain = MqttCredentials("hub.lan", 1884, "dev-abc123", "dev-abc123", "pw")
    assert "tls_port" not in json.loads(encode(LinkCredentials("r" * 16, "dev-abc123", plain)))["mqtt"]
    assert pem not in repr(creds)
    # The device keeps them in its state file as they came.
    st = state_file.DeviceState(device_id="dev-abc123", mqtt=creds)
    assert state_file.DeviceState.from_json(json.loads(json.dumps(st.to_json()))) == st


@pytest.mark.parametrize(
    "tls_fields",
    [
        {"tls_port": 8883},
        {"ca_cert": "-----BEGIN CERTIFICATE-----\n"},
        {"tls_port": 0, "ca_cert": "-----BEGIN CERTIFICATE-----\n"},
        {"tls_port": "8883", "ca_cert": "-----BEGIN CERTIFICATE-----\n"},
        {"tls_port": 8883, "ca_cert": "not a certificate"},
        {"tls_port": 8883, "ca_cert": "-----BEGIN CERTIFICATE-----" + "A" * 9000},
    ],
)
def test_bad_tls_fields_make_the_credentials_unreadable(tls_fields: dict[str, Any]) -> None:
    mqtt = {"host": "h", "port": 1884, "client_id": "dev-abc", "username": "dev-abc", "password": "p"}
    payload = {
        "v": 1,
        "type": "link_credentials",
        "request_id": "r" * 16,
        "device_id": "dev-abc",
        "mqtt": {**mqtt, **tls_fields},
    }
    assert isinstance(parse_link_credentials(json.dumps(payload).encode()), Rejection)
    with pytest.raises(state_file.StateError):
        state_file.DeviceState.from_json({"device_id": "dev-abc", "mqtt": payload["mqtt"]})
    good = parse_link_credentials(json.dumps({**payload, "mqtt": mqtt}).encode())
    assert isinstance(good, LinkCredentials)  # the same without the bad fields is fine


def test_the_endpoint_follows_the_credentials_and_the_person() -> None:
    pem = "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"
    with_tls = MqttCredentials("hub.lan", 1884, "d-1", "d-1", "p", tls_port=8883, ca_cert=pem)
    plain = MqttCredentials("hub.lan", 1884, "d-1", "d-1", "p")
    assert linked_endpoint(with_tls).url == "mqtts://hub.lan:8883"
    assert linked_endpoint(with_tls).ca_pem == pem
    assert linked_endpoint(with_tls, TlsChoice(use=False)).url == "mqtt://hub.lan:1884"
    assert linked_endpoint(with_tls, TlsChoice(ca_pem="other")).ca_pem == "other"
    assert linked_endpoint(plain).url == "mqtt://hub.lan:1884"
    for choice in (TlsChoice(use=True), TlsChoice(ca_pem=pem)):
        with pytest.raises(TlsUnavailable, match="no TLS port"):
            linked_endpoint(plain, choice)
    with pytest.raises(TlsUnavailable, match="goes with TLS"):
        linked_endpoint(with_tls, TlsChoice(use=False, ca_pem=pem))


def test_read_ca_file_says_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(TlsUnavailable, match="cannot read"):
        read_ca_file(tmp_path / "missing.pem")
    (tmp_path / "text.pem").write_text("hello\n")
    with pytest.raises(TlsUnavailable, match="holds no PEM certificate"):
        read_ca_file(tmp_path / "text.pem")
    (tmp_path / "broken.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsUnavailable, match="cannot be used"):
        read_ca_file(tmp_path / "broken.pem")


# --- mDNS --------------------------------------------------------------------------------------------


def test_mdns_tells_devices_the_tls_port() -> None:
    announcement = HubAnnouncement(label="linkhub", hub_id="abc", mqtt_port=1884, http_port=8080)
    assert "mqtt_tls_port" not in txt_records(announcement, ["192.168.1.20"])
    with_tls = HubAnnouncement(
        label="linkhub", hub_id="abc", mqtt_port=1884, http_port=8080, mqtt_tls_port=8883
    )
    txt = txt_records(with_tls, ["192.168.1.20"])
    assert txt["mqtt_tls_port"] == "8883" and txt["mqtt_port"] == "1884"
    found = hub_from_records("linkhub", txt, ["192.168.1.20"], 1884, "linkhub.local.")
    assert found is not None and (found.port, found.tls_port) == (1884, 8883)
    bad = hub_from_records("linkhub", {**txt, "mqtt_tls_port": "x"}, ["192.168.1.20"], 1884, None)
    assert bad is not None and bad.tls_port is None


# --- configuration ---------------------------------------------------------------------------------


def test_tls_is_off_unless_asked_for() -> None:
    config = HubConfig(data_dir=Path("/srv/linkhub"), database_url="sqlite://")
    assert config.mqtt_tls_port == 0


@pytest.mark.parametrize(
    ("flags", "env", "file", "source"),
    [
        ({"mqtt_tls_port": "8883"}, {}, {}, "flag --mqtt-tls-port"),
        ({}, {"LINKHUB_MQTT_TLS_PORT": "8883"}, {"mqtt_tls_port": 9999}, "env LINKHUB_MQTT_TLS_PORT"),
        ({}, {}, {"mqtt_tls_port": 8883}, "file /etc/linkhub.toml"),
    ],
)
def test_the_tls_port_comes_from_each_source(
    flags: dict[str, Any], env: dict[str, str], file: dict[str, Any], source: str
) -> None:
    resolution = resolve(flags, env, file, data_dir=Path("/srv"), file_path=Path("/etc/linkhub.toml"))
    assert resolution.problems == ()
    assert resolution.hub_config().mqtt_tls_port == 8883
    assert resolution.setting("mqtt_tls_port").source == source
    assert "mqtt_tls_port" in {key.name for key in KEYS}


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"mqtt_tls_port": 8883, "broker": "mqtt://a:b@127.0.0.1:1883"}, "set TLS up on that broker"),
        ({"mqtt_tls_port": 1884}, "TLS needs a port of its own"),
        ({"mqtt_tls_port": 70000}, "expected a whole number from 0 to 65535, got 70000"),
    ],
)
def test_impossible_tls_settings_are_refused(values: dict[str, Any], problem: str) -> None:
    resolution = resolve({}, {}, values, data_dir=Path("/srv"), file_path=Path("/etc/linkhub.toml"))
    assert len(resolution.problems) == 1 and problem in resolution.problems[0]
    with pytest.raises(ConfigError):
        resolution.hub_config()


def test_config_check_shows_the_tls_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in KEYS:
        monkeypatch.delenv(key.env, raising=False)
    assert cli.main(["config", "check", "--data-dir", str(tmp_path)]) == 0
    assert re.search(r"mqtt_tls_port\s+0 \(no TLS\)\s+\(default\)", capsys.readouterr().out)
    assert cli.main(["config", "check", "--data-dir", str(tmp_path), "--mqtt-tls-port", "8883"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"mqtt_tls_port\s+8883\s+\(flag --mqtt-tls-port\)", out)
    assert out.rstrip().endswith("configuration OK")
    assert cli.main(["config", "check", "--data-dir", str(tmp_path), "--mqtt-tls-port", "1884"]) == 1
    assert "TLS needs a port of its own" in capsys.readouterr().out


# --- backup -------------------------------------------------------------------------------------------


def test_a_backup_keeps_the_ca(make_hub: HubFactory, tmp_path: Path) -> None:
    from hub.store.backup import create_backup

    hub = make_hub(tls=True)
    report = create_backup(hub.config.data_dir, tmp_path / "backup.tar.gz", hub.config.database_url)
    kept = {entry["path"] for entry in report.manifest["files"]}
    assert {"broker/tls/ca.key", "broker/tls/ca.pem"} <= kept
    assert not any("server" in path for path in kept)  # made again at start


# --- finding the TLS port over mDNS (discovery faked; tests/test_mdns.py covers the network) ----------


def test_link_over_tls_takes_the_tls_port_from_mdns(
    make_hub: HubFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from firmware_sim import cli as device_cli
    from firmware_sim import discovery

    hub = make_hub(tls=True)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_text(hub.ca_certificate or "")
    port, tls_port = hub.config.mqtt_port, hub.config.mqtt_tls_port
    answers = {
        "plain": discovery.FoundHub("plain", "127.0.0.1", port, txt={"v": "1", "mqtt_port": str(port)}),
        "secure": discovery.FoundHub(
            "secure",
            "127.0.0.1",
            port,
            txt={"v": "1", "mqtt_port": str(port), "mqtt_tls_port": str(tls_port)},
        ),
    }
    monkeypatch.setattr(discovery, "discover", lambda *_a, **_k: [answers[which]])

    def device_link(state: str) -> list[str]:
        return ["link", "--name", "Lamp", "--model", "L1", "--state", str(tmp_path / state), "--json",
                "--cafile", str(ca_file), "--timeout", "30"]  # fmt: skip

    which = "plain"
    assert device_cli.main(device_link("a.json")) == 1
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["error"] == "tls_unavailable" and "--hub mqtt://HOST:PORT" in event["error_description"]

    which = "secure"
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(device_cli.main(device_link("b.json"))), daemon=True
    )
    thread.start()
    out: list[str] = []

    def code() -> str | None:
        out.extend(capsys.readouterr().out.splitlines())
        return next((json.loads(line)["user_code"] for line in out if '"code"' in line), None)

    wait_until(code, what="the code")
    hub.links.approve(str(code()), owner(hub))
    thread.join(30)
    assert result == [0]
    assert len(re.findall(rf"on port {tls_port}\.", broker_log(hub))) >= 2  # bootstrap and own connection


# --- `linkhub run --mqtt-tls-port` as a person starts it ----------------------------------------------


def test_linkhub_run_with_tls_says_where_and_serves_its_ca(tmp_path: Path) -> None:
    import signal
    import urllib.request

    from test_shell_path import read_lines_until, run_command

    http_port, mqtt_port, tls_port = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [*run_command(tmp_path / "data", http_port, mqtt_port), "--mqtt-tls-port", str(tls_port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = read_lines_until(process.stdout, lambda line: line.startswith("Stop with"))
        assert (
            f"  MQTT over TLS: mqtts://127.0.0.1:{tls_port} (the CA to trust: http://127.0.0.1:{http_port}/ca.pem)"
            in banner
        )
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/ca.pem", timeout=10) as response:
            served = response.read().decode()
        assert served == (tmp_path / "data/broker/tls/ca.pem").read_text()
        with DeviceMqttClient(
            client_id="probe", username="nobody", password="x", tls_ca_pem=served
        ) as client:
            with pytest.raises(MqttError) as info:  # TLS is fine; the broker then refuses the login
                client.connect("127.0.0.1", tls_port, timeout=5)
            assert isinstance(info.value, ConnectRefused) and info.value.not_authorised
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
