"""/healthz, /metrics, JSON logs and a clean SIGTERM.

In-process hubs on a real mosquitto for the counters and the degraded cases
(a broker killed and restarted, a database that fails or hangs), and
`linkhub run` as a subprocess for the whole path an operator sees: probes,
a device linked from the shell, SIGTERM, exit 0, its mosquitto gone, and a
restart that still knows the device.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, HubFactory, RunningBroker, free_port, hub_pages, wait_until
from device_doubles import BootstrapDevice, DeviceThread
from flask import Flask
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine
from test_shell_path import RunningHub, device_link, events, read_lines_until, run_command
from waitress.server import create_server

from hub.daemon import Hub
from hub.services import metrics
from hub.services.metrics import ComponentHealth, HealthProbe, HealthReport, HubMetrics
from linkhub.server import JsonFormatter, close_gracefully
from linkhub_protocol import DeviceInfo, ErrorCode, ErrorReply
from web import WebConfig

LAMP = DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2", address="192.168.1.42", firmware="1.0.3")
COUNTERS = (
    "linkhub_link_requests_total",
    "linkhub_link_approvals_total",
    "linkhub_link_denials_total",
    "linkhub_link_expiries_total",
    "linkhub_settings_deliveries_total",
)
OTHER_METRICS = (
    "linkhub_devices_online",
    "linkhub_broker_connected",
    "linkhub_link_request_duration_seconds_count",
    "linkhub_settings_delivery_duration_seconds_count",
)


# --- helpers --------------------------------------------------------------------------------------


def samples(text: str) -> dict[str, float]:
    """Every unlabelled sample of a Prometheus text exposition (histogram buckets left out)."""
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


@pytest.fixture
def probes() -> Iterator[Callable[[Hub], Flask]]:
    """A web app for a hub with the same health probe and metrics `linkhub run` wires in."""
    made: list[HealthProbe] = []

    def make(hub: Hub) -> Flask:
        assert hub.engine is not None
        probe = HealthProbe(hub.engine)
        made.append(probe)
        return hub_pages(
            hub,
            WebConfig(secret_key="test", testing=True),
            health=probe,
            metrics=metrics.of(hub.engine).exposition,
        )

    yield make
    for probe in made:
        probe.close()


def metric_values(app: Flask) -> dict[str, float]:
    response = app.test_client().get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain")
    return samples(response.get_data(as_text=True))


# --- /healthz and /metrics in process ---------------------------------------------------------------


def test_healthz_is_ok_without_signing_in(hub: Hub, probes: Callable[[Hub], Flask]) -> None:
    # No account yet: every page would redirect to /setup, but a probe gets its answer.
    assert not hub.accounts.has_accounts()
    response = probes(hub).test_client().get("/healthz")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["status"] == "ok"
    assert body["broker"]["ok"] is True and body["database"]["ok"] is True
    assert body["database"]["backend"] == "sqlite"
    assert "linkhub.db" not in json.dumps(body)  # no database URL (it may hold a password)
    assert probes(hub).test_client().post("/healthz").status_code == 405


def test_beyond_loopback_only_a_bare_liveness_answer_without_the_token(hub: Hub) -> None:
    """A guest on the LAN learns that the hub is up, not what is down or any counter."""
    assert hub.engine is not None
    probe = HealthProbe(hub.engine)
    try:
        app = hub_pages(
            hub,
            WebConfig(secret_key="test", testing=True, probe_token="s3cret-probe"),
            health=probe,
            metrics=metrics.of(hub.engine).exposition,
        )
        guest = app.test_client()
        guest.environ_base["REMOTE_ADDR"] = "192.168.1.66"
        bare = guest.get("/healthz")
        assert (bare.status_code, bare.get_json()) == (200, {"status": "ok"})
        refused = guest.get("/metrics")
        assert refused.status_code == 403 and b"linkhub_" not in refused.data
        wrong = {"Authorization": "Bearer s3cret-prob"}
        assert guest.get("/healthz", headers=wrong).get_json() == {"status": "ok"}
        assert guest.get("/metrics", headers=wrong).status_code == 403

        right = {"Authorization": "Bearer s3cret-probe"}
        assert guest.get("/healthz", headers=right).get_json()["database"]["ok"] is True
        with_token = guest.get("/metrics", headers=right)
        assert with_token.status_code == 200 and "linkhub_broker_connected" in samples(with_token.text)
        for loopback in ("127.0.0.1", "::1"):
            local = app.test_client()
            local.environ_base["REMOTE_ADDR"] = loopback
            assert local.get("/healthz").get_json()["broker"]["ok"] is True, loopback
            assert local.get("/metrics").status_code == 200, loopback
    finally:
        probe.close()


def test_without_a_token_only_loopback_reads_the_detail(hub: Hub, probes: Callable[[Hub], Flask]) -> None:
    guest = probes(hub).test_client()
    guest.environ_base["REMOTE_ADDR"] = "10.0.0.5"
    assert guest.get("/healthz").get_json() == {"status": "ok"}
    assert guest.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 403
    assert guest.get("/metrics", headers={"Authorization": "Bearer None"}).status_code == 403


def test_without_probes_the_paths_are_plain_404s(hub: Hub) -> None:
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True))
    hub.accounts.create("alice", "correct horse battery")  # else every path redirects to /setup
    assert app.test_client().get("/healthz").status_code == 404
    assert app.test_client().get("/metrics").status_code == 404


def test_counters_follow_link_requests_and_decisions(
    make_hub: HubFactory, broker: RunningBroker, probes: Callable[[Hub], Flask]
) -> None:
    clock = FakeClock()
    hub = make_hub(clock=clock)
    app = probes(hub)
    before = metric_values(app)
    assert set(COUNTERS + OTHER_METRICS) <= set(before), sorted(before)
    assert all(before[name] == 0 for name in COUNTERS)
    owner = hub.accounts.create("alice", "correct horse battery")

    devices = [BootstrapDevice(broker.port, LAMP) for _ in range(3)]
    try:
        approved, denied, _expiring = (device.request() for device in devices)
        devices[0].send()  # a poll: answered and timed, not a new request
        devices[0].wait_reply()
        hub.links.approve(approved.user_code, owner.id)
        hub.links.deny(denied.user_code, owner.id)
        clock.advance(901)  # the sweeper expires the third within a second
        reply = devices[2].wait_reply(timeout_s=10)
        assert isinstance(reply, ErrorReply) and reply.error is ErrorCode.EXPIRED_TOKEN
    finally:
        for device in devices:
            device.close()

    after = metric_values(app)
    assert after["linkhub_link_requests_total"] == 3
    assert after["linkhub_link_approvals_total"] == 1
    assert after["linkhub_link_denials_total"] == 1
    assert after["linkhub_link_expiries_total"] == 1
    assert after["linkhub_link_request_duration_seconds_count"] == 4  # three requests and one poll
    assert after["linkhub_broker_connected"] == 1


def test_settings_deliveries_and_devices_online(
    hub: Hub, broker: RunningBroker, tmp_path: Path, probes: Callable[[Hub], Flask]
) -> None:
    app = probes(hub)
    account_id = hub.accounts.create("alice", "correct horse battery").id
    device = DeviceThread(broker.port, tmp_path / "lamp.json").start()
    device_id = hub.links.approve(device.wait_code(), account_id).device_id
    assert device.join() == 0  # online with its credentials (the receipt), then offline as it exits
    wait_until(
        lambda: [(d.confirmed, d.online) for d in hub.links.list_devices()] == [(True, False)],
        what="the device's online and offline statuses",
    )
    before = metric_values(app)
    assert before["linkhub_link_approvals_total"] == 1
    assert before["linkhub_devices_online"] == 0  # read from the database at scrape time
    hub.links.device_status(device_id, True)
    assert metric_values(app)["linkhub_devices_online"] == 1

    hub.settings.set_preferences(account_id, {"theme": "dark"}, origin="test")
    after = metric_values(app)
    assert after["linkhub_settings_deliveries_total"] == before["linkhub_settings_deliveries_total"] + 1
    assert (
        after["linkhub_settings_delivery_duration_seconds_count"]
        == before["linkhub_settings_delivery_duration_seconds_count"] + 1
    )


def test_each_hub_has_its_own_registry() -> None:
    """Keyed by the hub's engine: two hubs in one process never add to each other's counts."""
    first, second = create_engine("sqlite://"), create_engine("sqlite://")
    assert metrics.of(first) is metrics.of(first)
    assert metrics.of(first).registry is not metrics.of(second).registry
    metrics.of(first).link_approvals.inc()
    counted = [samples(metrics.of(e).exposition()[0].decode()) for e in (first, second)]
    assert [c["linkhub_link_approvals_total"] for c in counted] == [1, 0]
    assert counted[1]["linkhub_devices_online"] != counted[1]["linkhub_devices_online"]  # NaN: no tables


def test_a_lost_broker_makes_healthz_degraded_until_it_is_back(
    make_hub: HubFactory, own_broker: RunningBroker, probes: Callable[[Hub], Flask]
) -> None:
    hub = make_hub(on_broker=own_broker)
    client = probes(hub).test_client()
    assert client.get("/healthz").status_code == 200

    own_broker.broker.kill()
    wait_until(lambda: client.get("/healthz").status_code == 503, timeout_s=15, what="healthz to say 503")
    body = client.get("/healthz").get_json()
    assert body["status"] == "degraded"
    assert body["broker"]["ok"] is False and "not connected" in body["broker"]["error"]
    assert body["database"]["ok"] is True
    assert samples(client.get("/metrics").get_data(as_text=True))["linkhub_broker_connected"] == 0

    own_broker.broker.start()  # same directory and port: same identities
    wait_until(lambda: client.get("/healthz").status_code == 200, timeout_s=20, what="healthz to recover")
    recovered = client.get("/healthz").get_json()
    assert recovered["status"] == "ok" and recovered["database"]["ok"] is True
    assert recovered["broker"] == {"ok": True, "address": f"127.0.0.1:{own_broker.port}"}
    # Both of the hub's connections are back, the one link requests come in on too.
    device = BootstrapDevice(own_broker.port, LAMP)
    try:
        assert device.request().user_code
    finally:
        device.close()


class _FailingEngine:
    """Stands in for an Engine whose database cannot be reached, or hangs."""

    def __init__(self, *, hang: threading.Event | None = None) -> None:
        self.dialect = type("Dialect", (), {"name": "postgresql"})()
        self._hang = hang

    def connect(self) -> Any:
        if self._hang is not None:
            self._hang.wait(timeout=10)
        raise ConnectionRefusedError("postgresql://linkhub:hunter2@db/linkhub refused")


def test_a_failing_database_is_reported_without_its_message() -> None:
    probe = HealthProbe(_FailingEngine())  # type: ignore[arg-type]
    try:
        report = probe()
    finally:
        probe.close()
    assert not report.ok and not report.database.ok
    assert report.as_json()["database"] == {
        "ok": False,
        "backend": "postgresql",
        "error": "SELECT 1 failed (ConnectionRefusedError)",
    }
    assert "hunter2" not in json.dumps(report.as_json())
    assert report.broker.ok is False  # this engine's hub never connected


def test_a_hanging_database_is_reported_within_the_timeout() -> None:
    hang = threading.Event()
    probe = HealthProbe(_FailingEngine(hang=hang), timeout_s=0.2)  # type: ignore[arg-type]
    try:
        started = time.monotonic()
        report = probe()
        assert time.monotonic() - started < 2
        assert report.database == ComponentHealth(
            False, {"backend": "postgresql", "error": "no answer within 0.2 s"}
        )
    finally:
        hang.set()
        probe.close()


def test_a_broken_health_check_is_a_503(hub: Hub) -> None:
    def broken() -> HealthReport:
        raise RuntimeError("bug")

    app = hub_pages(
        hub, WebConfig(secret_key="test", testing=True), health=broken, metrics=HubMetrics().exposition
    )
    response = app.test_client().get("/healthz")
    assert response.status_code == 503 and response.get_json()["status"] == "degraded"


# --- structured logs ----------------------------------------------------------------------------------


def test_json_log_lines_carry_extra_fields_but_no_secrets() -> None:
    record = logging.LogRecord(
        "hub.test", logging.WARNING, __file__, 1, "device %s refused", ("dev-1",), None
    )
    record.device_id = "dev-1"
    record.password = "hunter2"
    record.account_service_token = "abc"
    line = json.loads(JsonFormatter().format(record))
    assert line["level"] == "WARNING" and line["logger"] == "hub.test"
    assert line["message"] == "device dev-1 refused"
    assert line["device_id"] == "dev-1"
    assert line["password"] == "***" and line["account_service_token"] == "***"
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exception"]


# --- stopping ---------------------------------------------------------------------------------------------


def test_closing_a_web_server_finishes_the_request_in_flight() -> None:
    """What SIGTERM does to the web page: a request being served still gets its answer."""
    entered, release = threading.Event(), threading.Event()

    def slow_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        entered.set()
        release.wait(timeout=10)
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"done\n"]

    server: Any = create_server(slow_app, host="127.0.0.1", port=0, threads=2)
    port = int(server.effective_port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    answers: list[tuple[int, bytes]] = []
    client = threading.Thread(target=lambda: answers.append(_get(f"http://127.0.0.1:{port}/")))
    client.start()
    assert entered.wait(timeout=10)

    closer = threading.Thread(target=close_gracefully, args=(server, thread))
    closer.start()
    closer.join(timeout=0.2)  # it must still be waiting for the request in flight
    assert closer.is_alive(), "closed without waiting for the request in flight"
    release.set()
    closer.join(timeout=15)
    client.join(timeout=15)
    assert not closer.is_alive() and not thread.is_alive()
    assert answers == [(200, b"done\n")]
    assert not _port_open(port)


# --- `linkhub run` as a subprocess ----------------------------------------------------------------------


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _start(data_dir: Path, http_port: int, mqtt_port: int, log: Path) -> subprocess.Popen[str]:
    with log.open("a") as stderr:
        process = subprocess.Popen(
            [*run_command(data_dir, http_port, mqtt_port), "--poll-interval", "1", "--log-format", "json"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    assert process.stdout is not None
    read_lines_until(process.stdout, lambda line: line.startswith("Stop with"))
    return process


def test_linkhub_run_probes_counts_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    data_dir, http_port, mqtt_port = tmp_path / "data", free_port(), free_port()
    log = tmp_path / "hub.log"
    process = _start(data_dir, http_port, mqtt_port, log)
    try:
        status, body = _get(f"http://127.0.0.1:{http_port}/healthz")
        health = json.loads(body)
        assert status == 200, health
        assert health["status"] == "ok" and health["broker"]["ok"] and health["database"]["ok"]
        status, body = _get(f"http://127.0.0.1:{http_port}/metrics")
        assert status == 200
        before = samples(body.decode())
        assert set(COUNTERS + OTHER_METRICS) <= set(before)
        assert before["linkhub_link_approvals_total"] == 0

        hub = RunningHub(process, data_dir, http_port, mqtt_port, [])
        added = hub.cli("account", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
        assert added.returncode == 0, added.stderr
        device = device_link(hub, tmp_path / "lamp.json")
        (code_event,) = events(device, until="code")
        approved = hub.cli("link", "approve", code_event["user_code"], "--account", "alice")
        assert approved.returncode == 0, approved.stderr
        (linked,) = events(device, until="linked")
        assert linked["event"] == "linked" and device.wait(timeout=10) == 0

        after = samples(_get(f"http://127.0.0.1:{http_port}/metrics")[1].decode())
        assert after["linkhub_link_approvals_total"] == 1
        assert after["linkhub_link_requests_total"] == 1
        assert after["linkhub_link_request_duration_seconds_count"] >= 1
    finally:
        process.send_signal(signal.SIGTERM)
        exit_code = process.wait(timeout=30)
    assert exit_code == 0
    assert not _port_open(mqtt_port), "the hub's mosquitto outlived it"
    assert not _port_open(http_port)
    assert not (data_dir / "hub.sock").exists()

    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    messages = [line["message"] for line in lines]
    assert any(m.startswith("stopping on SIGTERM") for m in messages) and messages[-1] == "stopped"
    secrets = [
        (data_dir / "hub-password").read_text().strip(),
        (data_dir / "broker" / "admin-password").read_text().strip(),
        json.loads((tmp_path / "lamp.json").read_text())["mqtt"]["password"],
    ]
    assert not any(secret in log.read_text() for secret in secrets)

    # A restart picks up where it stopped: same broker identities, same linked device.
    process = _start(data_dir, http_port, mqtt_port, log)
    try:
        listed = RunningHub(process, data_dir, http_port, mqtt_port, []).cli("devices", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [d["device_id"] for d in json.loads(listed.stdout)] == [linked["device_id"]]
        assert _get(f"http://127.0.0.1:{http_port}/healthz")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert not _port_open(mqtt_port)


class _Connection:
    def __init__(self, connected: bool) -> None:
        self.connected = threading.Event()
        if connected:
            self.connected.set()
        self.broker = type("Broker", (), {"host": "127.0.0.1", "port": 1884})()


def test_the_broker_counts_as_connected_only_while_every_connection_is() -> None:
    """The hub's main connection and the one link requests come in on."""
    hub_metrics = metrics.of(create_engine("sqlite://"))
    main, links = _Connection(True), _Connection(False)
    hub_metrics.watch_broker(main, links)
    assert not hub_metrics.broker_is_connected()
    links.connected.set()
    assert hub_metrics.broker_is_connected()
    assert hub_metrics.broker_address() == "127.0.0.1:1884"
    main.connected.clear()
    assert not hub_metrics.broker_is_connected()
