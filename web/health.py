"""`GET /healthz` and `GET /metrics`: for probes and Prometheus, not for people.

They are answered in front of the Flask app, as WSGI middleware, not as views:
every view first runs the sign-in hook, which asks the account directory
whether any account exists (the account service, when it runs on its own) and
may redirect to /setup. A probe must get its answer without a session, a
redirect or the account service, and must not depend on what it reports on.

What they report comes from two callables handed to `create_app`, so this
module knows nothing of the hub's internals: `health` returns a HealthReport
(hub.metrics.HealthProbe for a running hub), `metrics` the Prometheus text and
its content type (hub.metrics.HubMetrics.exposition).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from hub.metrics import HealthReport

log = logging.getLogger(__name__)

HealthCheck = Callable[[], HealthReport]
MetricsExposition = Callable[[], tuple[bytes, str]]

HEALTH_PATH = "/healthz"
METRICS_PATH = "/metrics"

_COMMON_HEADERS = [
    ("Cache-Control", "no-store"),  # a cached "ok" would hide an outage
    ("X-Content-Type-Options", "nosniff"),
]

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def install_probes(app: Flask, *, health: HealthCheck | None, metrics: MetricsExposition | None) -> None:
    """Serve /healthz and /metrics in front of `app`; a path whose callable is None is the app's (404)."""
    if health is None and metrics is None:
        return
    app.wsgi_app = _Probes(app.wsgi_app, health, metrics)  # type: ignore[method-assign]


class _Probes:
    def __init__(self, app: WsgiApp, health: HealthCheck | None, metrics: MetricsExposition | None) -> None:
        self._app = app
        self._routes: dict[str, Callable[[], tuple[str, bytes, str]]] = {}
        if health is not None:
            self._routes[HEALTH_PATH] = lambda: _health_response(health)
        if metrics is not None:
            self._routes[METRICS_PATH] = lambda: _metrics_response(metrics)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        route = self._routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return self._app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            body = b"only GET\n"
            start_response(
                "405 Method Not Allowed",
                [("Allow", "GET, HEAD"), ("Content-Type", "text/plain; charset=utf-8"), *_COMMON_HEADERS],
            )
            return [body]
        status, body, content_type = route()
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *_COMMON_HEADERS]
        start_response(status, headers)
        return [] if method == "HEAD" else [body]


def _health_response(health: HealthCheck) -> tuple[str, bytes, str]:
    try:
        report = health()
    except Exception:  # the probe itself broke: that is not healthy either
        log.exception("the health check failed")
        body = {"status": "degraded", "error": "the health check itself failed; see the hub's log"}
        return "503 Service Unavailable", _json(body), "application/json"
    status = "200 OK" if report.ok else "503 Service Unavailable"
    return status, _json(report.as_json()), "application/json"


def _metrics_response(metrics: MetricsExposition) -> tuple[str, bytes, str]:
    body, content_type = metrics()
    return "200 OK", body, content_type


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True) + "\n").encode()
