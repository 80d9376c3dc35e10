"""`GET /healthz` and `GET /metrics`: for probes and Prometheus, not for people.

They are answered in front of the Flask app, as WSGI middleware, not as views:
every view first runs the sign-in hook, which asks the account directory
whether any account exists (the account service, when it runs on its own) and
may redirect to /setup. A probe must get its answer without a session, a
redirect or the account service, and must not depend on what it reports on.

What they report comes from two callables handed to `create_app`, so this
module knows nothing of the hub's internals: `health` returns a HealthReport
(hub.services.metrics.HealthProbe for a running hub), `metrics` the Prometheus text and
its content type (hub.services.metrics.HubMetrics.exposition).

The detail (which part is down, every counter) is for the machine's own
probes and for whoever holds the probe token, not for every guest on the LAN:
it is served to loopback peers and to requests with `Authorization: Bearer
TOKEN` (compared in constant time). Anyone else gets a bare liveness answer on
/healthz (`{"status": "ok"}` or `"degraded"`, with the same 200 or 503) and 403
on /metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask

from hub.services.metrics import HealthReport

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


def install_probes(
    app: Flask,
    *,
    health: HealthCheck | None,
    metrics: MetricsExposition | None,
    token: str | None = None,
) -> None:
    """Serve /healthz and /metrics in front of `app`; a path whose callable is None is the app's (404).
    Their detail goes to loopback peers and to `Authorization: Bearer <token>`."""
    if health is None and metrics is None:
        return
    app.wsgi_app = _Probes(app.wsgi_app, health, metrics, token)  # type: ignore[method-assign]


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.partition("%")[0]).is_loopback
    except ValueError:
        return False


class _Probes:
    def __init__(
        self, app: WsgiApp, health: HealthCheck | None, metrics: MetricsExposition | None, token: str | None
    ) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode() if token else None
        self._routes: dict[str, Callable[[bool], tuple[str, bytes, str]]] = {}
        if health is not None:
            self._routes[HEALTH_PATH] = lambda detail: _health_response(health, detail=detail)
        if metrics is not None:
            self._routes[METRICS_PATH] = lambda detail: _metrics_response(metrics, detail=detail)

    def _may_see_detail(self, environ: dict[str, Any]) -> bool:
        if is_loopback(environ.get("REMOTE_ADDR")):
            return True
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        return self._expected is not None and hmac.compare_digest(given, self._expected)

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
        status, body, content_type = route(self._may_see_detail(environ))
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))), *_COMMON_HEADERS]
        start_response(status, headers)
        return [] if method == "HEAD" else [body]


def _health_response(health: HealthCheck, *, detail: bool) -> tuple[str, bytes, str]:
    try:
        report = health()
    except Exception:  # the probe itself broke: that is not healthy either
        log.exception("the health check failed")
        body: dict[str, Any] = {"status": "degraded"}
        if detail:
            body["error"] = "the health check itself failed; see the hub's log"
        return "503 Service Unavailable", _json(body), "application/json"
    status = "200 OK" if report.ok else "503 Service Unavailable"
    document = report.as_json() if detail else {"status": "ok" if report.ok else "degraded"}
    return status, _json(document), "application/json"


def _metrics_response(metrics: MetricsExposition, *, detail: bool) -> tuple[str, bytes, str]:
    if not detail:
        body = b"metrics are served to loopback, or with Authorization: Bearer <the probe token>\n"
        return "403 Forbidden", body, "text/plain; charset=utf-8"
    body, content_type = metrics()
    return "200 OK", body, content_type


def _json(document: dict[str, Any]) -> bytes:
    return (json.dumps(document, sort_keys=True) + "\n").encode()
