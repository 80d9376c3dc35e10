"""`linkhub run`: the hub, its web pages and its control socket in one process."""

from __future__ import annotations

import io
import logging
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

import qrcode
from waitress.server import create_server

from hub.config import HubConfig
from hub.daemon import Hub
from hub.errors import PortInUse
from hub.netinfo import lan_addresses
from web import create_app
from web.config import WebConfig
from web.control import create_control_app

log = logging.getLogger("linkhub")


def _secret(path: Path) -> str:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _page_urls(config: HubConfig) -> list[str]:
    """Local address first (what this machine opens), then what phones on the LAN open."""
    port = config.http_port
    if config.http_host not in ("0.0.0.0", ""):
        return [f"http://{config.http_host}:{port}/link"]
    return [f"http://127.0.0.1:{port}/link"] + [f"http://{ip}:{port}/link" for ip in lan_addresses()]


def terminal_qr(text: str) -> str:
    """A QR code drawn with block characters; needs neither Pillow nor a screen."""
    qr = qrcode.QRCode(border=2)
    qr.add_data(text)
    out = io.StringIO()
    qr.print_ascii(out=out)
    return out.getvalue()


def run_hub(config: HubConfig, *, verbose: bool = False) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    hub = Hub(config)
    endpoints = hub.start()
    servers = []
    try:
        web_app = create_app(
            WebConfig(secret_key=_secret(config.data_dir / "web-secret")),
            links=hub.links,
            accounts=hub.accounts,
            settings=hub.settings,
        )
        try:
            web_server = create_server(web_app, host=config.http_host, port=config.http_port, threads=8)
        except OSError as exc:
            raise PortInUse(
                f"cannot serve the web page on {config.http_host}:{config.http_port} ({exc.strerror}); "
                "choose another with --http-port N"
            ) from None
        servers.append(web_server)
        control_path = config.control_socket
        if control_path.exists():
            control_path.unlink()
        control_app = create_control_app(links=hub.links, accounts=hub.accounts, settings=hub.settings)
        servers.append(create_server(control_app, unix_socket=str(control_path), unix_socket_perms="600"))
        for server in servers:
            threading.Thread(target=server.run, name="http", daemon=True).start()

        urls = _page_urls(config)
        broker = endpoints.device_broker
        print("LinkHub is running.", flush=True)
        print(f"  Link page:   {urls[0]}", flush=True)
        for url in urls[1:]:
            print(f"  From a phone on your network: {url}", flush=True)
        print(f"  MQTT broker: mqtt://{broker.host}:{broker.port} (devices connect here)", flush=True)
        if not hub.accounts.has_accounts():
            print("  First start: open the link page to create the owner account.", flush=True)
        phone_url = urls[-1]  # a LAN address when there is one: what a phone can open
        print(f"  Scan to open {phone_url} on a phone:", flush=True)
        print(terminal_qr(phone_url), end="", flush=True)
        print("Stop with Ctrl-C.", flush=True)
        stop.wait()
        log.info("stopping")
    finally:
        for server in servers:
            server.close()
        hub.stop()
        if config.control_socket.exists():
            os.unlink(config.control_socket)
    return 0
