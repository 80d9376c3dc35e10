"""What an operator watches: the hub's Prometheus metrics and its health.

Each hub gets its own `CollectorRegistry` (never prometheus_client's global
one), so tests and several hubs in one process do not see each other's counts.
The hub's services reach their hub's metrics with `of(engine)`: every service of
one hub already holds that hub's database engine, so they need no new
constructor argument and the hooks in them stay one line where the event
happens. `of` creates the metrics on first use; an engine that is gone takes
them with it (weak references).

Health (`/healthz`) is here too: the broker is healthy when the hub's own MQTT
connection is up, the database when `SELECT 1` answers within a short timeout.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

import linkhub_protocol as protocol
from hub.store.models import Device

# Seconds: a link request is a few database round trips and one publish; a
# desired message waits for the broker's PUBACK.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
DATABASE_TIMEOUT_S = 2.0


class BrokerConnection(Protocol):
    """What health needs of hub.broker.connection.MqttConnection."""

    connected: threading.Event

    @property
    def broker(self) -> Any: ...


class HubMetrics:
    """One hub's metric objects, in one registry of its own."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.link_requests = Counter(
            "linkhub_link_requests", "New link requests from devices (polls not counted)", registry=registry
        )
        self.link_approvals = Counter("linkhub_link_approvals", "Link requests approved", registry=registry)
        self.link_denials = Counter("linkhub_link_denials", "Link requests denied", registry=registry)
        self.link_expiries = Counter(
            "linkhub_link_expiries", "Link requests whose code expired undecided", registry=registry
        )
        self.orphan_identities_revoked = Counter(
            "linkhub_orphan_identities_revoked",
            "Device identities removed from the broker because no linked device names them",
            registry=registry,
        )
        self.unconfirmed_devices_expired = Counter(
            "linkhub_unconfirmed_devices_expired",
            "Devices approved but never connected whose credentials expired",
            registry=registry,
        )
        self.settings_deliveries = Counter(
            "linkhub_settings_deliveries",
            "Desired-settings messages sent to devices (acknowledged by the broker)",
            registry=registry,
        )
        self.link_request_seconds = Histogram(
            "linkhub_link_request_duration_seconds",
            "Time to answer a link request or poll, from its arrival to the reply's PUBACK",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.settings_delivery_seconds = Histogram(
            "linkhub_settings_delivery_duration_seconds",
            "Time to publish one desired-settings message until the broker acknowledged it",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.devices_online = Gauge(
            "linkhub_devices_online", "Linked devices whose last status was online", registry=registry
        )
        self.broker_connected = Gauge(
            "linkhub_broker_connected", "1 while the hub is connected to its MQTT broker", registry=registry
        )
        self.broker_restarts = Counter(
            "linkhub_broker_restarts",
            "Times the hub restarted the mosquitto it manages after it exited",
            registry=registry,
        )
        # Why the broker is away and since when (wall clock), while the hub knows it is.
        self._broker_problem: tuple[float, str] | None = None
        self._lost_at_s: float | None = None
        self._connections: list[Callable[[], BrokerConnection | None]] = []
        # Says what is wrong with where the broker keeps its logins, or None (hub/broker/managed.py).
        self.broker_storage_problem: Callable[[], str | None] = lambda: None
        self.broker_connected.set_function(lambda: 1.0 if self.broker_is_connected() else 0.0)
        if engine is not None:
            # Counted at scrape time from the database: right after a restart, and
            # with several hub processes on one database, without bookkeeping here.
            engine_ref = weakref.ref(engine)
            self.devices_online.set_function(lambda: _devices_online(engine_ref()))

    # --- hooks the hub's services call -------------------------------------------------
    def link_requests_answered(self, count: int, seconds: float) -> None:
        """`count` link request messages (new or polls) answered together in `seconds`."""
        for _ in range(count):
            self.link_request_seconds.observe(seconds)

    @contextmanager
    def delivery(self, leaf: str) -> Iterator[None]:
        """Counts and times a message to a device, if it is a desired-settings one that went out."""
        started = time.perf_counter()
        yield  # an exception (not delivered) passes through uncounted
        self.delivered(leaf, time.perf_counter() - started)

    def delivered(self, leaf: str, seconds: float) -> None:
        """One message to a device acknowledged by the broker, `seconds` after it was sent."""
        if leaf == protocol.SETTINGS_DESIRED:
            self.settings_delivery_seconds.observe(seconds)
            self.settings_deliveries.inc()

    def watch_broker(self, *connections: BrokerConnection) -> None:
        """The hub's MQTT connections (its main one, the one link requests come in
        on), whose state health and `linkhub_broker_connected` report: connected
        only while all of them are."""
        self._connections = [weakref.ref(connection) for connection in connections]  # type: ignore[misc]

    def broker_down(self, reason: str) -> None:
        """The managed mosquitto is away (hub.broker.managed's supervision); /healthz says why."""
        self._broker_problem = (time.time(), reason)

    def broker_up(self) -> None:
        """The managed mosquitto was restarted and listens again."""
        self.broker_restarts.inc()
        self._broker_problem = None

    def broker_problem(self) -> str | None:
        return self._broker_problem[1] if self._broker_problem is not None else None

    def status_unknown_since(self) -> float | None:
        """While the hub has no broker connection, devices' status is unknown: since
        when (wall clock). None when connected, or when no connection is watched
        (services used without a hub, as in unit tests)."""
        if not self._connections:
            return None
        if self.broker_is_connected():
            self._lost_at_s = None
            return None
        if self._lost_at_s is None:
            self._lost_at_s = self._broker_problem[0] if self._broker_problem is not None else time.time()
        return self._lost_at_s

    def broker_lost(self) -> None:
        """The hub's connection dropped: status is unknown from now."""
        if self._lost_at_s is None:
            self._lost_at_s = time.time()

    # --- reading -------------------------------------------------------------------------
    def broker_is_connected(self) -> bool:
        connections = [reference() for reference in self._connections]
        return bool(connections) and all(c is not None and c.connected.is_set() for c in connections)

    def broker_address(self) -> str | None:
        connection = self._connections[0]() if self._connections else None
        if connection is None:
            return None
        return f"{connection.broker.host}:{connection.broker.port}"

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format of this hub's registry, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def _devices_online(engine: Engine | None) -> float:
    if engine is None:
        return float("nan")
    try:
        with engine.connect() as connection:
            count = connection.execute(
                select(func.count()).select_from(Device).where(Device.online)  # type: ignore[arg-type]
            ).scalar_one()
    except Exception:  # a scrape must not fail because the database is away; /healthz says so
        return float("nan")
    return float(count)


_registry_lock = threading.Lock()
_by_engine: weakref.WeakKeyDictionary[Engine, HubMetrics] = weakref.WeakKeyDictionary()


def of(engine: Engine) -> HubMetrics:
    """The metrics of the hub whose database engine this is (made on first use)."""
    with _registry_lock:
        metrics = _by_engine.get(engine)
        if metrics is None:
            metrics = _by_engine[engine] = HubMetrics(engine)
        return metrics


# --- health ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ComponentHealth:
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


@dataclass(frozen=True, slots=True)
class HealthReport:
    broker: ComponentHealth
    database: ComponentHealth

    @property
    def ok(self) -> bool:
        return self.broker.ok and self.database.ok

    def as_json(self) -> dict[str, Any]:
        return {
            "status": "ok" if self.ok else "degraded",
            "broker": self.broker.as_json(),
            "database": self.database.as_json(),
        }


class HealthProbe:
    """Checks one hub's broker connection and database; call it for a HealthReport.

    The database check runs on one worker thread and is waited for at most
    `timeout_s`: a database that hangs makes /healthz say so quickly instead
    of hanging with it (and later checks queue behind the stuck one rather
    than piling up threads).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        timeout_s: float = DATABASE_TIMEOUT_S,
        space: Callable[[], str | None] | None = None,
    ) -> None:
        self._engine = engine
        # Why nothing can be written now (hub.store.engine.SpaceGuard.shortage): a database
        # that answers SELECT 1 but takes no writes is not healthy.
        self._space = space
        self._metrics = of(engine)
        self._timeout_s = timeout_s
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-db")

    def __call__(self) -> HealthReport:
        return HealthReport(self._broker(), self._database())

    def _broker(self) -> ComponentHealth:
        address = self._metrics.broker_address()
        detail: dict[str, Any] = {"address": address} if address else {}
        storage = self._metrics.broker_storage_problem()
        if storage is not None:
            detail["storage_error"] = storage
        problem = self._metrics.broker_problem()
        if problem is None and self._metrics.broker_is_connected():
            return ComponentHealth(storage is None, detail)
        if problem is not None:
            return ComponentHealth(False, {**detail, "error": problem})
        return ComponentHealth(False, {**detail, "error": "the hub is not connected to its MQTT broker"})

    def _database(self) -> ComponentHealth:
        # The backend's name, never the URL: it may hold a password.
        detail: dict[str, Any] = {"backend": self._engine.dialect.name}
        started = time.perf_counter()
        try:
            self._worker.submit(self._select_one).result(timeout=self._timeout_s)
        except FutureTimeout:
            return ComponentHealth(False, {**detail, "error": f"no answer within {self._timeout_s:g} s"})
        except Exception as exc:  # the class name only: driver messages may name hosts and users
            return ComponentHealth(False, {**detail, "error": f"SELECT 1 failed ({type(exc).__name__})"})
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        shortage = self._space() if self._space is not None else None
        if shortage is not None:
            return ComponentHealth(False, {**detail, "latency_ms": latency_ms, "error": shortage})
        return ComponentHealth(True, {**detail, "latency_ms": latency_ms})

    def _select_one(self) -> None:
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1")).scalar_one()

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)
