"""Where each setting of `linkhub run` comes from: flag > environment > file > default.

Three sources can set the same thing (a systemd unit sets environment
variables, an operator keeps a TOML file, a person types a flag), so they are
merged in exactly one place, `resolve`, a pure function: it reads no file and no
environment of its own, which keeps the precedence rule testable as a table.
`load` is the thin I/O shell around it (find and read the file, read the
account service's token file) that `linkhub run` and `linkhub config check` use.

Every key is described once, in KEYS: its flag, its environment variable
(LINKHUB_ + the key in capitals), its default and what a valid value is. The
argparse options, the messages and docs/configuration.md all follow that table.

A bad value is reported with its source (the flag, the environment variable, or
the file and key), what was expected and what was found; all problems are
collected, not just the first, so one `linkhub config check` shows them all.
"""

from __future__ import annotations

import argparse
import difflib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hub.config.model import (
    CODE_LIFETIME_RANGE_S,
    DEFAULT_BROKER_RESTART_LIMIT,
    DEFAULT_BROKER_RESTART_WINDOW_S,
    DEFAULT_CODE_LIFETIME_S,
    DEFAULT_HTTP_PORT,
    DEFAULT_MDNS_NAME,
    DEFAULT_MIN_FREE_SPACE_MB,
    DEFAULT_MQTT_PORT,
    DEFAULT_POLL_INTERVAL_S,
    DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S,
    DEFAULT_WEB_SESSION_LIFETIME_S,
    LOG_FORMATS,
    MIN_FREE_SPACE_RANGE_MB,
    POLL_INTERVAL_RANGE_S,
    PORT_RANGE,
    SUGGESTED_MQTT_TLS_PORT,
    UNCONFIRMED_DEVICE_LIFETIME_RANGE_S,
    WEB_SESSION_LIFETIME_RANGE_S,
    ExternalBroker,
    HostPort,
    HubConfig,
    find_data_dir,
    mdns_host_label,
    parse_broker_url,
    parse_host_port,
    redact_url,
)
from hub.core.rate_limits import LimitsPolicy, Rate, parse_rate
from hub.errors import ConfigError, LinkHubError
from hub.services.retention import DAYS_RANGE, PER_ACCOUNT_RANGE, RetentionPolicy
from hub.store.secret_file import read_secret

FILE_NAME = "linkhub.toml"  # looked for in the data directory when no file is named
CONFIG_ENV = "LINKHUB_CONFIG"
ENV_PREFIX = "LINKHUB_"

DEFAULT = "default"


class Invalid(LinkHubError, ValueError):
    """A value that is not what its key expects; the message says what was expected."""


# --- what each key accepts ------------------------------------------------------------


def _show(value: object) -> str:
    """A value as a person would recognise it in a message: text quoted, the rest plain."""
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "a table"
    return str(value)


def _whole_number(low: int, high: int, unit: str = "") -> Callable[[object], int]:
    def parse(value: object) -> int:
        expected = f"a whole number from {low} to {high}{unit}"
        if isinstance(value, str):
            text = value.strip()
            if not re.fullmatch(r"[+-]?\d+", text):
                raise Invalid(f"expected {expected}, got {_show(value)}")
            number = int(text)
        elif isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            raise Invalid(f"expected {expected}, got {_show(value)}")
        if not low <= number <= high:
            raise Invalid(f"expected {expected}, got {number}")
        return number

    return parse


def _text(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"expected some text, got {_show(value) if value != '' else 'nothing'}")
    return value.strip()


def _host(value: object) -> str:
    text = _text(value)
    if any(c.isspace() or c in "/@" for c in text):
        raise Invalid(f"expected a host name or IP address, got {_show(value)}")
    return text


def _switch(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in ("1", "true", "yes", "on"):
            return True
        if word in ("0", "false", "no", "off"):
            return False
    raise Invalid(f"expected true or false, got {_show(value)}")


def _names(value: object) -> tuple[str, ...]:
    """A list of interface names or addresses; in the environment, separated by commas or spaces."""
    items: Sequence[object]
    if isinstance(value, str):
        items = [item for item in re.split(r"[,\s]+", value) if item]
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        raise Invalid(f"expected a list of interface names or IPv4 addresses, got {_show(value)}")
    names = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise Invalid(f"expected interface names or IPv4 addresses (text), got {_show(item)} in the list")
        names.append(item.strip())
    return tuple(names)


def _mdns_name(value: object) -> str:
    text = _text(value)
    try:
        return mdns_host_label(text)
    except ConfigError:
        raise Invalid(
            f"expected one host name such as linkhub or kitchen-hub.local "
            f"(letters, digits and '-', at most 63), got {_show(value)}"
        ) from None


def _broker(value: object) -> ExternalBroker:
    text = _text(value)
    try:
        return parse_broker_url(text)
    except ConfigError:
        raise Invalid(
            f"expected mqtt://ADMIN:PASSWORD@HOST:PORT (the broker's dynamic-security admin), "
            f"got {redact_url(text)!r}"
        ) from None


def _remote_broker(value: object) -> ExternalBroker:
    """Another broker's login, mqtt://USER:PASSWORD@HOST:PORT (a plain login this time)."""
    text = _text(value)
    try:
        return parse_broker_url(text)
    except ConfigError:
        raise Invalid(f"expected mqtt://USER:PASSWORD@HOST:PORT, got {redact_url(text)!r}") from None


def _host_port(value: object) -> HostPort:
    """HOST or HOST:PORT, read here once (hub.config.model.parse_host_port)."""
    try:
        return parse_host_port(_text(value))
    except ConfigError:
        raise Invalid(f"expected HOST or HOST:PORT (port 1-65535), got {_show(value)}") from None


def _http_url(value: object) -> str:
    text = _text(value)
    if not re.fullmatch(r"https?://[^/\s@?#]+(/[^\s?#]*)?", text):
        raise Invalid(f"expected http://HOST:PORT (no user or password in it), got {redact_url(text)!r}")
    return text


def _issuer_url(value: object) -> str:
    """An OAuth issuer: https, no query or fragment (RFC 8414 §2), no trailing slash."""
    text = _text(value)
    if not re.fullmatch(r"https://[^/\s@?#]+(/[^\s?#]*)?", text) or text.endswith("/"):
        raise Invalid(f"expected https://HOST[:PORT]/PATH without a trailing slash, got {text!r}")
    return text


def _path(value: object) -> Path:
    return Path(_text(value))


def _database_url(value: object) -> str:
    text = _text(value)
    if "://" not in text:
        raise Invalid(
            f"expected a SQLAlchemy URL such as sqlite:////var/lib/linkhub/linkhub.db or "
            f"postgresql+psycopg://USER@HOST:5432/NAME, got {redact_url(text)!r}"
        )
    return text


def _rate(value: object) -> Rate:
    """A rate such as "5 per minute" or "10 per 15 minutes", read here once
    (hub.core.rate_limits.parse_rate)."""
    text = _text(value)
    try:
        return parse_rate(text)
    except ValueError:
        raise Invalid(
            f"expected a rate of at least 1, such as '5 per minute' or '60 per hour', got {_show(value)}"
        ) from None


def _log_format(value: object) -> str:
    if isinstance(value, str) and value.strip().lower() in LOG_FORMATS:
        return value.strip().lower()
    raise Invalid(f"expected {' or '.join(LOG_FORMATS)}, got {_show(value)}")


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: its name in the file, its flag, its default and what it accepts."""

    name: str
    flag: str
    parse: Callable[[object], Any]
    default: Any
    help: str
    metavar: str | None = None
    secret_in_url: bool = False  # shown with its password replaced by ***

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def check_toml_type(self, value: object) -> None:
        """In the file, values have TOML types: a port is 8080, not "8080".

        The environment and flags are text and are parsed; the file is not, so
        that a quoted number or a "no" for false is pointed out, not guessed at.
        """
        default = self.default
        if isinstance(value, str) and isinstance(default, bool):
            raise Invalid(f"expected true or false (without quotes), got the text {value!r}")
        if isinstance(value, str) and isinstance(default, int):
            raise Invalid(f"expected a whole number (without quotes), got the text {value!r}")
        if isinstance(value, str) and isinstance(default, tuple):
            raise Invalid(f'expected a list such as ["wlan0", "192.168.1.20"], got the text {value!r}')


_PORT = _whole_number(*PORT_RANGE)

KEYS: tuple[Key, ...] = (
    Key("http_host", "--http-host", _host, "0.0.0.0", "where the web page listens", "HOST"),
    Key("http_port", "--http-port", _PORT, DEFAULT_HTTP_PORT, "the web page's port", "N"),
    Key("mqtt_host", "--mqtt-host", _host, "0.0.0.0", "where the hub's own mosquitto listens", "HOST"),
    Key("mqtt_port", "--mqtt-port", _PORT, DEFAULT_MQTT_PORT, "the hub's own mosquitto's port", "N"),
    Key(
        "mqtt_tls_port",
        "--mqtt-tls-port",
        _PORT,
        0,
        f"the hub's own mosquitto also listens with TLS on this port, on a CA the hub makes "
        f"(0, the default: no TLS; {SUGGESTED_MQTT_TLS_PORT} is the usual port)",
        "N",
    ),
    Key(
        "broker",
        "--broker",
        _broker,
        None,
        "use a mosquitto you already run: mqtt://ADMIN:PASSWORD@HOST:PORT (its dynamic-security admin)",
        "URL",
        secret_in_url=True,
    ),
    Key(
        "public_host",
        "--public-host",
        _host,
        None,
        "the name or address phones use to reach the hub (default: its LAN address)",
        "HOST",
    ),
    Key(
        "device_broker",
        "--device-broker",
        _host_port,
        None,
        "where linked devices connect, if not where the hub does (a broker behind a port mapping)",
        "HOST[:PORT]",
    ),
    Key(
        "code_lifetime_s",
        "--code-lifetime",
        _whole_number(*CODE_LIFETIME_RANGE_S, " seconds"),
        DEFAULT_CODE_LIFETIME_S,
        f"seconds a user code stays valid (default {DEFAULT_CODE_LIFETIME_S})",
        "S",
    ),
    Key(
        "poll_interval_s",
        "--poll-interval",
        _whole_number(*POLL_INTERVAL_RANGE_S, " seconds"),
        DEFAULT_POLL_INTERVAL_S,
        f"seconds a device or an app waits between polls (default {DEFAULT_POLL_INTERVAL_S})",
        "S",
    ),
    Key(
        "unconfirmed_device_lifetime_s",
        "--unconfirmed-device-lifetime",
        _whole_number(*UNCONFIRMED_DEVICE_LIFETIME_RANGE_S, " seconds"),
        DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S,
        "seconds an approved device that never connected keeps its credentials "
        f"(default {DEFAULT_UNCONFIRMED_DEVICE_LIFETIME_S})",
        "S",
    ),
    Key("mdns", "--mdns", _switch, True, "advertise the hub over mDNS (--no-mdns: do not)"),
    Key(
        "waiting_list",
        "--waiting-list",
        _switch,
        True,
        "list the devices waiting to be linked on /link for every signed-in member "
        "(--no-waiting-list: only typing the code links; docs/security.md)",
    ),
    Key(
        "home_assistant",
        "--home-assistant",
        _switch,
        True,
        "publish Home Assistant MQTT discovery for linked devices and take its commands "
        "(--no-home-assistant: do not; docs/configuration.md)",
    ),
    Key(
        "home_assistant_broker",
        "--home-assistant-broker",
        _remote_broker,
        None,
        "bridge the discovery, state, status and command topics to Home Assistant's own "
        "mosquitto, mqtt://USER:PASSWORD@HOST:PORT (the hub's own mosquitto only)",
        "URL",
        secret_in_url=True,
    ),
    Key(
        "mdns_name",
        "--mdns-name",
        _mdns_name,
        DEFAULT_MDNS_NAME,
        f"the hub's host name on the LAN, NAME.local (default {DEFAULT_MDNS_NAME})",
        "NAME",
    ),
    Key(
        "mdns_interfaces",
        "--mdns-interface",
        _names,
        (),
        "advertise over mDNS on this interface or IPv4 address (repeatable; default: every interface "
        "with a home-network 10/8, 172.16/12 or 192.168/16 address)",
        "IFACE_OR_IP",
    ),
    Key(
        "account_service",
        "--account-service",
        _http_url,
        None,
        "use an account service run on its own (`linkhub account-service`) instead of the built-in one",
        "URL",
    ),
    Key(
        "account_service_token_file",
        "--account-service-token-file",
        _path,
        None,
        "the file holding that service's bearer token (its DATA/account-service-token)",
        "FILE",
    ),
    Key(
        "database_url",
        "--database-url",
        _database_url,
        None,  # sqlite in the data directory; computed from it in resolve()
        "SQLAlchemy URL (default: SQLite in the data directory)",
        "URL",
        secret_in_url=True,
    ),
    Key("log_format", "--log-format", _log_format, "text", "log lines as text (default) or json", "FORMAT"),
    Key(
        "https_port",
        "--https-port",
        _PORT,
        0,
        "also serve the web pages over HTTPS on this port, on a certificate from the hub's own CA; "
        "the HTTP port then redirects to it (0, the default: HTTP only; 8443 is a usual choice)",
        "N",
    ),
    Key(
        "oauth_port",
        "--oauth-port",
        _PORT,
        0,
        "serve the OAuth 2.0 device authorization server for apps over HTTPS on this port, issuer "
        "https://<public host>:N/oauth (0, the default: off; docs/oauth.md)",
        "N",
    ),
    Key(
        "oauth_issuer",
        "--oauth-issuer",
        _issuer_url,
        None,
        "the issuer URL apps are told, when a reverse proxy serves the OAuth port under another "
        "name (default https://<public host>:<oauth port>/oauth)",
        "URL",
    ),
    Key(
        "oauth_unregistered_apps",
        "--oauth-unregistered-apps",
        _switch,
        True,
        "let apps the owner did not register ask to be linked, shown as unverified "
        "(--no-oauth-unregistered-apps: registered apps only; docs/security.md)",
    ),
    Key(
        "web_hosts",
        "--web-host",
        _names,
        (),
        "another name the web pages answer to (repeatable; they always answer to loopback, the "
        "machine's addresses, the mDNS name and public_host; any other Host is refused)",
        "NAME",
    ),
    Key(
        "probe_token_file",
        "--probe-token-file",
        _path,
        None,
        "a file holding a token that lets requests from beyond loopback read /metrics and "
        "/healthz's detail (Authorization: Bearer TOKEN); not set: loopback only",
        "FILE",
    ),
    Key(
        "web_session_lifetime_s",
        "--web-session-lifetime",
        _whole_number(*WEB_SESSION_LIFETIME_RANGE_S, " seconds"),
        None,
        f"seconds a web sign-in lasts (default {DEFAULT_WEB_SESSION_LIFETIME_S}, 12 hours, on plain HTTP; "
        "30 days with --https-port)",
        "S",
    ),
    # Limits on new link requests over MQTT (hub/core/link_limits.py, docs/protocol.md section 5.4).
    Key(
        "link_requests_per_client",
        "--link-requests-per-client",
        _rate,
        LimitsPolicy().link_requests_per_client,
        "new link requests one MQTT client id may send "
        f"(default '{LimitsPolicy().link_requests_per_client}')",
        "RATE",
    ),
    Key(
        "link_requests_total",
        "--link-requests-total",
        _rate,
        LimitsPolicy().link_requests_total,
        f"new link requests the hub takes from all clients (default '{LimitsPolicy().link_requests_total}')",
        "RATE",
    ),
    Key(
        "max_pending_requests",
        "--max-pending-requests",
        _whole_number(1, 100_000),
        LimitsPolicy().max_pending_requests,
        f"codes that may wait for a person at once (default {LimitsPolicy().max_pending_requests})",
        "N",
    ),
    # What one linked device may send (DeviceLimits, docs/protocol.md section 11).
    *(
        Key(
            f"device_{name}",
            f"--device-{name.replace('_', '-')}",
            _rate,
            getattr(LimitsPolicy(), f"device_{name}"),
            f"{what} one linked device may send (default '{getattr(LimitsPolicy(), f'device_{name}')}')",
            "RATE",
        )
        for name, what in (
            ("settings_sets", "settings_set messages"),
            ("reports", "reported messages"),
            ("settings_gets", "settings_get messages"),
            ("status", "status messages"),
            ("descriptions", "description messages"),
            ("states", "state messages"),
        )
    ),
    Key(
        "min_free_space_mb",
        "--min-free-space-mb",
        _whole_number(*MIN_FREE_SPACE_RANGE_MB),
        DEFAULT_MIN_FREE_SPACE_MB,
        "below this much free space (MB) in the data directory the hub stores nothing new "
        f"(default {DEFAULT_MIN_FREE_SPACE_MB}; 0: no check)",
        "MB",
    ),
    # What the hub keeps how long (hub/services/retention.py, docs/security.md).
    Key(
        "history_days",
        "--history-days",
        _whole_number(*DAYS_RANGE),
        RetentionPolicy().history_days,
        f"days the activity and settings change history are kept (default {RetentionPolicy().history_days})",
        "DAYS",
    ),
    Key(
        "history_per_account",
        "--history-per-account",
        _whole_number(*PER_ACCOUNT_RANGE),
        RetentionPolicy().history_per_account,
        "entries of activity and of settings changes kept per account, the newest "
        f"(default {RetentionPolicy().history_per_account})",
        "N",
    ),
    Key(
        "delivered_outbox_days",
        "--delivered-outbox-days",
        _whole_number(*DAYS_RANGE),
        RetentionPolicy().delivered_outbox_days,
        "days a settings change is kept after the account service took it "
        f"(default {RetentionPolicy().delivered_outbox_days})",
        "DAYS",
    ),
    Key(
        "ended_link_requests_days",
        "--ended-link-requests-days",
        _whole_number(*DAYS_RANGE),
        RetentionPolicy().ended_link_requests_days,
        "days a denied or expired link request is kept after its code expired "
        f"(default {RetentionPolicy().ended_link_requests_days})",
        "DAYS",
    ),
    # The hub's own mosquitto, restarted when it exits (hub/broker/managed.py RestartBudget).
    Key(
        "broker_restart_limit",
        "--broker-restart-limit",
        _whole_number(1, 1000),
        DEFAULT_BROKER_RESTART_LIMIT,
        "the hub exits (for systemd to restart it) when its own mosquitto failed this many times "
        f"within --broker-restart-window (default {DEFAULT_BROKER_RESTART_LIMIT})",
        "N",
    ),
    Key(
        "broker_restart_window_s",
        "--broker-restart-window",
        _whole_number(1, 86_400, " seconds"),
        DEFAULT_BROKER_RESTART_WINDOW_S,
        f"seconds over which those failures are counted (default {DEFAULT_BROKER_RESTART_WINDOW_S})",
        "S",
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}
# Keys naming a file: in the configuration file, relative to that file.
_FILE_PATHS = frozenset({"account_service_token_file", "probe_token_file"})

# Set where the file itself is found, so they cannot be in it.
_NOT_IN_FILE = {
    "data_dir": "the file is found through the data directory: use --data-dir or LINKHUB_DATA_DIR",
    "config": "name the file with --config or LINKHUB_CONFIG",
}


# --- the result -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Setting:
    """The value a key ended up with and where it came from (for `linkhub config check`)."""

    key: str
    value: Any  # as given, when it is not valid
    source: str  # "default", "flag --http-port", "env LINKHUB_HTTP_PORT", "file PATH"
    valid: bool = True

    @property
    def shown(self) -> str:
        """The value as printed: never a password."""
        if not self.valid:
            key = KEYS_BY_NAME.get(self.key)
            if key is not None and key.secret_in_url and isinstance(self.value, str):
                return f"{redact_url(self.value)!r} (not valid)"
            return f"{_show(self.value)} (not valid)"
        value = self.value
        if value is None:
            return "(not set)"
        if isinstance(value, Path):
            return str(value)
        key = KEYS_BY_NAME.get(self.key)
        if key is not None and key.secret_in_url and isinstance(value, str):
            return redact_url(value)
        if isinstance(value, tuple):
            return ", ".join(value) if value else "(none)"
        if isinstance(value, bool):
            return "true" if value else "false"
        if self.key == "mqtt_tls_port" and value == 0:
            return "0 (no TLS)"
        return str(value)


@dataclass(frozen=True, slots=True)
class Resolution:
    """Everything `resolve` decided: each setting with its source, the problems, the config."""

    settings: tuple[Setting, ...]
    problems: tuple[str, ...]
    config: HubConfig | None
    file: Path | None = None
    file_note: str = ""  # how the file was found, or why there is none

    def hub_config(self) -> HubConfig:
        """The config, or a ConfigError listing every problem (one per line)."""
        if self.problems or self.config is None:
            raise ConfigError(
                "the configuration is not valid:\n" + "\n".join(f"  - {p}" for p in self.problems)
            )
        return self.config

    def setting(self, key: str) -> Setting:
        return next(s for s in self.settings if s.key == key)

    def report(self) -> str:
        """What `linkhub config check` prints: the file, each value and its source, the verdict."""
        lines = [f"configuration file: {self.file_note}"]
        width = max(len(s.key) for s in self.settings)
        value_width = min(48, max(len(s.shown) for s in self.settings))
        for setting in self.settings:
            lines.append(
                f"  {setting.key.ljust(width)}  {setting.shown.ljust(value_width)}  ({setting.source})"
            )
        if self.problems:
            lines.append(f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''}:")
            lines += [f"  - {problem}" for problem in self.problems]
        else:
            lines.append("configuration OK")
        return "\n".join(lines)


# --- the merge ----------------------------------------------------------------------------


def resolve(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    file: Mapping[str, Any],
    *,
    data_dir: Path,
    file_path: Path | None = None,
    read_secret: Callable[[Path], str] = read_secret,
    data_dir_source: str = DEFAULT,
) -> Resolution:
    """Merge the sources, key by key: flag > environment > file > default.

    `flags` holds only the flags given on the command line (name of the key ->
    value; argparse's text, or True/False for --mdns/--no-mdns, a list for
    --mdns-interface); `env` is the environment (only LINKHUB_* is read; an empty
    variable counts as unset); `file` is the parsed TOML file, `file_path` where
    it was read (for messages, and relative paths in it). Pure but for
    `read_secret`, which reads the account service's token file.
    """
    where = str(file_path) if file_path is not None else "the configuration file"
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    invalid: dict[str, object] = {}  # key -> the value as given

    for name in file:
        if name in KEYS_BY_NAME:
            continue
        if name in _NOT_IN_FILE:
            problems.append(f"{where}, key {name}: cannot be set in the file; {_NOT_IN_FILE[name]}")
            continue
        close = difflib.get_close_matches(name, KEYS_BY_NAME, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(
            f"{where}, key {name}: unknown key{hint}; the keys are listed in docs/configuration.md"
        )

    for key in KEYS:
        raw: object
        if key.name in flags and flags[key.name] is not None:
            raw = flags[key.name]
            flag = (
                f"--no-{key.flag.removeprefix('--')}"
                if isinstance(key.default, bool) and raw is False
                else key.flag
            )
            source = origin = f"flag {flag}"
        elif env.get(key.env, "").strip():
            raw, source, origin = env[key.env], f"env {key.env}", f"environment variable {key.env}"
        elif key.name in file:
            raw, source, origin = file[key.name], f"file {where}", f"{where}, key {key.name}"
        else:
            values[key.name], sources[key.name] = key.default, DEFAULT
            continue
        try:
            if source.startswith("file"):
                key.check_toml_type(raw)
            value = key.parse(raw)
        except Invalid as exc:
            problems.append(f"{origin}: {exc}")
            values[key.name], sources[key.name], invalid[key.name] = key.default, source, raw
            continue
        if key.name in _FILE_PATHS and source.startswith("file") and file_path is not None:
            value = file_path.parent / value  # relative to the file, as a person reading it expects
        values[key.name], sources[key.name] = value, source

    if values["database_url"] is None:
        values["database_url"] = f"sqlite:///{data_dir / 'linkhub.db'}"
    token = None
    if values["account_service"] is not None:
        token_file = values["account_service_token_file"]
        if token_file is None:
            problems.append(
                f"account_service ({sources['account_service']}) needs account_service_token_file too: "
                "the file holding the service's token (--account-service-token-file FILE)"
            )
        else:
            try:
                token = read_secret(token_file)
            except OSError as exc:
                problems.append(
                    f"account_service_token_file ({sources['account_service_token_file']}): "
                    f"cannot read {token_file}: {exc.strerror or exc}"
                )

    probe_token = None
    if values["probe_token_file"] is not None:
        try:
            probe_token = read_secret(values["probe_token_file"]) or None
        except OSError as exc:
            problems.append(
                f"probe_token_file ({sources['probe_token_file']}): "
                f"cannot read {values['probe_token_file']}: {exc.strerror or exc}"
            )

    settings = (
        Setting("data_dir", data_dir, data_dir_source),
        *(
            Setting(key.name, invalid[key.name], sources[key.name], valid=False)
            if key.name in invalid
            else Setting(key.name, values[key.name], sources[key.name])
            for key in KEYS
        ),
    )
    config = None
    if not problems:
        try:
            config = HubConfig(
                data_dir=data_dir,
                database_url=values["database_url"],
                http_host=values["http_host"],
                http_port=values["http_port"],
                mqtt_host=values["mqtt_host"],
                mqtt_port=values["mqtt_port"],
                mqtt_tls_port=values["mqtt_tls_port"],
                external_broker=values["broker"],
                public_host=values["public_host"],
                device_broker=values["device_broker"],
                code_lifetime_s=values["code_lifetime_s"],
                poll_interval_s=values["poll_interval_s"],
                unconfirmed_device_lifetime_s=values["unconfirmed_device_lifetime_s"],
                mdns=values["mdns"],
                waiting_list=values["waiting_list"],
                home_assistant=values["home_assistant"],
                home_assistant_broker=values["home_assistant_broker"],
                mdns_name=values["mdns_name"],
                mdns_interfaces=tuple(values["mdns_interfaces"]),
                account_service_url=values["account_service"],
                account_service_token=token,
                log_format=values["log_format"],
                web_session_lifetime_s=values["web_session_lifetime_s"],
                web_hosts=tuple(values["web_hosts"]),
                https_port=values["https_port"],
                oauth_port=values["oauth_port"],
                oauth_issuer=values["oauth_issuer"],
                oauth_unregistered_apps=values["oauth_unregistered_apps"],
                probe_token=probe_token,
                limits=LimitsPolicy(
                    link_requests_per_client=values["link_requests_per_client"],
                    link_requests_total=values["link_requests_total"],
                    max_pending_requests=values["max_pending_requests"],
                    device_settings_sets=values["device_settings_sets"],
                    device_reports=values["device_reports"],
                    device_settings_gets=values["device_settings_gets"],
                    device_status=values["device_status"],
                    device_descriptions=values["device_descriptions"],
                    device_states=values["device_states"],
                ),
                min_free_space_mb=values["min_free_space_mb"],
                retention=RetentionPolicy(
                    history_days=values["history_days"],
                    history_per_account=values["history_per_account"],
                    delivered_outbox_days=values["delivered_outbox_days"],
                    ended_link_requests_days=values["ended_link_requests_days"],
                ),
                broker_restart_limit=values["broker_restart_limit"],
                broker_restart_window_s=values["broker_restart_window_s"],
            )
        except ConfigError as exc:  # a rule only HubConfig knows; every key was checked above
            problems.append(str(exc))
    return Resolution(settings, tuple(problems), config, file_path)


# --- finding and reading the file (I/O) -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileChoice:
    path: Path | None
    note: str  # for the report: how it was found, or why there is none
    required: bool  # named explicitly: a missing file is an error, not "no file"


def choose_file(flag: Path | None, env: Mapping[str, str], data_dir: Path) -> FileChoice:
    """--config FILE, else LINKHUB_CONFIG, else DATA_DIR/linkhub.toml (if it exists).

    Paths are made absolute so that every message names the file unambiguously.
    """
    if flag is not None:
        path = flag.expanduser().absolute()
        return FileChoice(path, f"{path} (from --config)", True)
    if env.get(CONFIG_ENV, "").strip():
        path = Path(env[CONFIG_ENV].strip()).expanduser().absolute()
        return FileChoice(path, f"{path} (from {CONFIG_ENV})", True)
    path = data_dir / FILE_NAME
    return FileChoice(path, f"{path} (in the data directory)", False)


def data_dir_from(flag: Path | None, env: Mapping[str, str], home: Path) -> tuple[Path, str]:
    """The data directory and its source (hub.config.model.find_data_dir, the one way)."""
    return find_data_dir(flag, env, home)


def read_file(path: Path) -> dict[str, Any]:
    """The parsed TOML file; ConfigError naming the file (and line) if it cannot be read."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it: {exc.strerror or exc}") from None


def load(
    flags: Mapping[str, Any],
    env: Mapping[str, str],
    *,
    config_flag: Path | None = None,
    data_dir_flag: Path | None = None,
    home: Path | None = None,
) -> Resolution:
    """Find and read the file, then `resolve`; problems reading the file are problems too."""
    data_dir, data_dir_source = data_dir_from(data_dir_flag, env, home or Path.home())
    choice = choose_file(config_flag, env, data_dir)
    file: dict[str, Any] = {}
    file_path = None
    note = choice.note
    file_problem = None
    if choice.path is not None and (choice.required or choice.path.exists()):
        try:
            file, file_path = read_file(choice.path), choice.path
        except ConfigError as exc:
            file_problem = str(exc)
    elif choice.path is not None:
        note = f"none ({choice.path} does not exist; defaults, environment and flags only)"
    resolution = resolve(
        flags, env, file, data_dir=data_dir, file_path=file_path, data_dir_source=data_dir_source
    )
    problems = (file_problem,) if file_problem else ()
    return Resolution(
        resolution.settings,
        problems + resolution.problems,
        None if file_problem else resolution.config,
        file_path,
        note,
    )


# --- the command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`linkhub run`'s options (and `linkhub config check`'s), one per key plus --config.

    Defaults are None: a flag not given must not hide the environment or the
    file, so only `flags_from` decides what a flag set.
    """
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"configuration file (env {CONFIG_ENV}; default DATA_DIR/{FILE_NAME} if it exists)",
    )
    for key in KEYS:
        if key.name == "database_url":
            continue  # every command has it (linkhub.cli's common options)
        help_text = f"{key.help} (env {key.env}; file key {key.name})"
        if isinstance(key.default, bool):  # --mdns / --no-mdns and the like
            parser.add_argument(
                key.flag, dest=key.name, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        elif isinstance(key.default, tuple):  # a list: the flag is repeated
            parser.add_argument(
                key.flag, dest=key.name, action="append", default=None, metavar=key.metavar, help=help_text
            )
        else:
            parser.add_argument(key.flag, dest=key.name, default=None, metavar=key.metavar, help=help_text)


def flags_from(args: argparse.Namespace) -> dict[str, Any]:
    """The keys given as flags on this command line, and nothing else."""
    return {key.name: getattr(args, key.name) for key in KEYS if getattr(args, key.name, None) is not None}
