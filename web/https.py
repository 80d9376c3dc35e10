"""The pages over HTTPS, on a certificate from the hub's own CA (hub/broker/tls.py).

A phone trusts that CA once (docs/security.md, "HTTPS"); from then on nobody on
the Wi-Fi reads the sign-in form's password or the session cookie, or changes a
page on its way. waitress has no TLS, so the HTTPS listener is cheroot's
(a bounded thread pool, the standard library's ssl module); the app is the
same one the HTTP listener serves.

With HTTPS on, the HTTP listener answers every page with a redirect to the
same path over HTTPS (308: a POST stays a POST, RFC 9110 §15.4.9), except what
must work before the CA is trusted or from a probe: /ca.pem, /healthz, /metrics.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from web.ca_certificate import CA_CERTIFICATE_PATH
from web.health import HEALTH_PATH, METRICS_PATH
from web.hosts import HostCheck, host_name

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

# Served on plain HTTP too: the CA must be fetchable before it is trusted, and
# probes on loopback need no certificate.
PLAIN_HTTP_PATHS = frozenset({CA_CERTIFICATE_PATH, HEALTH_PATH, METRICS_PATH})


class RedirectToHttps:
    """The HTTP listener's app while HTTPS is on: everything else moves to HTTPS."""

    def __init__(self, app: WsgiApp, https_port: int, hosts: HostCheck) -> None:
        self._app = app
        self._port = https_port
        self._hosts = hosts

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        host = environ.get("HTTP_HOST", "")
        if path in PLAIN_HTTP_PATHS or not self._hosts.allows(host):
            return self._app(environ, start_response)  # a foreign Host gets the app's own 400
        name = host_name(host)
        shown = f"[{name}]" if ":" in name else name
        port = "" if self._port == 443 else f":{self._port}"
        query = environ.get("QUERY_STRING", "")
        raw_path = (environ.get("SCRIPT_NAME", "") + path).encode("latin-1")  # WSGI's bytes-as-latin-1
        location = f"https://{shown}{port}{quote(raw_path)}"
        if query:
            location += f"?{query}"
        body = b"This hub's pages are served over HTTPS.\n"
        start_response(
            "308 Permanent Redirect",
            [
                ("Location", location),
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [body]


class HttpsServer:
    """cheroot on `host:port` with the hub's server certificate; `start()` then `stop()`."""

    def __init__(self, app: WsgiApp, host: str, port: int, cert: Path, key: Path, threads: int = 8) -> None:
        self._server = wsgi.Server((host, port), app, numthreads=threads, server_name="linkhub")
        adapter = BuiltinSSLAdapter(str(cert), str(key))
        adapter.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._server.ssl_adapter = adapter
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        self._server.prepare()  # binds now: a port in use is an error here, not in the thread
        self._thread = threading.Thread(target=self._server.serve, name="https", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
