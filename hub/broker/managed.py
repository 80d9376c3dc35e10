"""A mosquitto the hub starts, configures and stops itself (the embedded default).

It writes its own config and dynamic-security file under the data directory,
listens where it is told, and turns on `set_tcp_nodelay` (without it Nagle's
algorithm and delayed ACKs, RFC 1122 §4.2.3.4, make each request/response wait
~40 ms: docs/performance.md). With a TLS port it also listens with
TLS there, on a certificate of the hub's own CA (hub/broker/tls.py, kept in `tls/`).

Every broker login lives in one file, `dynamic-security.json`, which mosquitto
2.0.11 (Debian 12's) rewrites in place: plugins/dynamic-security/plugin.c
`dynsec__config_save` opens it with truncate, then writes (2.0.18 writes a
`.new` file and renames it, mosquitto issue 2967). A full disk cuts it short,
and the next start loses every login. `DynsecFileGuard` keeps a last good copy,
written atomically, and puts it back at start when the live file does not parse.
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import linkhub_protocol as protocol
from hub.broker.bootstrap_guard import GuardUnavailable, build_guard, plugin_lines
from hub.broker.connection import BrokerAddress
from hub.config.model import DEFAULT_BROKER_RESTART_LIMIT, DEFAULT_BROKER_RESTART_WINDOW_S
from hub.errors import BrokerAdminError, BrokerUnavailable, ConfigError, LinkHubError, PortInUse
from hub.store.secret_file import write_secret

if TYPE_CHECKING:
    from hub.broker.tls import TlsFiles

log = logging.getLogger(__name__)

ADMIN_USERNAME = "linkhub-admin"
# The largest MQTT packet the broker takes from anyone (mosquitto.conf(5),
# `max_packet_size`): a client sending more is disconnected before the packet
# is read into memory. The largest payload of the protocol is the approved link
# reply the hub sends (devices read up to 16 x 2048 bytes, linkhub_protocol/codec.py); the
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
class Bridge:
    """mosquitto's own bridge to another broker (mosquitto.conf(5), "Configuring
    Bridges"): the hub never forwards a message itself."""

    name: str
    host: str
    port: int
    username: str
    password: str = field(repr=False)
    client_id: str = "linkhub-bridge"
    # (pattern, direction): "out" to the other broker, "in" from it.
    topics: tuple[tuple[str, str], ...] = ()

    def lines(self) -> list[str]:
        return [
            f"connection {self.name}",
            f"address {self.host}:{self.port}",
            f"remote_username {self.username}",
            f"remote_password {self.password}",
            f"remote_clientid {self.client_id}",
            # A session kept on both sides: what the hub publishes while the other
            # broker is away (an unlink's empty configs) is delivered when it is back.
            "cleansession false",
            "bridge_protocol_version mqttv311",
            # Its connection state as a retained local $SYS message only: the
            # other broker's users need not be allowed to read it.
            "notifications true",
            "notifications_local_only true",
            "restart_timeout 2 30",
            *(f"topic {pattern} {direction} 1" for pattern, direction in self.topics),
        ]


@dataclass(frozen=True, slots=True)
class ManagedBrokerConfig:
    directory: Path
    listen_host: str
    port: int
    # A second listener with TLS on this port (0: none), on the hub's own CA
    # (hub/broker/tls.py); its certificate names `tls_names`.
    tls_port: int = 0
    tls_names: tuple[str, ...] = ()
    # Load the bootstrap guard plugin (hub/broker/bootstrap_guard.py) where it
    # can be built; False only for tests that show what it prevents.
    bootstrap_guard: bool = True
    # Bridge these topics to another broker (Home Assistant's own), or none.
    bridge: Bridge | None = None

    def __post_init__(self) -> None:
        if self.tls_port and self.tls_port == self.port:
            raise ConfigError(f"the TLS port cannot be the plain MQTT port ({self.port})")


DYNSEC_FILE = "dynamic-security.json"
DYNSEC_LAST_GOOD_FILE = "dynamic-security.last-good.json"
# Free space below which /healthz calls the broker's storage low: room for the
# broker to write its file again several times over, and at least this much.
LOW_SPACE_FLOOR_BYTES = 1024 * 1024
LOW_SPACE_FILE_MULTIPLE = 4


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash or a full disk leaves either the old
    file or the new one, never a cut one: a temporary file in the same directory,
    fsync, rename over `path`, then fsync of the directory so that the rename
    itself is on disk (rename(2) is atomic; durability needs the directory's fsync)."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    directory_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def _parse_dynsec(data: bytes) -> str | None:
    """Why these bytes are not a dynamic-security file mosquitto can load, or None."""
    try:
        document = json.loads(data)
    except ValueError as exc:  # json.JSONDecodeError and UnicodeDecodeError
        return f"not valid JSON ({exc}; {len(data)} bytes)"
    if not isinstance(document, dict) or not isinstance(document.get("clients"), list):
        return "valid JSON, but without the list of clients"
    return None


class DynsecFileGuard:
    """The managed mosquitto's dynamic-security file: checked after each identity
    change, a last good copy kept beside it, and put back at start if need be.

    Only for the hub's own mosquitto: the file of a broker run elsewhere
    (`--broker`) is not the hub's to read.
    """

    def __init__(self, directory: Path) -> None:
        self.live = directory / DYNSEC_FILE
        self.last_good = directory / DYNSEC_LAST_GOOD_FILE
        self._lock = threading.Lock()
        self._kept: bytes | None = None  # what the last good copy holds, once read or written
        # What went wrong with the file the last time it was checked (None: nothing).
        self.problem: str | None = None

    def check(self) -> None:
        """After an identity change: the live file must parse (raises BrokerAdminError
        if not: the change is in the broker's memory only, and the next start would
        not have it); then it becomes the last good copy. A copy that cannot be
        written is recorded for /healthz, not raised: the live file is whole."""
        with self._lock:
            try:
                data = self.live.read_bytes()
            except OSError as exc:
                self.problem = f"cannot read {self.live}: {exc.strerror}"
                raise BrokerAdminError(
                    f"the broker's logins file {self.live} cannot be read ({exc.strerror})"
                ) from exc
            broken = _parse_dynsec(data)
            if broken is not None:
                self.problem = (
                    f"mosquitto could not save its logins file {self.live} ({broken}); "
                    f"free space in {self.live.parent}"
                )
                log.error("%s: the last good copy %s is kept", self.problem, self.last_good)
                raise BrokerAdminError(
                    f"the broker could not save the change: its logins file is {broken}, "
                    f"probably because {self.live.parent} is full. Free space there; "
                    f"the hub restores the last good copy at its next start"
                )
            self._keep(data)

    def _keep(self, data: bytes) -> None:
        if data == self._kept:
            self.problem = None
            return
        try:
            write_atomically(self.last_good, data)
        except OSError as exc:
            self.problem = f"cannot write the last good copy {self.last_good}: {exc.strerror}"
            log.error("%s; the previous copy is kept", self.problem)
            return
        self._kept = data
        self.problem = None

    def restore_if_broken(self) -> None:
        """At start, before mosquitto reads the file: a live file that is missing or
        does not parse is replaced by the last good copy (logged); with no usable
        copy, raises BrokerUnavailable saying what happened and what to do."""
        with self._lock:
            broken: str | None = "missing"
            try:
                live = self.live.read_bytes()
            except FileNotFoundError:
                pass
            else:
                broken = _parse_dynsec(live)
                if broken is None:
                    self._keep(live)
                    return
            try:
                copy: bytes | None = self.last_good.read_bytes()
            except FileNotFoundError:
                copy = None
            if copy is None or _parse_dynsec(copy) is not None:
                why = (
                    "there is no last good copy"
                    if copy is None
                    else f"its last good copy {self.last_good} is damaged too"
                )
                raise BrokerUnavailable(
                    f"the broker's logins file {self.live} is {broken} (mosquitto rewrites it in place, "
                    f"so a full disk cuts it short), and {why}: every broker login (the hub's admin, its "
                    f"own, the devices' bootstrap and every linked device) is in that file. Free space in "
                    f"{self.live.parent}, then restore a backup (`linkhub restore FILE`); or, to start over, "
                    f"move {self.live} and {self.live.parent / 'admin-password'} away: the hub then "
                    f"makes new ones and every device must be linked again."
                )
            if live is not None:
                # Kept for whoever wants to look at what was left of it.
                with contextlib.suppress(OSError):
                    os.replace(self.live, self.live.with_name(f"{DYNSEC_FILE}.broken"))
            write_atomically(self.live, copy)
            self._kept = copy
            self.problem = None
            log.warning(
                "the broker's logins file %s was %s (a full disk?): restored the last good copy %s",
                self.live,
                broken,
                self.last_good,
            )

    def storage_problem(self) -> str | None:
        """For /healthz: the last failed check or copy, or too little free space."""
        if self.problem is not None:
            return self.problem
        try:
            stats = os.statvfs(self.live.parent)
            size = self.live.stat().st_size
        except OSError as exc:
            return f"cannot check {self.live.parent}: {exc.strerror}"
        free = stats.f_bavail * stats.f_frsize
        needed = max(LOW_SPACE_FLOOR_BYTES, LOW_SPACE_FILE_MULTIPLE * size)
        if free < needed:
            return (
                f"low space: {free} bytes free in {self.live.parent}, below {needed}; "
                "the broker may not be able to save its logins"
            )
        return None
@dataclass(slots=True)
class RestartBudget:
    """How often a broker that keeps dying is restarted before the hub gives up.

    Every exit and every failed start counts as a failure; when `limit` of them
    fall within `window_s` seconds, `failed` says to give up (None), so the hub
    exits non-zero and its service manager (systemd's `Restart=on-failure`,
    systemd.service(5)) restarts the whole hub. Otherwise it says how long to
    wait first: `first_delay_s` doubled for each earlier failure in the window,
    at most `max_delay_s`, so a broker killed once (the out-of-memory killer) is
    back within a fraction of a second and one that cannot start is not
    hammered. Pure: the caller passes the time, which keeps the tests exact.
    """

    limit: int = DEFAULT_BROKER_RESTART_LIMIT
    window_s: float = DEFAULT_BROKER_RESTART_WINDOW_S
    first_delay_s: float = 0.2
    max_delay_s: float = 10.0
    _failures: list[float] = field(default_factory=list)

    def failed(self, now_s: float) -> float | None:
        """One more failure at `now_s`: the seconds to wait before the next try, or None to give up."""
        self._failures = [t for t in self._failures if now_s - t < self.window_s] + [now_s]
        if len(self._failures) >= self.limit:
            return None
        return min(self.first_delay_s * 2 ** (len(self._failures) - 1), self.max_delay_s)


@dataclass(frozen=True, slots=True)
class SupervisionHooks:
    """What the hub is told by the thread that watches its mosquitto; each gets a reason."""

    down: Callable[[str], None]
    up: Callable[[], None]
    gave_up: Callable[[str], None]


class ManagedBroker:
    def __init__(self, config: ManagedBrokerConfig) -> None:
        self.config = config
        self._process: subprocess.Popen[bytes] | None = None
        self.tls_files: TlsFiles | None = None  # once prepared, with a TLS listener
        self.dynsec_file = DynsecFileGuard(config.directory)
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        # Built at the first prepare(); the reason it is off, when it is.
        self.bootstrap_guard: Path | None = None
        self.bootstrap_guard_problem: str | None = None
        self._guard_tried = False

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
        dynsec_file = self.dynsec_file.live
        if not secret_file.exists():
            password = secrets.token_urlsafe(24)
            write_atomically(dynsec_file, json.dumps(initial_dynsec_config(password), indent=2).encode())
            write_secret(secret_file, password)
        # A file cut short by a full disk is put back from its last good copy.
        self.dynsec_file.restore_if_broken()
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
            # The guard answers first, so it must be loaded before dynamic security.
            *self._guard_lines(),
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
        if self.config.bridge is not None:
            lines += self.config.bridge.lines()  # last: every line after `connection` is the bridge's
        conf.write_text("\n".join([*lines, ""]))
        return conf

    def _guard_lines(self) -> list[str]:
        if not self.config.bootstrap_guard:
            return []
        if not self._guard_tried:
            self._guard_tried = True
            try:
                self.bootstrap_guard = build_guard(self.config.directory)
            except GuardUnavailable as exc:
                self.bootstrap_guard_problem = str(exc)
                log.warning(
                    "the bootstrap guard is off: %s; a guest on the bootstrap login can knock a linked "
                    "device off the broker by connecting with its client id (docs/security.md)",
                    exc,
                )
        return plugin_lines(self.bootstrap_guard) if self.bootstrap_guard is not None else []

    def _tls_listener(self) -> list[str]:
        """The TLS listener, last in the file: the lines after `listener` belong to it.

        The dynamic-security plugin and `allow_anonymous false` are global
        (per_listener_settings false), so a device has the same identity and the
        same rights on either listener.
        """
        from hub.broker.tls import ensure_tls_files  # `cryptography` costs 9 MB: only with TLS on

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
        self._terminate(self._process)
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

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def supervise(
        self,
        hooks: SupervisionHooks,
        budget: RestartBudget | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        """Watch the started mosquitto from a thread of its own and restart it when it exits.

        The thread blocks in waitpid(2) (Popen.wait), so an exit is noticed at
        once and the child reaped (no zombie); it is restarted on the same port
        with the same config and dynamic-security file, after `budget`'s delay.
        `wait(seconds)` returns True when supervision should end (default: the
        stop event); tests pass their own with `clock` to skip the delays.
        """
        if self._watcher is not None:
            return
        budget = budget or RestartBudget()
        pause = wait or self._stopping.wait
        self._watcher = threading.Thread(
            target=self._watch, args=(hooks, budget, clock, pause), name="broker-watch", daemon=True
        )
        self._watcher.start()

    def _watch(
        self,
        hooks: SupervisionHooks,
        budget: RestartBudget,
        clock: Callable[[], float],
        pause: Callable[[float], bool],
    ) -> None:
        while not self._stopping.is_set():
            process = self._process
            if process is None:
                return
            code = process.wait()  # reaps it
            if self._stopping.is_set():
                return
            reason = f"mosquitto (pid {process.pid}) exited ({_exit_reason(code)})"
            while True:
                delay = budget.failed(clock())
                if delay is None:
                    log.critical(
                        "%s; it failed %d times within %g s: giving up so that the hub exits "
                        "and its service manager restarts it",
                        reason,
                        budget.limit,
                        budget.window_s,
                    )
                    hooks.gave_up(reason)
                    return
                log.error("%s; restarting it in %.1f s", reason, delay)
                hooks.down(f"{reason}; restarting it in {delay:.1f} s")
                if pause(delay) or self._stopping.is_set():
                    return
                try:
                    # Started from this thread, which lives as long as the child:
                    # PR_SET_PDEATHSIG (prctl(2)) fires when the *thread* that
                    # forked exits, not only the process.
                    self.start()
                except (LinkHubError, OSError) as exc:  # OSError: Popen itself failed
                    reason = f"mosquitto could not be restarted: {exc}"
                    continue
                if self._stopping.is_set():  # stop() ran while this one started
                    self._terminate(self._process)
                    return
                log.warning("mosquitto restarted (pid %s) on port %s", self.pid, self.config.port)
                hooks.up()
                break

    def stop(self) -> None:
        self._stopping.set()
        process, self._process = self._process, None
        self._terminate(process)
        watcher = self._watcher
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=10)

    @staticmethod
    def _terminate(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        """Stop abruptly, as a power cut would (tests): not restarted."""
        self._stopping.set()
        if self._process is not None:
            self._process.kill()
            self._process.wait()
            self._process = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None


def _exit_reason(code: int) -> str:
    """Popen's returncode in words: negative is the signal that ended it."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
