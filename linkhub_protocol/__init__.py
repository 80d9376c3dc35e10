"""LinkHub wire protocol, version 1: topics, messages and the one codec for them.

This is the only module firmware (and firmware_sim) needs: it imports nothing
else from LinkHub. docs/protocol.md describes the same contract in prose.

Messages are frozen, slotted and validated when built, so a value that exists is
a value that may go on the wire. Inbound payloads go through `parse_*`, which
return either a message or a `Rejection` and never raise on bad input: the hub
must answer garbage with an error, not crash (h11's split between our bugs and
the peer's garbage).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

PROTOCOL_VERSION = 1

# --- topics ---------------------------------------------------------------
TOPIC_ROOT = "linkhub/v1"
# Devices publish link requests to LINK_REQUEST_ROOT/<their MQTT client id>:
# MQTT does not tell a subscriber who published, so the topic does, and the
# broker lets each bootstrap client publish only under its own client id where
# it can (dynamic-security `%c`, mosquitto 2.1+; see hub/broker/dynsec.py).
LINK_REQUEST_ROOT = f"{TOPIC_ROOT}/link/request"
LINK_REPLY_ROOT = f"{TOPIC_ROOT}/link/reply"
DEVICES_ROOT = f"{TOPIC_ROOT}/devices"
# Hubs take link requests and devices' settings messages through shared
# subscriptions so several hub processes can serve one broker, each message
# handled by one of them (MQTT 5 §4.8.2; mosquitto supports it for 3.1.1
# clients too).
LINK_REQUEST_SHARE_GROUP = "linkhub-hubs"

# DNS-SD service type under which a hub advertises its broker over mDNS
# (RFC 6763); the TXT keys are described in docs/protocol.md, "Finding the hub".
MDNS_SERVICE_TYPE = "_linkhub._tcp.local."

# The identity every device uses before it is linked. It is public on purpose:
# the broker confines it to sending link requests and reading one reply topic
# whose name only the device knows (see docs/protocol.md, "Isolation").
BOOTSTRAP_USERNAME = "linkhub-bootstrap"
BOOTSTRAP_PASSWORD = "linkhub-bootstrap"

MAX_LINK_REQUEST_BYTES = 2048
MAX_CORRELATION_BYTES = 128
MAX_STATUS_BYTES = 1024
MAX_SETTINGS_MESSAGE_BYTES = 16384
# The hub's CA certificate travels in the approved reply (mqtt.ca_cert); one
# EC P-256 certificate is about 700 characters of PEM.
MAX_CA_CERT_CHARS = 8192
PEM_CERTIFICATE_BEGIN = "-----BEGIN CERTIFICATE-----"

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
# 22 base64url characters carry 132 bits: the reply topic must be unguessable.
_REPLY_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")
_DEVICE_ID = re.compile(r"[a-z0-9][a-z0-9-]{2,39}")
# The bootstrap client id, one topic level of the request topic.
_CLIENT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# An X25519 public key: 32 bytes as standard, padded base64 (44 characters).
PUBLIC_KEY_BYTES = 32
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
# The sealed credentials: crypto_box_seal output (48 bytes more than the JSON
# inside), standard padded base64. Bounded so a reply stays small.
MAX_SEALED_CHARS = 16384
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_PRINTABLE = re.compile(r"[^\x00-\x1f\x7f]+")
# Unicode's control (Cc: C0, DEL, C1, so ESC sequences and newlines) and format
# (Cf: bidi overrides and isolates, zero-width characters) categories. In a
# name or key they rewrite a terminal (`linkhub activity`), forge log lines, or
# show a person a different name than the one stored (Unicode TR #36 §2.4).
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf"})


def hidden_character(text: str) -> str | None:
    """The first control or format character in `text`, as U+XXXX; None if there is none."""
    for char in text:
        if unicodedata.category(char) in _HIDDEN_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def escape_hidden(text: str) -> str:
    """`text` with each control or format character written as an escape (\\x1b,
    \\u202e): for terminals and log lines, which must show what was sent
    without acting on it."""
    if hidden_character(text) is None:
        return text
    return "".join(
        repr(char)[1:-1] if unicodedata.category(char) in _HIDDEN_CATEGORIES else char for char in text
    )


def link_request_subscription() -> str:
    """The filter a hub subscribes with: `$share/<group>/<request root>/+`."""
    return shared_subscription(f"{LINK_REQUEST_ROOT}/+")


def is_valid_client_id(client_id: str) -> bool:
    """A bootstrap client id the hub takes link requests from (one topic level)."""
    return isinstance(client_id, str) and bool(_CLIENT_ID.fullmatch(client_id))


def link_request_topic(client_id: str) -> str:
    """Where the device connected with `client_id` publishes its link request."""
    if not is_valid_client_id(client_id):
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, "the bootstrap client id must be 1-64 chars of A-Z a-z 0-9 - _"
        )
    return f"{LINK_REQUEST_ROOT}/{client_id}"


def link_request_client_id(topic: str) -> str | None:
    """The client id level of a request topic (not yet checked), or None if
    `topic` is not `LINK_REQUEST_ROOT/<one level>`."""
    prefix = LINK_REQUEST_ROOT + "/"
    if not topic.startswith(prefix):
        return None
    level = topic[len(prefix) :]
    return level if level and "/" not in level else None


def decode_public_key(text: object) -> bytes:
    """The 32 raw bytes of a device's X25519 public key; ProtocolError if it is not one.

    Only the canonical encoding is accepted (standard alphabet, padded, unused
    bits zero), so one key has one spelling. The all-zero key is refused here;
    libsodium refuses the other small-order points when the hub first seals
    to the key (hub/core/sealing.py).
    """
    description = (
        f"public_key must be the device's X25519 public key, {PUBLIC_KEY_BYTES} bytes as "
        "standard padded base64 (44 characters): credentials are only sent sealed to it"
    )
    if not isinstance(text, str) or not _PUBLIC_KEY.fullmatch(text):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, description)
    raw = base64.b64decode(text, validate=True)
    if base64.b64encode(raw).decode() != text or raw == bytes(PUBLIC_KEY_BYTES):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, description)
    return raw


def decode_sealed(text: str) -> bytes:
    """The sealed box in an approved reply, as bytes for crypto_box_seal_open."""
    if not isinstance(text, str) or len(text) > MAX_SEALED_CHARS or not _BASE64.fullmatch(text):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "sealed_credentials must be standard base64")
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"sealed_credentials: {exc}") from None


def reply_topic(reply_token: str) -> str:
    if not _REPLY_TOKEN.fullmatch(reply_token):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, "reply token must be 22-64 base64url chars")
    return f"{LINK_REPLY_ROOT}/{reply_token}"


def is_valid_reply_topic(topic: str) -> bool:
    prefix = LINK_REPLY_ROOT + "/"
    return topic.startswith(prefix) and bool(_REPLY_TOKEN.fullmatch(topic[len(prefix) :]))


def device_root(device_id: str) -> str:
    """Everything a linked device may publish or subscribe to lies below this."""
    if not _DEVICE_ID.fullmatch(device_id):
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"bad device id {device_id!r}")
    return f"{DEVICES_ROOT}/{device_id}"


def device_status_topic(device_id: str) -> str:
    return f"{device_root(device_id)}/status"


def device_status_subscription() -> str:
    """Every hub subscribes to every device's status itself, not through the
    shared group, for two reasons. Order: shared out, a device's `online` could
    go to one hub and its later `offline` (its will) to another, and the slower
    hub would write the older one last; when every hub handles every status in
    order, the last write is always of the newest. Retained status: MQTT 5 sends
    retained messages to new non-shared subscriptions only (§3.3.1.3, §4.8.2), so
    a hub starting beside another would not learn who is online (mosquitto
    2.0.11 does send them to a shared one, as tried, but that is not the spec).
    Handling a status twice is harmless: each hub writes the same `online` and
    confirms an already confirmed link again, which changes nothing
    (hub/core/linking.py)."""
    return f"{DEVICES_ROOT}/+/status"


def shared_subscription(topic_filter: str) -> str:
    """`topic_filter` as a shared subscription of the hubs' group: with several
    hubs on one broker, each message goes to one of them (MQTT 5 §4.8.2)."""
    return f"$share/{LINK_REQUEST_SHARE_GROUP}/{topic_filter}"


# Settings topics below a device's root (docs/protocol.md, "Settings").
SETTINGS_GET = "settings/get"  # device -> hub: send me the full desired document
SETTINGS_DESIRED = "settings/desired"  # hub -> device: full document or a change
SETTINGS_REPORTED = "settings/reported"  # device -> hub: what I run with, and which version
SETTINGS_SET = "settings/set"  # device -> hub: a change made on the device itself
DEVICE_REPLY = "reply"  # hub -> device: the answer to a get/set/report, or its refusal
DEVICE_INBOUND = (SETTINGS_GET, SETTINGS_REPORTED, SETTINGS_SET)


def device_topic(device_id: str, leaf: str) -> str:
    return f"{device_root(device_id)}/{leaf}"


def device_inbound_subscriptions() -> list[str]:
    """What the hub subscribes to for every device (never its own outbound topics).

    Shared: a settings message must be handled once, by one hub, or two hubs on
    one database would each apply the same change (issue 18, section 5).
    """
    return [shared_subscription(f"{DEVICES_ROOT}/+/{leaf}") for leaf in DEVICE_INBOUND]


def parse_device_topic(topic: str) -> tuple[str, str] | None:
    """Split `linkhub/v1/devices/<id>/<rest>` into (id, rest); None if not one."""
    parts = topic.split("/", 4)
    if len(parts) != 5 or "/".join(parts[:3]) != DEVICES_ROOT:
        return None
    device_id, rest = parts[3], parts[4]
    if not _DEVICE_ID.fullmatch(device_id):
        return None
    return device_id, rest


# --- errors ---------------------------------------------------------------
class ErrorCode(StrEnum):
    """Stable error codes a device receives; names follow RFC 8628 §3.5 where one fits."""

    ACCESS_DENIED = "access_denied"
    EXPIRED_TOKEN = "expired_token"
    ALREADY_LINKED = "already_linked"
    INVALID_REQUEST = "invalid_request"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_VERSION = "unsupported_version"
    SLOW_DOWN = "slow_down"
    # Too many codes are waiting for a person already (LimitsPolicy.max_pending_requests).
    TOO_MANY_PENDING = "too_many_pending"
    SERVER_ERROR = "server_error"
    NOT_OWNED = "not_owned"
    VERSION_CONFLICT = "version_conflict"
    # The hub's data directory is almost full: it takes no new writes (docs/protocol.md §11).
    INSUFFICIENT_STORAGE = "insufficient_storage"


ERROR_DESCRIPTIONS: dict[ErrorCode, str] = {
    ErrorCode.ACCESS_DENIED: "The link was denied on the hub.",
    ErrorCode.EXPIRED_TOKEN: "The code expired before anyone approved it; ask for a new code.",
    ErrorCode.ALREADY_LINKED: "This request was already used to link a device.",
    ErrorCode.INVALID_REQUEST: "The link request is malformed.",
    ErrorCode.PAYLOAD_TOO_LARGE: f"The link request is larger than {MAX_LINK_REQUEST_BYTES} bytes.",
    ErrorCode.UNSUPPORTED_VERSION: f"This hub speaks protocol version {PROTOCOL_VERSION}.",
    ErrorCode.SLOW_DOWN: "Too many requests; wait longer between them.",
    ErrorCode.TOO_MANY_PENDING: "Too many codes are waiting for approval on the hub; try again later.",
    ErrorCode.SERVER_ERROR: "The hub could not handle the request; try again later.",
    ErrorCode.NOT_OWNED: "The change touches settings this device does not own.",
    ErrorCode.VERSION_CONFLICT: "A newer change to the same setting was made first; the newer value stands.",
    ErrorCode.INSUFFICIENT_STORAGE: "The hub is almost out of disk space and takes no changes now; "
    "try again later.",
}
# PAYLOAD_TOO_LARGE's text for each kind of message: each has its own limit.
SETTINGS_TOO_LARGE = f"The settings message is larger than {MAX_SETTINGS_MESSAGE_BYTES} bytes."
STATUS_TOO_LARGE = f"The status message is larger than {MAX_STATUS_BYTES} bytes."


class ProtocolError(ValueError):
    """A value that may not go on the wire, with the code a peer would receive."""

    def __init__(self, code: ErrorCode, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description


# --- messages ---------------------------------------------------------------
def _text(value: object, name: str, max_len: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ProtocolError(ErrorCode.INVALID_REQUEST, f"{name} must be a non-empty string")
    hidden = hidden_character(value)
    if hidden is not None:  # C0 controls and DEL included: they are Cc
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST,
            f"{name} must not hold control or format characters (it holds {hidden}: a terminal "
            "escape, a line break, a bidi override or a zero-width character)",
        )
    if len(value) > max_len or not _PRINTABLE.fullmatch(value):
        raise ProtocolError(
            ErrorCode.INVALID_REQUEST, f"{name} must be at most {max_len} printable characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the device says about itself; shown to the person who approves (RFC 8628 §5.4)."""

    name: str
    model: str
    address: str | None = None
    firmware: str | None = None

    def __post_init__(self) -> None:
        _text(self.name, "device.name", 64)
        _text(self.model, "device.model", 64)
        _text(self.address, "device.address", 64, required=False)
        _text(self.firmware, "device.firmware", 32, required=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "model": self.model}
        if self.address is not None:
            out["address"] = self.address
        if self.firmware is not None:
            out["firmware"] = self.firmware
        return out


@dataclass(frozen=True, slots=True)
class LinkRequest:
    """Device -> hub on link_request_topic(<its client id>). Resent unchanged until
    a final reply. `public_key` is the device's X25519 key: the credentials come
    back sealed to it, so no other MQTT client and no one listening on the LAN
    can read them."""

    request_id: str
    reply_to: str
    device: DeviceInfo
    public_key: str

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not _REQUEST_ID.fullmatch(self.request_id):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "request_id must be 16-64 base64url chars")
        if not isinstance(self.reply_to, str) or not is_valid_reply_topic(self.reply_to):
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"reply_to must be {LINK_REPLY_ROOT}/<22-64 base64url chars>",
            )
        decode_public_key(self.public_key)


@dataclass(frozen=True, slots=True)
class MqttCredentials:
    host: str
    port: int
    client_id: str
    username: str
    password: str = field(repr=False)
    # The broker's TLS listener and the CA that signed its certificate (PEM),
    # both or neither: a device that has them connects to host:tls_port with TLS
    # and checks the certificate against ca_cert, host name included.
    tls_port: int | None = None
    ca_cert: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if (self.tls_port is None) != (self.ca_cert is None):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "mqtt.tls_port and mqtt.ca_cert come together")
        if self.tls_port is not None and (type(self.tls_port) is not int or not 0 < self.tls_port < 65536):
            raise ProtocolError(ErrorCode.INVALID_REQUEST, "mqtt.tls_port must be a port, 1-65535")
        if self.ca_cert is not None and (
            not isinstance(self.ca_cert, str)
            or len(self.ca_cert) > MAX_CA_CERT_CHARS
            or PEM_CERTIFICATE_BEGIN not in self.ca_cert
        ):
            raise ProtocolError(
                ErrorCode.INVALID_REQUEST,
                f"mqtt.ca_cert must be a PEM certificate of at most {MAX_CA_CERT_CHARS} characters",
            )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "client_id": self.client_id,
            "username": self.username,
            "password": self.password,
        }
        if self.tls_port is not None:
            out |= {"tls_port": self.tls_port, "ca_cert": self.ca_cert}
        return out

    @classmethod
    def from_json(cls, obj: Any) -> MqttCredentials:
        """The `mqtt` block of an approved reply (or of a device's saved state).

        Raises KeyError, TypeError or ValueError (ProtocolError) when it is not one.
        """
        if not isinstance(obj, dict):
            raise TypeError("mqtt must be an object")
        return cls(
            host=str(obj["host"]),
            port=int(obj["port"]),
            client_id=str(obj["client_id"]),
            username=str(obj["username"]),
            password=str(obj["password"]),
            tls_port=obj.get("tls_port"),
            ca_cert=obj.get("ca_cert"),
        )


@dataclass(frozen=True, slots=True)
class PendingReply:
    """The code to show; RFC 8628 §3.2's device authorization response over MQTT."""

    request_id: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: int
    interval: int

    status = "authorization_pending"


@dataclass(frozen=True, slots=True)
class LinkCredentials:
    """What the hub seals to the device's public key in an approved reply: its
    own broker identity (confined to DEVICES_ROOT/<device_id>/#), named with the
    request and device it belongs to so the device can check the envelope."""

    request_id: str
    device_id: str
    mqtt: MqttCredentials

    def __post_init__(self) -> None:
        device_root(self.device_id)


@dataclass(frozen=True, slots=True)
class ApprovedReply:
    """The link is approved; `sealed_credentials` holds an encoded LinkCredentials,
    sealed with crypto_box_seal to the request's public key (base64). Nothing
    secret is in the clear."""

    request_id: str
    device_id: str
    sealed_credentials: str

    status = "approved"

    def __post_init__(self) -> None:
        device_root(self.device_id)
        decode_sealed(self.sealed_credentials)


@dataclass(frozen=True, slots=True)
class ErrorReply:
    request_id: str | None
    error: ErrorCode
    error_description: str
    # Seconds the device should wait before it resends (slow_down, too_many_pending).
    retry_after: int | None = None

    status = "error"


LinkReply = PendingReply | ApprovedReply | ErrorReply


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Device -> hub on <device root>/status, retained; also the device's last will."""

    online: bool


@dataclass(frozen=True, slots=True)
class SettingsGet:
    """Device -> hub after every (re)connect, once subscribed to its desired topic."""

    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class SettingsDesired:
    """Hub -> device. `full`: `desired` is the whole document; otherwise it is a
    JSON merge patch (RFC 7386) that turns version-1 into `version`."""

    version: int
    desired: dict[str, Any]
    full: bool


@dataclass(frozen=True, slots=True)
class SettingsReported:
    """Device -> hub: the whole document it runs with, after applying `applied_version`."""

    applied_version: int
    reported: dict[str, Any]


@dataclass(frozen=True, slots=True)
class SettingsSet:
    """Device -> hub: a change made on the device (a button), as a merge patch."""

    request_id: str
    base_version: int
    changes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeviceReply:
    """Hub -> device on <root>/reply: `ok` with the current version, or an error."""

    request_id: str | None
    ok: bool
    version: int | None = None
    error: ErrorCode | None = None
    error_description: str | None = None
    # Seconds the device waits before it sends that kind of message again (slow_down).
    retry_after: int | None = None


SettingsMessage = SettingsGet | SettingsReported | SettingsSet


@dataclass(frozen=True, slots=True)
class Rejection:
    """An inbound payload we refuse, with what we know of where to answer."""

    error: ErrorCode
    description: str
    request_id: str | None = None
    reply_to: str | None = None


# --- codec ----------------------------------------------------------------
def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode(
    message: LinkRequest
    | LinkReply
    | LinkCredentials
    | DeviceStatus
    | SettingsMessage
    | SettingsDesired
    | DeviceReply,
) -> bytes:
    """The one place messages become bytes."""
    body: dict[str, Any] = {"v": PROTOCOL_VERSION}
    match message:
        case LinkRequest():
            body |= {
                "type": "link_request",
                "request_id": message.request_id,
                "reply_to": message.reply_to,
                "device": message.device.to_json(),
                "public_key": message.public_key,
            }
        case PendingReply():
            body |= {
                "type": "link_reply",
                "status": message.status,
                "request_id": message.request_id,
                "user_code": message.user_code,
                "verification_uri": message.verification_uri,
                "verification_uri_complete": message.verification_uri_complete,
                "expires_in": message.expires_in,
                "interval": message.interval,
            }
        case ApprovedReply():
            body |= {
                "type": "link_reply",
                "status": message.status,
                "request_id": message.request_id,
                "device_id": message.device_id,
                "sealed_credentials": message.sealed_credentials,
            }
        case LinkCredentials():
            body |= {
                "type": "link_credentials",
                "request_id": message.request_id,
                "device_id": message.device_id,
                "mqtt": message.mqtt.to_json(),
            }
        case ErrorReply():
            body |= {
                "type": "link_reply",
                "status": message.status,
                "request_id": message.request_id,
                "error": str(message.error),
                "error_description": message.error_description,
            }
            if message.retry_after is not None:
                body["retry_after"] = message.retry_after
        case DeviceStatus():
            body |= {"type": "status", "online": message.online}
        case SettingsGet():
            body |= {"type": "settings_get", "request_id": message.request_id}
        case SettingsDesired():
            body |= {
                "type": "desired",
                "version": message.version,
                "full": message.full,
                "desired": message.desired,
            }
        case SettingsReported():
            body |= {
                "type": "reported",
                "applied_version": message.applied_version,
                "reported": message.reported,
            }
        case SettingsSet():
            body |= {
                "type": "settings_set",
                "request_id": message.request_id,
                "base_version": message.base_version,
                "changes": message.changes,
            }
        case DeviceReply():
            body |= {
                "type": "reply",
                "request_id": message.request_id,
                "status": "ok" if message.ok else "error",
            }
            if message.version is not None:
                body["version"] = message.version
            if message.error is not None:
                body["error"] = str(message.error)
                body["error_description"] = message.error_description or ""
            if message.retry_after is not None:
                body["retry_after"] = message.retry_after
        case _:
            raise TypeError(f"not a protocol message: {message!r}")
    return _dump(body)


def _load_object(
    payload: bytes, max_bytes: int, too_large: str = ERROR_DESCRIPTIONS[ErrorCode.PAYLOAD_TOO_LARGE]
) -> dict[str, Any] | Rejection:
    # Parse oversized payloads too (the broker caps packet size) so that we can
    # still find where to send the error.
    try:
        obj = json.loads(payload.decode("utf-8"))
    # ValueError, not just JSONDecodeError: an integer longer than Python reads
    # (4300 digits) raises a plain ValueError (tests/test_properties.py).
    except (UnicodeDecodeError, ValueError, RecursionError):
        return Rejection(ErrorCode.INVALID_REQUEST, "payload is not UTF-8 JSON")
    if not isinstance(obj, dict):
        return Rejection(ErrorCode.INVALID_REQUEST, "payload must be a JSON object")
    if len(payload) > max_bytes:
        return Rejection(
            ErrorCode.PAYLOAD_TOO_LARGE,
            too_large,
            request_id=_str_or_none(obj.get("request_id")),
            reply_to=_str_or_none(obj.get("reply_to")),
        )
    return obj


def _is_v1(obj: dict[str, Any]) -> bool:
    version = obj.get("v")
    # bool is an int in Python: `"v": true` must not pass for version 1.
    return type(version) is int and version == PROTOCOL_VERSION


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and len(value) <= 128 else None


def parse_link_request(
    payload: bytes,
    response_topic: str | None = None,
    correlation_data: bytes | None = None,
    *,
    client_id: str | None = None,
) -> LinkRequest | Rejection:
    """Decode a link request. MQTT 5 devices may name the reply topic with the
    Response Topic property instead of `reply_to`; if both are given they must agree.

    `client_id` is the level the request was published under
    (link_request_client_id); it is checked last, once there is somewhere to answer.
    """
    if response_topic is not None and not is_valid_reply_topic(response_topic):
        return Rejection(ErrorCode.INVALID_REQUEST, "response topic is not a valid reply topic")
    if correlation_data is not None and len(correlation_data) > MAX_CORRELATION_BYTES:
        return Rejection(
            ErrorCode.INVALID_REQUEST,
            f"correlation data is longer than {MAX_CORRELATION_BYTES} bytes",
            reply_to=response_topic,
        )
    obj = _load_object(payload, MAX_LINK_REQUEST_BYTES)
    if isinstance(obj, Rejection):
        if obj.reply_to is None and response_topic is not None:
            return Rejection(obj.error, obj.description, obj.request_id, response_topic)
        return obj
    request_id = _str_or_none(obj.get("request_id"))
    reply_to = _str_or_none(obj.get("reply_to")) or response_topic
    if response_topic is not None and reply_to != response_topic:
        # MQTT 5 §4.10: the Response Topic is where a response goes.
        return Rejection(
            ErrorCode.INVALID_REQUEST, "reply_to differs from the response topic", request_id, response_topic
        )

    def reject(code: ErrorCode, description: str) -> Rejection:
        return Rejection(code, description, request_id, reply_to)

    if not _is_v1(obj):
        return reject(ErrorCode.UNSUPPORTED_VERSION, ERROR_DESCRIPTIONS[ErrorCode.UNSUPPORTED_VERSION])
    if obj.get("type") != "link_request":
        return reject(ErrorCode.INVALID_REQUEST, "type must be link_request")
    device = obj.get("device")
    if not isinstance(device, dict):
        return reject(ErrorCode.INVALID_REQUEST, "device must be an object")
    try:
        request = LinkRequest(
            request_id=obj.get("request_id"),  # type: ignore[arg-type]  # validated in __post_init__
            reply_to=reply_to,  # type: ignore[arg-type]
            device=DeviceInfo(
                name=device.get("name"),  # type: ignore[arg-type]
                model=device.get("model"),  # type: ignore[arg-type]
                address=device.get("address"),
                firmware=device.get("firmware"),
            ),
            public_key=obj.get("public_key"),  # type: ignore[arg-type]
        )
    except ProtocolError as exc:
        return reject(exc.code, exc.description)
    if client_id is not None and not is_valid_client_id(client_id):
        return reject(
            ErrorCode.INVALID_REQUEST,
            "publish link requests to linkhub/v1/link/request/<your client id>, with a client id "
            "of 1-64 chars of A-Z a-z 0-9 - _",
        )
    return request


def parse_link_reply(payload: bytes) -> LinkReply | Rejection:
    """Decode what the hub sent to a reply topic (the device side of the codec)."""
    obj = _load_object(payload, 16 * MAX_LINK_REQUEST_BYTES)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "link_reply":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 link_reply")
    try:
        match obj.get("status"):
            case "authorization_pending":
                return PendingReply(
                    request_id=obj["request_id"],
                    user_code=obj["user_code"],
                    verification_uri=obj["verification_uri"],
                    verification_uri_complete=obj["verification_uri_complete"],
                    expires_in=int(obj["expires_in"]),
                    interval=int(obj["interval"]),
                )
            case "approved":
                return ApprovedReply(
                    request_id=obj["request_id"],
                    device_id=obj["device_id"],
                    sealed_credentials=obj["sealed_credentials"],
                )
            case "error":
                try:
                    code = ErrorCode(obj["error"])
                except ValueError:
                    code = ErrorCode.SERVER_ERROR
                retry_after = obj.get("retry_after")
                return ErrorReply(
                    obj.get("request_id"),
                    code,
                    str(obj.get("error_description", "")),
                    retry_after if type(retry_after) is int and 0 <= retry_after < 2**31 else None,
                )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(Infinity): OverflowError
        return Rejection(ErrorCode.INVALID_REQUEST, f"malformed link_reply: {exc}")
    return Rejection(ErrorCode.INVALID_REQUEST, "unknown link_reply status")


def parse_link_credentials(plaintext: bytes) -> LinkCredentials | Rejection:
    """Decode what crypto_box_seal_open gave back from `sealed_credentials` (the device side)."""
    obj = _load_object(plaintext, MAX_SEALED_CHARS)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "link_credentials":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not v1 link_credentials")
    try:
        return LinkCredentials(
            request_id=str(obj["request_id"]),
            device_id=str(obj["device_id"]),
            mqtt=MqttCredentials.from_json(obj["mqtt"]),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(Infinity): OverflowError
        return Rejection(ErrorCode.INVALID_REQUEST, f"malformed link_credentials: {exc}")


def approved_credentials(reply: ApprovedReply, plaintext: bytes) -> MqttCredentials | Rejection:
    """The broker identity in an approved reply, from its opened sealed box.

    The sealed part must name the same request and device as the envelope: a
    box moved from another reply is refused, not used.
    """
    opened = parse_link_credentials(plaintext)
    if isinstance(opened, Rejection):
        return opened
    if (opened.request_id, opened.device_id) != (reply.request_id, reply.device_id):
        return Rejection(
            ErrorCode.INVALID_REQUEST,
            "the sealed credentials name another request or device",
            reply.request_id,
        )
    return opened.mqtt


def parse_device_status(payload: bytes) -> DeviceStatus | Rejection:
    obj = _load_object(payload, MAX_STATUS_BYTES, STATUS_TOO_LARGE)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "status":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 status message")
    online = obj.get("online")
    if not isinstance(online, bool):
        return Rejection(ErrorCode.INVALID_REQUEST, "online must be true or false")
    return DeviceStatus(online=online)


def _version(value: object) -> int | None:
    return value if type(value) is int and 0 <= value < 2**53 else None


def parse_settings_message(leaf: str, payload: bytes) -> SettingsMessage | Rejection:
    """Decode what a device sent on one of DEVICE_INBOUND (the hub side).

    Only the envelope is checked here; the settings rules (size, depth,
    ownership, versions) are hub.core.settings_merge's.
    """
    obj = _load_object(payload, MAX_SETTINGS_MESSAGE_BYTES, SETTINGS_TOO_LARGE)
    if isinstance(obj, Rejection):
        return obj
    request_id = _str_or_none(obj.get("request_id"))
    if not _is_v1(obj):
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 message", request_id)
    expected = {SETTINGS_GET: "settings_get", SETTINGS_REPORTED: "reported", SETTINGS_SET: "settings_set"}
    if obj.get("type") != expected.get(leaf):
        return Rejection(
            ErrorCode.INVALID_REQUEST, f"type must be {expected.get(leaf)!r} on {leaf}", request_id
        )
    if leaf == SETTINGS_GET:
        return SettingsGet(request_id)
    if leaf == SETTINGS_REPORTED:
        applied, reported = _version(obj.get("applied_version")), obj.get("reported")
        if applied is None or not isinstance(reported, dict):
            return Rejection(
                ErrorCode.INVALID_REQUEST,
                "reported needs applied_version (int) and reported (object)",
                request_id,
            )
        return SettingsReported(applied, reported)
    base, changes = _version(obj.get("base_version")), obj.get("changes")
    if request_id is None or base is None or not isinstance(changes, dict) or not changes:
        return Rejection(
            ErrorCode.INVALID_REQUEST,
            "settings_set needs request_id (string), base_version (int) and changes (non-empty object)",
            request_id,
        )
    return SettingsSet(request_id, base, changes)


def parse_settings_desired(payload: bytes) -> SettingsDesired | Rejection:
    """Decode a desired message (the device side)."""
    obj = _load_object(payload, 4 * MAX_SETTINGS_MESSAGE_BYTES)
    if isinstance(obj, Rejection):
        return obj
    version, desired = _version(obj.get("version")), obj.get("desired")
    if not _is_v1(obj) or obj.get("type") != "desired":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 desired message")
    if version is None or not isinstance(desired, dict) or not isinstance(obj.get("full"), bool):
        return Rejection(ErrorCode.INVALID_REQUEST, "desired needs version, full and desired")
    return SettingsDesired(version, desired, obj["full"])


def parse_device_reply(payload: bytes) -> DeviceReply | Rejection:
    """Decode a reply on <root>/reply (the device side)."""
    obj = _load_object(payload, MAX_SETTINGS_MESSAGE_BYTES)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "reply" or obj.get("status") not in ("ok", "error"):
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 reply")
    error = None
    if obj["status"] == "error":
        try:
            error = ErrorCode(str(obj.get("error")))
        except ValueError:
            error = ErrorCode.SERVER_ERROR
    retry_after = obj.get("retry_after")
    return DeviceReply(
        request_id=_str_or_none(obj.get("request_id")),
        ok=obj["status"] == "ok",
        version=_version(obj.get("version")),
        error=error,
        error_description=obj.get("error_description") if error else None,
        retry_after=retry_after if type(retry_after) is int and 0 <= retry_after < 2**31 else None,
    )
