"""A mosquitto the hub starts, configures and stops itself (the embedded default).

It writes its own config and dynamic-security file under the data directory,
listens where it is told, and turns on `set_tcp_nodelay` (FIELD-NOTES: without
it each request/response waits ~40 ms). With a TLS port it also listens with
TLS there, on a certificate of the hub's own CA (hub/tls.py, kept in `tls/`).
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import getpass
import glob
import hashlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hub import protocol
from hub.errors import BrokerUnavailable, ConfigError, PortInUse
from hub.mqtt import BrokerAddress

if TYPE_CHECKING:
    from hub.tls import TlsFiles

log = logging.getLogger(__name__)

ADMIN_USERNAME = "linkhub-admin"
# The largest MQTT packet the broker takes from anyone (mosquitto.conf(5),
# `max_packet_size`): a client sending more is disconnected before the packet
# is read into memory. The largest payload of the protocol is the approved link
# reply the hub sends (devices read up to 16 x 2048 bytes, hub/protocol.py); the
# 4 KiB on top cover the fixed header, topic and properties. Link requests are at
# most 2048 bytes and settings messages 16,384, so 250 KB floods are cut at the door.
MAX_PACKET_BYTES = 16 * protocol.MAX_LINK_REQUEST_BYTES + 4096
# The data segment the managed mosquitto may take at most (RLIMIT_DATA, set before
# exec): past it an allocation fails, mosquitto drops what it was handling and
# disconnects that client, instead of taking the Pi down. Not mosquitto.conf(5)'s
# `memory_limit`: on 2.0.x its count of the heap runs below zero when the
# dynamic-security plugin frees what it did not count, and then every allocation
# is refused (mosquitto issues 1437 and 2525; tests/test_bootstrap_flood.py).
# An idle broker takes ~1 MB of heap, one with 1,000 linked devices a few MB.
BROKER_DATA_LIMIT_BYTES = 256 * 1024 * 1024
_PLUGIN_GLOBS = (
    "/usr/lib/*/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto_dynamic_security.so",
    "/usr/local/lib/mosquitto_dynamic_security.so",
    "/usr/lib/mosquitto/mosquitto_dynamic_security.so",
)


def find_mosquitto() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.path.exists(p)), None
    )
    if found is None:
        raise ConfigError(
            "mosquitto is not installed: `sudo apt-get install mosquitto` "
            "(or start the hub with --broker mqtt://USER:PASS@HOST:PORT)"
        )
    return found


def find_dynsec_plugin() -> str:
    for pattern in _PLUGIN_GLOBS:
        for path in sorted(glob.glob(pattern)):
            return path
    raise ConfigError("mosquitto's dynamic-security plugin (mosquitto_dynamic_security.so) was not found")


def _die_with_parent() -> None:
    """Runs in the child before exec: mosquitto gets SIGTERM if the hub dies, even by SIGKILL."""
    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    with contextlib.suppress(OSError, ValueError):  # see BROKER_DATA_LIMIT_BYTES
        resource.setrlimit(resource.RLIMIT_DATA, (BROKER_DATA_LIMIT_BYTES, BROKER_DATA_LIMIT_BYTES))


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _pbkdf2_entry(password: str) -> dict[str, object]:
    """A dynamic-security password record (PBKDF2-SHA512, the plugin's own format)."""
    salt = secrets.token_bytes(12)
    iterations = 101
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return {
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": iterations,
    }


def initial_dynsec_config(admin_password: str) -> dict[str, object]:
    """Only the admin identity; the hub creates everything else through $CONTROL."""
    control = "$CONTROL/dynamic-security/#"
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": [
            {
                "username": ADMIN_USERNAME,
                "textname": "LinkHub's admin identity: it holds no role it edits",
                "roles": [{"rolename": "linkhub-admin"}],
                **_pbkdf2_entry(admin_password),
            }
        ],
        "groups": [],
        "roles": [
            {
                "rolename": "linkhub-admin",
                "acls": [
                    {"acltype": "publishClientSend", "topic": control, "allow": True},
                    {"acltype": "publishClientReceive", "topic": control, "allow": True},
                    {"acltype": "subscribePattern", "topic": control, "allow": True},
                ],
            }
        ],
    }


@dataclass(frozen=True, slots=True)
class ManagedBrokerConfig:
    directory: Path
    listen_host: str
    port: int
    # A second listener with TLS on this port (0: none), on the hub's own CA
    # (hub/tls.py); its certificate names `tls_names`.
    tls_port: int = 0
    tls_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.tls_port and self.tls_port == self.port:
            raise ConfigError(f"the TLS port cannot be the plain MQTT port ({self.port})")


class ManagedBroker:
    def __init__(self, config: ManagedBrokerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self.tls_files: TlsFiles | None = None  # once prepared, with a TLS listener

    @property
    def address(self) -> BrokerAddress:
        host = self.config.listen_host
        return BrokerAddress("127.0.0.1" if host in ("0.0.0.0", "") else host, self.config.port)

    @property
    def ca_pem(self) -> str | None:
        """The CA certificate devices verify the TLS listener with; None without TLS."""
        return self.tls_files.ca_pem if self.tls_files is not None else None

    @property
    def admin_password(self) -> str:
        return (self.config.directory / "admin-password").read_text().strip()

    def prepare(self) -> Path:
        """Write the config (and, once, the dynamic-security file); return the config path."""
        directory = self.config.directory
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        secret_file = directory / "admin-password"
        dynsec_file = directory / "dynamic-security.json"
        if not secret_file.exists() or not dynsec_file.exists():
            password = secrets.token_urlsafe(24)
            dynsec_file.write_text(json.dumps(initial_dynsec_config(password), indent=2))
            secret_file.touch(mode=0o600)
            secret_file.write_text(password + "\n")
        conf = directory / "mosquitto.conf"
        lines = [
            "# Written by LinkHub at every start; edits are overwritten.",
            "per_listener_settings false",
            f"listener {self.config.port} {self.config.listen_host}",
            "set_tcp_nodelay true",
            "allow_anonymous false",
            # Started as root, mosquitto would switch to user `mosquitto`, which
            # cannot read this directory; it runs as whoever runs the hub.
            f"user {getpass.getuser()}",
            f"plugin {find_dynsec_plugin()}",
            f"plugin_opt_config_file {dynsec_file}",
            f"pid_file {directory / 'mosquitto.pid'}",
            "persistence false",
            f"max_packet_size {MAX_PACKET_BYTES}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp true",
        ]
        if self.config.tls_port:
            lines += self._tls_listener()
        conf.write_text("\n".join([*lines, ""]))
        return conf

    def _tls_listener(self) -> list[str]:
        """The TLS listener, last in the file: the lines after `listener` belong to it.

        The dynamic-security plugin and `allow_anonymous false` are global
        (per_listener_settings false), so a device has the same identity and the
        same rights on either listener.
        """
        from hub.tls import ensure_tls_files  # `cryptography` costs 9 MB: only with TLS on

        files = ensure_tls_files(self.config.directory / "tls", self.config.tls_names, now=datetime.now(UTC))
        for change in files.changes:
            log.info("TLS: %s (%s)", change, files.directory)
        self.tls_files = files
        return [
            f"listener {self.config.tls_port} {self.config.listen_host}",
            f"certfile {files.cert}",
            f"keyfile {files.key}",
            # Only for client certificates, which are not asked for; kept so the
            # listener names the CA it belongs to.
            f"cafile {files.ca_cert}",
            "tls_version tlsv1.2",  # the oldest version accepted
        ]

    def start(self, timeout_s: float = 10.0) -> None:
        host, port = self.config.listen_host, self.config.port
        self._reap_stale()
        if not port_is_free(host, port):
            raise PortInUse(
                f"port {port} on {host} is already in use (another MQTT broker?). "
                f"Start the hub with --mqtt-port N to run its own broker on another port, "
                f"or with --broker mqtt://ADMIN:PASSWORD@HOST:PORT to use a mosquitto you already run."
            )
        tls_port = self.config.tls_port
        if tls_port and not port_is_free(host, tls_port):
            raise PortInUse(
                f"the TLS port {tls_port} on {host} is already in use (another MQTT broker?). "
                f"Start the hub with --mqtt-tls-port N to listen with TLS on another port, "
                f"or --mqtt-tls-port 0 to go without TLS."
            )
        conf = self.prepare()
        log_file = open(self.config.directory / "mosquitto.log", "ab")  # noqa: SIM115  (owned by the child)
        self._process = subprocess.Popen(
            [find_mosquitto(), "-c", str(conf)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log_file.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrokerUnavailable(
                    f"mosquitto exited at start (code {self._process.returncode}); "
                    f"see {self.config.directory / 'mosquitto.log'}"
                )
            try:
                for listening in (port, tls_port) if tls_port else (port,):
                    with socket.create_connection((self.address.host, listening), timeout=0.5):
                        pass
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        ports = f"{port} and {tls_port}" if tls_port else str(port)
        raise BrokerUnavailable(f"mosquitto did not listen on {host} ports {ports} within {timeout_s} s")

    def _reap_stale(self) -> None:
        """A mosquitto left by a hub that died with this data directory: stop it."""
        pid_file = self.config.directory / "mosquitto.pid"
        try:
            pid = int(pid_file.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return
        if str(self.config.directory / "mosquitto.conf").encode() not in cmdline:
            return  # the pid was reused by something else
        log.warning("stopping a mosquitto (pid %s) left running by an earlier hub", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a crash or power cut would (tests)."""
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None
