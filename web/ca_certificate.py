"""`GET /ca.pem`: the hub's CA certificate, for anyone: the one that signed the
broker's TLS listener, the pages' HTTPS and the OAuth issuer's (docs/oauth.md).

A person who sets a device up by hand (a firmware that cannot link, a tool such
as mosquitto_sub) needs the CA to check that the broker it reaches is this
hub's; an app that links over OAuth, that the issuer is. The certificate is
public, so it is served without sign-in; and like /healthz it is answered in
front of the Flask app (see web/health.py): it must not wait on the account
service or redirect to /setup on a fresh hub.

The PEM is handed in by whoever builds the app (the running hub's
`ca_certificate`); with none of the three on there is nothing to serve and the
path is the app's (404).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask

from web.health import StartResponse, WsgiApp

CA_CERTIFICATE_PATH = "/ca.pem"
DOWNLOAD_NAME = "linkhub-ca.pem"


def install_ca_certificate(app: Flask, ca_pem: str | None) -> None:
    """Serve `ca_pem` at /ca.pem in front of `app`; nothing when it is None."""
    if ca_pem is None:
        return
    app.wsgi_app = _CaCertificate(app.wsgi_app, ca_pem.encode("ascii"))  # type: ignore[method-assign]


class _CaCertificate:
    def __init__(self, app: WsgiApp, body: bytes) -> None:
        self._app = app
        self._body = body

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "") != CA_CERTIFICATE_PATH:
            return self._app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return [b""]
        start_response(
            "200 OK",
            [
                ("Content-Type", "application/x-pem-file"),
                ("Content-Length", str(len(self._body))),
                ("Content-Disposition", f'attachment; filename="{DOWNLOAD_NAME}"'),
                # The CA changes only if it is made again; a stale copy must not linger.
                ("Cache-Control", "no-cache"),
                ("X-Content-Type-Options", "nosniff"),
            ],
        )
        return [b""] if method == "HEAD" else [self._body]
