"""`linkhub account-service`: the account service on its own, behind its HTTP API.

Hubs started with `--account-service URL --account-service-token-file FILE`
use it instead of the one built into the hub (docs/account-service.md).
"""

from __future__ import annotations

import logging
import secrets
import signal
import sys
import threading
import time
from pathlib import Path

from waitress.server import create_server

from hub.errors import PortInUse
from hub.services.local_accounts import AccountService
from hub.store.engine import make_engine
from hub.store.secret_file import read_or_create_secret
from web.account_api import create_account_api

TOKEN_FILE = "account-service-token"


def read_or_create_token(data_dir: Path) -> str:
    return read_or_create_secret(data_dir / TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def run_account_service(data_dir: Path, database_url: str, host: str, port: int) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    engine = make_engine(database_url)
    token = read_or_create_token(data_dir)
    app = create_account_api(AccountService(engine, time.time), token=token)
    try:
        server = create_server(app, host=host, port=port, threads=8)
    except OSError as exc:
        raise PortInUse(
            f"cannot listen on {host}:{port} ({exc.strerror}); choose another with --port N"
        ) from None
    threading.Thread(target=server.run, name="account-api", daemon=True).start()
    # The port it took (for --port 0); waitress sets it, its type stubs do not list it.
    taken_port = server.effective_port  # type: ignore[union-attr]
    print(f"LinkHub account service on http://{host}:{taken_port}", flush=True)
    print(f"  bearer token in {data_dir / TOKEN_FILE}", flush=True)
    sys.stdout.flush()
    stop.wait()
    server.close()
    engine.dispose()
    return 0
