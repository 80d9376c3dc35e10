"""Fixtures: a real mosquitto (with dynamic security) on a free loopback port,
hubs started in-process against it, SQLite and PostgreSQL databases, and a clock
the tests move instead of sleeping."""

from __future__ import annotations

import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from hub.broker.managed import ADMIN_USERNAME, ManagedBroker, ManagedBrokerConfig
from hub.config.model import ExternalBroker, HubConfig, parse_host_port
from hub.core.rate_limits import LimitsPolicy
from hub.daemon import Hub
from web import SessionRecords, WebConfig, create_app

POSTGRES_ADMIN_URL = os.environ.get(
    "LINKHUB_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def wait_until(predicate: Callable[[], object], timeout_s: float = 15, what: str = "condition") -> None:
    """Poll a condition with a bound: for things that happen on other threads or processes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


CSRF_FIELD = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_token(response: TestResponse) -> str:
    """The CSRF token of a page's form (Flask-WTF), to post it back."""
    found = CSRF_FIELD.search(response.get_data(as_text=True))
    assert found, "no CSRF token in the page"
    return found.group(1)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class FakeClock:
    """Epoch seconds that only move when a test says so."""

    def __init__(self, start_s: float = 1_800_000_000.0) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s

    def advance(self, seconds: float) -> None:
        self.now_s += seconds


@dataclass
class RunningBroker:
    broker: ManagedBroker
    port: int

    @property
    def external(self) -> ExternalBroker:
        return ExternalBroker("127.0.0.1", self.port, ADMIN_USERNAME, self.broker.admin_password)

    @property
    def url(self) -> str:
        return f"mqtt://{ADMIN_USERNAME}:{self.broker.admin_password}@127.0.0.1:{self.port}"


def start_broker(directory: Path, port: int | None = None) -> RunningBroker:
    port = port or free_port()
    broker = ManagedBroker(ManagedBrokerConfig(directory, "127.0.0.1", port))
    broker.start()
    return RunningBroker(broker, port)


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningBroker]:
    """One mosquitto for the session, config written by the test run itself."""
    running = start_broker(tmp_path_factory.mktemp("mosquitto"))
    yield running
    running.broker.stop()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """A broker this test may kill and restart."""
    running = start_broker(tmp_path / "mosquitto")
    yield running
    running.broker.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'linkhub.db'}"
        return
    from sqlalchemy import create_engine, text

    name = f"linkhub_test_{secrets.token_hex(4)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"PostgreSQL at {POSTGRES_ADMIN_URL} is required: {exc}")
    yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


HubFactory = Callable[..., Hub]


@pytest.fixture
def make_hub(tmp_path: Path, broker: RunningBroker) -> Iterator[HubFactory]:
    """Start hubs in-process on the session broker (or another); all are stopped at the end."""
    started: list[Hub] = []

    def factory(
        *,
        data_dir: Path | None = None,
        database_url: str | None = None,
        on_broker: RunningBroker | None = None,
        clock: Callable[[], float] | None = None,
        code_lifetime_s: int = 900,
        poll_interval_s: int = 1,
        account_service_url: str | None = None,
        account_service_token: str | None = None,
        device_broker: str | None = None,
        tls: bool = False,
        limits: LimitsPolicy | None = None,
        home_assistant: bool = True,
    ) -> Hub:
        """`tls=True`: the hub runs its own mosquitto (on free loopback ports), which
        also listens with TLS on the hub's CA; `on_broker` does not apply then."""
        data_dir = data_dir or tmp_path / "hub"
        own_broker = {"mqtt_host": "127.0.0.1", "mqtt_port": free_port(), "mqtt_tls_port": free_port()}
        config = HubConfig(
            data_dir=data_dir,
            database_url=database_url or f"sqlite:///{data_dir / 'linkhub.db'}",
            http_host="127.0.0.1",
            external_broker=None if tls else (on_broker or broker).external,
            **(own_broker if tls else {}),
            code_lifetime_s=code_lifetime_s,
            poll_interval_s=poll_interval_s,
            mdns=False,
            limits=limits or LimitsPolicy(),
            account_service_url=account_service_url,
            account_service_token=account_service_token,
            device_broker=parse_host_port(device_broker) if device_broker else None,
            home_assistant=home_assistant,
        )
        hub = Hub(config, clock=clock) if clock else Hub(config)
        hub.start()
        started.append(hub)
        return hub

    yield factory
    for hub in reversed(started):
        hub.stop()


@pytest.fixture
def hub(make_hub: HubFactory) -> Hub:
    return make_hub()


def hub_pages(hub: Hub, config: WebConfig, **extra: Any) -> Flask:
    """The web pages on `hub`'s own services, wired as `linkhub run` wires them;
    `extra` for the optional parts (health, metrics, ca_certificate)."""
    assert hub.engine is not None  # started
    return create_app(
        config,
        links=hub.links,
        accounts=hub.accounts,
        settings=hub.settings,
        activity=hub.activity,
        sessions=SessionRecords(hub.engine, config.clock),
        control=hub.control,
        home_assistant_login=hub.home_assistant_login if hub.config.home_assistant else None,
        apps=hub.apps,
        **extra,
    )


# --- Tiers (README, "Tests") ----------------------------------------------------
# Each test is in exactly one tier, told by the fixtures it uses (their whole
# closure) or by what its module runs: `pure` (no I/O), `services` (files and
# SQLite under tmp_path, no broker), or `integration` (real parts). An
# integration test also carries the kind of real part it needs: postgres,
# browser, netns, subprocess. So `-m "not integration"` is the fast tiers.
_BROKER_FIXTURES = frozenset({"broker", "own_broker", "tls_broker"})
_BROWSER_FIXTURES = frozenset({"browser", "contexts", "phone_for", "chromium_present"})
_NETNS_FIXTURES = frozenset({"namespaces"})
_PROCESS_FIXTURES = frozenset({"shell_hub", "running_hub", "start_hub_process", "https_hub", "dying_hub"})
_FILE_FIXTURES = frozenset({"tmp_path", "tmp_path_factory", "tmpdir", "engine", "raw_engine", "database_url"})


def _module_runs(module: object, name: str) -> bool:
    return any(getattr(value, "__name__", None) == name for value in vars(module).values())


def _uses_postgres(item: pytest.Item) -> bool:
    params = getattr(getattr(item, "callspec", None), "params", {})
    return params.get("database_url") == "postgresql" or "postgres" in item.name.lower()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        module = getattr(item, "module", None)
        kinds = {marker.name for marker in item.iter_markers()} & {
            "integration", "postgres", "browser", "netns", "subprocess"
        }
        if fixtures & _BROKER_FIXTURES:
            kinds.add("integration")
        if _uses_postgres(item):
            kinds.add("postgres")
        if fixtures & _BROWSER_FIXTURES:
            kinds.add("browser")
        if fixtures & _NETNS_FIXTURES:
            kinds.add("netns")
        if fixtures & _PROCESS_FIXTURES or (module is not None and _module_runs(module, "subprocess")):
            kinds.add("subprocess")
        if kinds:
            kinds.add("integration")
        elif fixtures & _FILE_FIXTURES:
            kinds.add("services")
        else:
            kinds.add("pure")
        for kind in kinds:
            item.add_marker(kind)
