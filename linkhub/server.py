"""`linkhub run`: the hub, its web pages and its control socket in one process."""

from __future__ import annotations

import gc
import io
import json
import logging
import os
import re
import secrets
import signal
import sys
import threading
import time
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import qrcode
from waitress import wasyncore
from waitress.server import create_server

from hub.config.model import HubConfig, link_page_url
from hub.daemon import Hub
from hub.errors import AccountServiceUnavailable, PortInUse
from hub.net.addresses import lan_addresses
from hub.services import metrics
from hub.store.engine import migrate_in_child
from hub.store.secret_file import read_or_create_secret
from linkhub_protocol import escape_hidden
from web import SessionRecords, create_app
from web.config import WebConfig
from web.control import create_control_app
from web.hosts import HostCheck

log = logging.getLogger("linkhub")


def _secret(path: Path) -> str:
    return read_or_create_secret(path, lambda: secrets.token_urlsafe(32))


def _page_urls(config: HubConfig) -> list[str]:
    """Local address first (what this machine opens), then what phones on the LAN open."""
    ports = {"http_port": config.http_port, "https_port": config.https_port}
    if config.http_host not in ("0.0.0.0", ""):
        return [link_page_url(config.http_host, **ports)]
    return [link_page_url(host, **ports) for host in ["127.0.0.1", *lan_addresses()]]


def phone_lines(phone_url: str) -> list[str]:
    """What the banner tells about opening the hub on a phone: the address the
    devices show too (the public host when one is set), with a QR code of it; a
    hub on loopback only gets no QR code (no phone can open 127.0.0.1) but says
    what to do instead."""
    host = urlsplit(phone_url).hostname or ""
    if host == "localhost" or _is_loopback_address(host):
        return [
            f"  Phones cannot open this hub: it listens on {host} (this computer) only.",
            "  To link from a phone, start it with --http-host 0.0.0.0 (every address) or the",
            "  machine's LAN address; behind a name or a proxy, add --public-host NAME.",
        ]
    return [f"  Scan to open {phone_url} on a phone (devices show this address too):", terminal_qr(phone_url)]


def _is_loopback_address(host: str) -> bool:
    try:
        return ip_address(host).is_loopback
    except ValueError:
        return False


def terminal_qr(text: str) -> str:
    """A QR code drawn with block characters; needs neither Pillow nor a screen."""
    qr = qrcode.QRCode(border=2)
    qr.add_data(text)
    out = io.StringIO()
    qr.print_ascii(out=out)
    return out.getvalue()


# The attributes every LogRecord has; anything else on a record came in `extra=`.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
# An extra field whose name says it holds a secret is never written out, whatever its value.
_SECRET_FIELD = re.compile(r"pass(word)?|secret|token|credential|authori[sz]ation|cookie", re.IGNORECASE)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and the record's extra fields.

    For log collectors (journald, Loki, a container runtime): they split fields
    without guessing at a text layout. Extra fields named like a secret are
    written as "***".
    """

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name in _RECORD_ATTRIBUTES or name.startswith("_") or name in line:
                continue
            line[name] = "***" if _SECRET_FIELD.search(name) else value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def escape_hidden_characters(record: logging.LogRecord) -> bool:
    """A log filter: the message with its control and format characters escaped.

    Messages quote what devices and people sent (names, keys, refused input): a
    line break in one would forge a log line of its own, an ESC sequence or a
    bidi override would act on the terminal reading the log. The traceback of
    an exception is the hub's own text and keeps its lines.
    """
    message = record.getMessage()
    escaped = escape_hidden(message)
    if escaped is not message:
        record.msg, record.args = escaped, None
    return True


def configure_logging(log_format: str, *, verbose: bool = False) -> None:
    """Log lines on stderr, as text for a person at a terminal or JSON for a collector."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(escape_hidden_characters)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler], force=True)


def _busy(channel: Any) -> bool:
    """A waitress channel that is reading a request, serving one, or still sending an answer."""
    return bool(
        getattr(channel, "requests", None)
        or getattr(channel, "request", None) is not None
        or getattr(channel, "total_outbufs_len", 0)
    )


def close_gracefully(server: Any, thread: threading.Thread, timeout_s: float = 10.0) -> None:
    """Stop a waitress server the way a stopping service should: take no new
    connection, let the requests already in flight finish and their answers go
    out (a person's "approve" pressed just before SIGTERM still gets its page),
    then close everything. waitress's own close() only closes the listening
    socket and leaves its worker threads and open connections behind."""
    server.accepting = False  # readable() turns False: no more accept()s
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(_busy(c) for c in list(server.active_channels.values())):
        time.sleep(0.02)
    server.task_dispatcher.shutdown(timeout=max(0.1, deadline - time.monotonic()))
    wasyncore.close_all(server._map, ignore_all=True)  # the loop in `thread` ends with an empty map
    thread.join(timeout=max(0.1, deadline - time.monotonic()))


class _Https:
    """The HTTPS listener, made before the app (its CA goes to /ca.pem) and started after."""

    def __init__(self, host: str, port: int, cert: Path, key: Path, flag: str = "--https-port") -> None:
        self._where = (host, port, cert, key)
        self._flag = flag
        self._server: Any = None  # a web.https.HttpsServer once serving

    def serve(self, app: Any) -> None:
        from web.https import HttpsServer  # cheroot only with HTTPS on

        host, port, cert, key = self._where
        self._server = HttpsServer(app, host, port, cert, key)
        try:
            self._server.start()
        except OSError as exc:
            raise PortInUse(
                f"cannot serve over HTTPS on {host}:{port} ({exc.strerror or exc}); "
                f"choose another with {self._flag} N"
            ) from None

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def _tls_files(hub: Hub, config: HubConfig, web_config: WebConfig, issuer: str | None) -> Any:
    """The hub's CA and a server certificate for the names the pages and the
    OAuth issuer answer to (the broker's TLS directory: one CA for MQTT, the
    pages and the issuer, hub/broker/tls.py)."""
    from hub.broker.tls import ensure_tls_files, server_names  # `cryptography` only with TLS on

    hosts = [*hub.tls_names(), *web_config.host_names, urlsplit(issuer).hostname if issuer else None]
    names = server_names(hosts, mdns_name=config.mdns_name)
    files = ensure_tls_files(config.broker_dir / "tls", names, now=datetime.now(UTC))
    for change in files.changes:
        log.info("HTTPS: %s", change)
    return files


def _oauth_app(hub: Hub, config: HubConfig, issuer: str, verification_uri: str) -> Any:
    """The OAuth issuer's app (web/oauth/), with the hub's id_token key."""
    from web.oauth import create_oauth_app
    from web.oauth.id_tokens import IdTokens, load_signing_key

    id_tokens = IdTokens(load_signing_key(config.data_dir), issuer, time.time, hub.accounts)
    return create_oauth_app(
        issuer=issuer,
        verification_uri=verification_uri,
        apps=hub.apps,
        id_tokens=id_tokens,
        links=hub.links,
        accounts=hub.accounts,
        settings=hub.settings,
        control=hub.control,
    )


def run_hub(config: HubConfig, *, verbose: bool = False) -> int:
    """Run until SIGTERM or SIGINT, then stop in order and return 0 (1 when the hub
    gave up on its own mosquitto, which kept dying: hub/broker/managed.py RestartBudget).

    Stopping order: the web page and control socket first (finishing what they
    are serving), then the hub (mDNS withdrawn, outbox and MQTT stopped, its own
    mosquitto stopped). Everything the hub keeps is in its database and data
    directory, so the next start picks up where this one stopped.
    """
    configure_logging(config.log_format, verbose=verbose)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, _frame: object) -> None:
        received.append(number)  # no logging here: a signal handler may interrupt a log call
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    # The schema is upgraded by a child process: the long-running hub never loads Alembic.
    config.data_dir.mkdir(parents=True, exist_ok=True)
    migrate_in_child(config.database_url)
    hub = Hub(config)
    hub.on_fatal = lambda _reason: stop.set()  # its mosquitto kept dying: exit non-zero below
    endpoints = hub.start()
    assert hub.engine is not None  # started
    health = metrics.HealthProbe(hub.engine, space=hub.space.shortage if hub.space else None)
    servers: list[tuple[Any, threading.Thread]] = []
    https_server = None
    oauth_server = None
    try:
        web_config = WebConfig(
            secret_key=_secret(config.data_dir / "web-secret"),
            limits=config.limits,
            session_lifetime_s=config.session_lifetime_s,
            host_names=config.web_host_names,
            probe_token=config.probe_token,
            https=bool(config.https_port),
            waiting_list=config.waiting_list,
        )
        ca_pem = hub.ca_certificate
        issuer = endpoints.oauth_issuer
        if config.https_port or issuer:
            files = _tls_files(hub, config, web_config, issuer)
            ca_pem = files.ca_pem
            if config.https_port:
                https_server = _Https(config.http_host, config.https_port, files.cert, files.key)
            if issuer:
                port = config.oauth_port
                oauth_server = _Https(config.http_host, port, files.cert, files.key, "--oauth-port")
                oauth_server.serve(_oauth_app(hub, config, issuer, endpoints.link_page_url))
        web_app = create_app(
            web_config,
            links=hub.links,
            accounts=hub.accounts,
            settings=hub.settings,
            activity=hub.activity,
            sessions=SessionRecords(hub.engine, time.time),
            health=health,
            metrics=metrics.of(hub.engine).exposition,
            ca_certificate=ca_pem,
            control=hub.control,
            home_assistant_login=hub.home_assistant_login if config.home_assistant else None,
            apps=hub.apps,
        )
        http_app: Any = web_app
        if https_server is not None:
            from web.https import RedirectToHttps

            https_server.serve(web_app)
            http_app = RedirectToHttps(web_app, config.https_port, HostCheck(web_config.host_names))
        try:
            web_server = create_server(http_app, host=config.http_host, port=config.http_port, threads=8)
        except OSError as exc:
            raise PortInUse(
                f"cannot serve the web page on {config.http_host}:{config.http_port} ({exc.strerror}); "
                "choose another with --http-port N"
            ) from None
        servers.append((web_server, threading.Thread(target=web_server.run, name="http", daemon=True)))
        control_path = config.control_socket
        if control_path.exists():
            control_path.unlink()
        control_app = create_control_app(
            links=hub.links,
            accounts=hub.accounts,
            settings=hub.settings,
            activity=hub.activity,
            home_assistant_login=hub.home_assistant_login if config.home_assistant else None,
            apps=hub.apps,
        )
        control_server = create_server(control_app, unix_socket=str(control_path), unix_socket_perms="600")
        servers.append(
            (control_server, threading.Thread(target=control_server.run, name="control", daemon=True))
        )
        for _server, thread in servers:
            thread.start()

        urls = _page_urls(config)
        broker = endpoints.device_broker
        print("LinkHub is running.", flush=True)
        print(f"  Link page:   {urls[0]}", flush=True)
        for url in urls[1:]:
            print(f"  From a phone on your network: {url}", flush=True)
        print(f"  MQTT broker: mqtt://{broker.host}:{broker.port} (devices connect here)", flush=True)
        if endpoints.device_tls_port is not None:
            print(
                f"  MQTT over TLS: mqtts://{broker.host}:{endpoints.device_tls_port} "
                f"(the CA to trust: {urls[-1].removesuffix('/link')}/ca.pem)",
                flush=True,
            )
        if issuer:
            plain = link_page_url(urlsplit(urls[-1]).hostname or "127.0.0.1", http_port=config.http_port)
            print(
                f"  Apps (OAuth device flow): {issuer} "
                f"(the CA to trust: {plain.removesuffix('/link')}/ca.pem; docs/oauth.md)",
                flush=True,
            )
        try:
            if not hub.accounts.has_accounts():
                print("  First start: open the link page to create the owner account.", flush=True)
        except AccountServiceUnavailable as exc:
            # Devices are served without it; sign-in and approvals wait for it, and
            # changes already accepted reach it from the outbox when it is back.
            log.warning("the account service is away (%s); serving devices meanwhile", exc)
            print("  Account service: away; devices are served, sign-in waits for it.", flush=True)
        for line in phone_lines(endpoints.link_page_url):
            print(line, end="" if line.endswith("\n") else "\n", flush=True)
        print("Stop with Ctrl-C.", flush=True)
        # Everything made so far lives as long as the hub: out of the garbage
        # collector's sight, a full collection no longer walks ~90,000 objects
        # (50 ms on a slow core, in the middle of some request; docs/performance.md).
        gc.freeze()
        stop.wait()
        if hub.fatal is not None and not received:
            log.critical(
                "stopping: %s; exiting with status 1 for the service manager to restart the hub", hub.fatal
            )
        else:
            name = signal.Signals(received[0]).name if received else "a signal"
            log.info("stopping on %s: finishing requests in flight, then the hub", name)
    finally:
        if oauth_server is not None:
            oauth_server.stop()
        if https_server is not None:
            https_server.stop()
        for server, thread in servers:
            try:
                close_gracefully(server, thread)
            except Exception:  # the hub must still stop (and its mosquitto with it)
                log.exception("while closing a web server")
        health.close()
        hub.stop()
        if config.control_socket.exists():
            os.unlink(config.control_socket)
        log.info("stopped")
    return 1 if hub.fatal is not None else 0
