"""Hub settings: one frozen object, made once at start.

Where the values come from (flag > environment > configuration file > default)
is decided in one place, `hub.config.loader.resolve`; this module holds the
result and the rules every value must keep whatever its source.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from hub.core.rate_limits import LimitsPolicy
from hub.errors import ConfigError
from hub.services.retention import RetentionPolicy

DEFAULT_BROKER_RESTART_LIMIT = 5
DEFAULT_BROKER_RESTART_WINDOW_S = 60
DEFAULT_HTTP_PORT = 8080
# 1883 is usually taken on a home-lab Pi (Home Assistant's mosquitto); the
# hub's own broker defaults next to it and is announced over mDNS anyway.
DEFAULT_MQTT_PORT = 1884
# What docs suggest for --mqtt-tls-port (MQTT over TLS's registered port); TLS is off unless asked for.
SUGGESTED_MQTT_TLS_PORT = 8883
DEFAULT_CODE_LIFETIME_S = 900  # RFC 8628 examples and Microsoft's /link use 15 minutes
DEFAULT_POLL_INTERVAL_S = 5  # RFC 8628 §3.2 default
# A device approved but never connected keeps working credentials this long (issue 19 item 17).
DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S = 86400
UNCONFIRMED_DEVICE_LIFETIME_RANGE_S = (300, 30 * 86400)
# How long a web session lasts: 12 hours while the pages are plain HTTP, where a
# cookie taken off the LAN works until then (or until its owner signs out); 30
# days over HTTPS, where nobody on the LAN reads it.
DEFAULT_WEB_SESSION_LIFETIME_S = 12 * 3600
DEFAULT_HTTPS_SESSION_LIFETIME_S = 30 * 86400
WEB_SESSION_LIFETIME_RANGE_S = (300, 30 * 86400)
# Limits, shared with hub.config.loader so that its messages name the same ranges.
PORT_RANGE = (0, 65535)
# Down to 10 s: short enough for a test to see a code expire (docs/configuration.md).
CODE_LIFETIME_RANGE_S = (10, 86400)
POLL_INTERVAL_RANGE_S = (1, 60)
LOG_FORMATS = ("text", "json")
# Room for what is still written while new writes are refused (broker files, WAL
# checkpoints, logs); a Pi's SD card has gigabytes, so this costs nothing.
DEFAULT_MIN_FREE_SPACE_MB = 64
MIN_FREE_SPACE_RANGE_MB = (0, 1_000_000)
# The hub is `linkhub.local.` on the LAN unless told otherwise (--mdns-name).
DEFAULT_MDNS_NAME = "linkhub"
# One DNS label (RFC 1123 host name rules): what goes before `.local.`.
_MDNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def control_socket(data_dir: Path) -> Path:
    """Where a running hub answers the command line (linkhub/control_client.py):
    the one place that names the file."""
    return data_dir / "hub.sock"


def link_page_url(host: str, *, http_port: int, https_port: int = 0) -> str:
    """The link page on `host`, as devices show it and the hub prints it: over
    HTTPS whenever the hub serves HTTPS (its plain port then only redirects), so
    that the code in a QR code's `?code=` never crosses the LAN in clear."""
    if https_port:
        return f"https://{host}{'' if https_port == 443 else f':{https_port}'}/link"
    return f"http://{host}:{http_port}/link"


@dataclass(frozen=True, slots=True)
class ExternalBroker:
    host: str
    port: int
    admin_username: str
    # Kept out of repr: a logged or printed config must not show a secret.
    admin_password: str = field(repr=False)

    def __str__(self) -> str:
        """As `linkhub config check` shows it: the URL without its password."""
        return f"mqtt://{self.admin_username}:***@{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class HostPort:
    """HOST or HOST:PORT as a person gave it; `port` None means the broker's own."""

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def parse_host_port(text: str) -> HostPort:
    host, sep, port = text.rpartition(":")
    if not sep:
        return HostPort(text)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"expected HOST or HOST:PORT (port 1-65535), not {text!r}")
    return HostPort(host, int(port))


@dataclass(frozen=True, slots=True)
class HubConfig:
    data_dir: Path
    database_url: str = field(repr=False)  # a PostgreSQL URL may hold a password
    http_host: str = "0.0.0.0"
    http_port: int = DEFAULT_HTTP_PORT
    mqtt_host: str = "0.0.0.0"
    mqtt_port: int = DEFAULT_MQTT_PORT
    # The hub's own mosquitto also listens with TLS here (0: it does not), on a
    # CA the hub makes (hub/broker/tls.py). Off by default: 8883, the usual port, is
    # often taken on a home-lab Pi, and plain `linkhub run` must just work.
    mqtt_tls_port: int = 0
    external_broker: ExternalBroker | None = None
    public_host: str | None = None
    # Where devices are told to connect after linking, when it is not where the
    # hub connects (a broker in a container, behind a port mapping): HOST[:PORT].
    device_broker: HostPort | None = None
    code_lifetime_s: int = DEFAULT_CODE_LIFETIME_S
    poll_interval_s: int = DEFAULT_POLL_INTERVAL_S
    unconfirmed_device_lifetime_s: int = DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S
    mdns: bool = True
    # /link lists the devices waiting to be linked to every signed-in member
    # (docs/security.md, "Devices waiting to be linked"); off, typing the code is the only way.
    waiting_list: bool = True
    # Home Assistant MQTT discovery of linked devices, and its commands (hub/core/home_assistant.py).
    home_assistant: bool = True
    # Home Assistant's own mosquitto, which the hub's own mosquitto bridges the
    # discovery, state, status and command topics to (hub/broker/managed.py).
    home_assistant_broker: ExternalBroker | None = None
    # The mDNS host label: the hub is `<mdns_name>.local.` (see mdns_host_label).
    mdns_name: str = DEFAULT_MDNS_NAME
    # Interface names or IPv4 addresses to advertise on; empty: the RFC 1918 ones.
    mdns_interfaces: tuple[str, ...] = ()
    # None: the account service runs inside the hub on its database.
    account_service_url: str | None = None
    account_service_token: str | None = field(default=None, repr=False)
    # How `linkhub run` writes its log lines: "text" for people, "json" for collectors.
    log_format: str = "text"
    # Limits on guessing and flooding (hub/core/rate_limits.py, docs/security.md).
    limits: LimitsPolicy = field(default_factory=LimitsPolicy)
    # What is kept how long (hub/services/retention.py, docs/security.md).
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    # Below this much free space in data_dir the hub stores nothing new (hub.store.engine.SpaceGuard); 0: off.
    min_free_space_mb: int = DEFAULT_MIN_FREE_SPACE_MB
    # None: DEFAULT_WEB_SESSION_LIFETIME_S, or DEFAULT_HTTPS_SESSION_LIFETIME_S with https_port.
    web_session_lifetime_s: int | None = None
    # The pages also over HTTPS on this port (0: not), on the hub's own CA; the
    # HTTP port then redirects to it (web/https.py).
    https_port: int = 0
    # Names the web pages answer to besides loopback, the machine's addresses,
    # the mDNS name and public_host (web/hosts.py): a name in the router's DNS.
    web_hosts: tuple[str, ...] = ()
    # Read from probe_token_file: lets a request from beyond loopback read
    # /metrics and /healthz's detail (web/health.py). None: loopback only.
    probe_token: str | None = field(default=None, repr=False)
    # The OAuth 2.0 device authorization server for apps (web/oauth/) over HTTPS
    # on this port (0: off), its issuer https://<public host>:<port>/oauth unless
    # oauth_issuer names another (a reverse proxy in front of it).
    oauth_port: int = 0
    oauth_issuer: str | None = None
    # Whether an app the owner did not register may ask at all (docs/security.md, "Apps").
    oauth_unregistered_apps: bool = True

    @property
    def session_lifetime_s(self) -> int:
        if self.web_session_lifetime_s is not None:
            return self.web_session_lifetime_s
        return DEFAULT_HTTPS_SESSION_LIFETIME_S if self.https_port else DEFAULT_WEB_SESSION_LIFETIME_S

    @property
    def web_host_names(self) -> tuple[str, ...]:
        """Every name the web pages answer to, other than loopback and the machine's addresses."""
        names = [f"{self.mdns_name}.local", self.public_host or "", self.http_host, *self.web_hosts]
        return tuple(name for name in names if name and name not in ("0.0.0.0", "::"))

    # The hub restarts its own mosquitto when it exits, and gives up (exits
    # non-zero, for systemd to restart it) after this many failures within the
    # window (hub/broker/managed.py RestartBudget, docs/configuration.md).
    broker_restart_limit: int = DEFAULT_BROKER_RESTART_LIMIT
    broker_restart_window_s: int = DEFAULT_BROKER_RESTART_WINDOW_S

    def __post_init__(self) -> None:
        # hub.config.loader checks the same rules first, naming the source of a bad
        # value; these stay for configs built in code (tests, other tools).
        for name in ("http_port", "mqtt_port", "mqtt_tls_port", "https_port", "oauth_port"):
            port = getattr(self, name)
            if not PORT_RANGE[0] <= port <= PORT_RANGE[1]:
                raise ConfigError(f"{name.replace('_', '-')} must be 0-65535, not {port}")
        if self.mqtt_tls_port and self.external_broker is not None:
            raise ConfigError(
                "mqtt_tls_port sets up TLS on the hub's own mosquitto, and broker names another "
                "one: set TLS up on that broker, or leave mqtt_tls_port at 0"
            )
        if self.home_assistant_broker is not None and self.external_broker is not None:
            raise ConfigError(
                "home_assistant_broker makes the hub's own mosquitto bridge to Home Assistant's, and "
                "broker names another one: set the bridge up on that broker, or leave out one of them"
            )
        if self.home_assistant_broker is not None and not self.home_assistant:
            raise ConfigError(
                "home_assistant_broker bridges Home Assistant's topics, and home_assistant is off: "
                "turn it on, or leave home_assistant_broker out"
            )
        if self.mqtt_tls_port and self.mqtt_tls_port == self.mqtt_port:
            raise ConfigError(
                f"mqtt_tls_port and mqtt_port are both {self.mqtt_port}: TLS needs a port of its own"
            )
        if self.https_port and self.https_port in (self.http_port, self.mqtt_port, self.mqtt_tls_port):
            raise ConfigError(f"https_port {self.https_port} is taken by another of the hub's listeners")
        others = (self.http_port, self.mqtt_port, self.mqtt_tls_port, self.https_port)
        if self.oauth_port and self.oauth_port in others:
            raise ConfigError(f"oauth_port {self.oauth_port} is taken by another of the hub's listeners")
        if not CODE_LIFETIME_RANGE_S[0] <= self.code_lifetime_s <= CODE_LIFETIME_RANGE_S[1]:
            raise ConfigError("the code lifetime must be between 10 s and 24 h")
        if not POLL_INTERVAL_RANGE_S[0] <= self.poll_interval_s <= POLL_INTERVAL_RANGE_S[1]:
            raise ConfigError("the poll interval must be between 1 and 60 s")
        low, high = UNCONFIRMED_DEVICE_LIFETIME_RANGE_S
        if not low <= self.unconfirmed_device_lifetime_s <= high:
            raise ConfigError("the unconfirmed device lifetime must be between 300 s and 30 days")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"the log format must be text or json, not {self.log_format!r}")
        if not _MDNS_LABEL.fullmatch(self.mdns_name):
            raise ConfigError(
                f"--mdns-name must be one host-name label (a-z, 0-9, '-'), not {self.mdns_name!r}"
            )

    @property
    def control_socket(self) -> Path:
        return control_socket(self.data_dir)

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"


DATA_DIR_ENV = "LINKHUB_DATA_DIR"


def find_data_dir(
    flag: Path | None, env: Mapping[str, str] | None = None, home: Path | None = None
) -> tuple[Path, str]:
    """The one way to find the data directory, and where it came from:
    --data-dir, else LINKHUB_DATA_DIR, else ~/.local/share/linkhub."""
    env = os.environ if env is None else env
    if flag is not None:
        return flag.expanduser().resolve(), "flag --data-dir"
    if env.get(DATA_DIR_ENV, "").strip():
        return Path(env[DATA_DIR_ENV].strip()).expanduser().resolve(), f"env {DATA_DIR_ENV}"
    return ((home or Path.home()) / ".local/share/linkhub").resolve(), "default"


def default_database_url(data_dir: Path) -> str:
    return os.environ.get("LINKHUB_DATABASE_URL") or f"sqlite:///{data_dir / 'linkhub.db'}"


def mdns_host_label(text: str) -> str:
    """`Kitchen-Hub`, `kitchen-hub.local` or `kitchen-hub.local.` -> `kitchen-hub`.

    People type the name the way they will see it (`http://kitchen-hub.local`),
    so the `.local` suffix and case are forgiven; anything else that is not one
    valid label is refused rather than mangled into a name nobody typed.
    """
    label = text.strip().lower().rstrip(".")
    label = label.removesuffix(".local")
    if not _MDNS_LABEL.fullmatch(label):
        raise ConfigError(
            f"--mdns-name must be a host name such as linkhub or kitchen-hub.local "
            f"(letters, digits and '-', at most 63), not {text!r}"
        )
    return label


def parse_broker_url(url: str) -> ExternalBroker:
    """`mqtt://ADMIN:PASSWORD@HOST:PORT`, ADMIN being a dynamic-security admin."""
    parts = urlsplit(url)
    if parts.scheme != "mqtt" or not parts.hostname or parts.username is None or parts.password is None:
        raise ConfigError(
            f"--broker must look like mqtt://ADMIN:PASSWORD@HOST:PORT, not {redact_url(url)!r} "
            "(ADMIN is the broker's dynamic-security admin)"
        )
    try:
        port = parts.port or 1883
    except ValueError:
        raise ConfigError(f"bad port in --broker {redact_url(url)!r}") from None
    return ExternalBroker(parts.hostname, port, unquote(parts.username), unquote(parts.password))


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`: what may be printed or logged.

    Broker and database URLs carry passwords; error messages and `linkhub config
    check` show them only this way.
    """
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return "(unreadable URL)"
    if not has_password:
        if "@" in url:  # not a URL we can read, but it may still hold user:password@
            scheme, sep, rest = url.rpartition("://")
            return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()
