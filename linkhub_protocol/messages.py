"""The messages, one frozen dataclass each, validated when built: a value that
exists may go on the wire (h11's events, checked at construction). Inbound
bytes become these only through linkhub_protocol/codec.py."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from typing import Any

from linkhub_protocol.components import Component, check_components, check_key
from linkhub_protocol.constants import (
    MAX_CA_CERT_CHARS,
    MAX_COMPONENTS,
    MAX_DESCRIPTION_CHARS,
    MAX_ECHOED_ID_CHARS,
    MAX_SEALED_CHARS,
    MAX_URI_CHARS,
    MAX_USER_CODE_CHARS,
    MAX_VERSION,
    PEM_CERTIFICATE_BEGIN,
    PUBLIC_KEY_BYTES,
)
from linkhub_protocol.errors import ErrorCode, ProtocolError
from linkhub_protocol.text import checked_text
from linkhub_protocol.topics import LINK_REPLY_ROOT, device_root, is_valid_reply_topic

_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
_PUBLIC_KEY = re.compile(r"[A-Za-z0-9+/]{43}=")
_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


# --- field checks shared by the messages below -----------------------------------


def _invalid(description: str) -> ProtocolError:
    return ProtocolError(ErrorCode.INVALID_REQUEST, description)


def _check_int(value: object, name: str, low: int, high: int) -> None:
    # bool is an int in Python: `true` must not pass for 1.
    if type(value) is not int or not low <= value <= high:
        raise _invalid(f"{name} must be an integer from {low} to {high}")


def _check_request_id(value: object, name: str = "request_id") -> None:
    if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
        raise _invalid(f"{name} must be 16-64 base64url chars")


def _check_optional_id(value: object, name: str) -> None:
    if value is not None and (not isinstance(value, str) or not 0 < len(value) <= MAX_ECHOED_ID_CHARS):
        raise _invalid(f"{name} must be null or a string of 1 to {MAX_ECHOED_ID_CHARS} characters")


def _check_uri(value: object, name: str) -> None:
    if (
        not isinstance(value, str)
        or len(value) > MAX_URI_CHARS
        or not value.startswith(("http://", "https://"))
        or any(char.isspace() for char in value)
    ):
        raise _invalid(f"{name} must be an http:// or https:// URL of at most {MAX_URI_CHARS} characters")


def _check_object(value: object, name: str) -> None:
    if not isinstance(value, dict):
        raise _invalid(f"{name} must be a JSON object")


def _check_error(error: object, description: object) -> None:
    if not isinstance(error, ErrorCode):
        raise _invalid("error must be one of the protocol's error codes")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
        raise _invalid(f"error_description must be a string of at most {MAX_DESCRIPTION_CHARS} characters")


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


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What the device says about itself; shown to the person who approves (RFC 8628 §5.4)."""

    name: str
    model: str
    address: str | None = None
    firmware: str | None = None

    def __post_init__(self) -> None:
        checked_text(self.name, "device.name", 64)
        checked_text(self.model, "device.model", 64)
        checked_text(self.address, "device.address", 64, required=False)
        checked_text(self.firmware, "device.firmware", 32, required=False)

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

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
        if not isinstance(self.user_code, str) or not 0 < len(self.user_code) <= MAX_USER_CODE_CHARS:
            raise _invalid(f"user_code must be 1 to {MAX_USER_CODE_CHARS} characters")
        _check_uri(self.verification_uri, "verification_uri")
        _check_uri(self.verification_uri_complete, "verification_uri_complete")
        _check_int(self.expires_in, "expires_in", 0, 2**31 - 1)
        _check_int(self.interval, "interval", 1, 3600)


@dataclass(frozen=True, slots=True)
class LinkCredentials:
    """What the hub seals to the device's public key in an approved reply: its
    own broker identity (confined to DEVICES_ROOT/<device_id>/#), named with the
    request and device it belongs to so the device can check the envelope."""

    request_id: str
    device_id: str
    mqtt: MqttCredentials

    def __post_init__(self) -> None:
        _check_request_id(self.request_id)
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
        _check_request_id(self.request_id)
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

    def __post_init__(self) -> None:
        _check_optional_id(self.request_id, "request_id")
        _check_error(self.error, self.error_description)
        if self.retry_after is not None:
            _check_int(self.retry_after, "retry_after", 0, 2**31 - 1)


LinkReply = PendingReply | ApprovedReply | ErrorReply


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """Device -> hub on <device root>/status, retained; also the device's last will."""

    online: bool

    def __post_init__(self) -> None:
        if not isinstance(self.online, bool):
            raise _invalid("online must be true or false")


@dataclass(frozen=True, slots=True)
class SettingsGet:
    """Device -> hub after every (re)connect, once subscribed to its desired topic."""

    request_id: str | None = None

    def __post_init__(self) -> None:
        _check_optional_id(self.request_id, "request_id")


@dataclass(frozen=True, slots=True)
class SettingsDesired:
    """Hub -> device. `full`: `desired` is the whole document; otherwise it is a
    JSON merge patch (RFC 7386) that turns version-1 into `version`."""

    version: int
    desired: dict[str, Any]
    full: bool

    def __post_init__(self) -> None:
        _check_int(self.version, "version", 0, MAX_VERSION)
        _check_object(self.desired, "desired")
        if not isinstance(self.full, bool):
            raise _invalid("full must be true or false")


@dataclass(frozen=True, slots=True)
class SettingsReported:
    """Device -> hub: the whole document it runs with, after applying `applied_version`."""

    applied_version: int
    reported: dict[str, Any]

    def __post_init__(self) -> None:
        _check_int(self.applied_version, "applied_version", 0, MAX_VERSION)
        _check_object(self.reported, "reported")


@dataclass(frozen=True, slots=True)
class SettingsSet:
    """Device -> hub: a change made on the device (a button), as a merge patch."""

    request_id: str
    base_version: int
    changes: dict[str, Any]

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not 0 < len(self.request_id) <= MAX_ECHOED_ID_CHARS:
            raise _invalid(f"request_id must be a string of 1 to {MAX_ECHOED_ID_CHARS} characters")
        _check_int(self.base_version, "base_version", 0, MAX_VERSION)
        _check_object(self.changes, "changes")
        if not self.changes:
            raise _invalid("changes must not be empty")


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

    def __post_init__(self) -> None:
        _check_optional_id(self.request_id, "request_id")
        if not isinstance(self.ok, bool):
            raise _invalid("ok must be true or false")
        if self.version is not None:
            _check_int(self.version, "version", 0, MAX_VERSION)
        if self.ok:
            if self.error is not None or self.error_description is not None:
                raise _invalid("a reply that is ok carries no error")
        else:
            _check_error(self.error, self.error_description or "")
        if self.retry_after is not None:
            _check_int(self.retry_after, "retry_after", 0, 2**31 - 1)


SettingsMessage = SettingsGet | SettingsReported | SettingsSet


@dataclass(frozen=True, slots=True)
class DeviceDescription:
    """Device -> hub on <root>/description after every connect: what it has.
    Answered on <root>/reply (`ok`, or why it was refused and nothing changed).
    A new one replaces the old: components that are not in it are gone."""

    components: tuple[Component, ...]
    manufacturer: str
    model: str
    firmware: str | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        check_components(self.components)
        checked_text(self.manufacturer, "manufacturer", 64)
        checked_text(self.model, "model", 64)
        checked_text(self.firmware, "firmware", 32, required=False)
        _check_optional_id(self.request_id, "request_id")

    def component(self, key: str) -> Component | None:
        return next((c for c in self.components if c.key == key), None)

    def check_state(self, state: dict[str, Any]) -> None:
        """ProtocolError unless `state` holds a value for every component that has
        one, each of its shape, and nothing else: the retained copy is then
        always the device's whole state."""
        wanted = {c.key for c in self.components if c.has_state}
        unknown = sorted(set(state) - wanted)
        if unknown:
            raise _invalid(f"state names {unknown[0]!r}, which is not a component with a state")
        missing = sorted(wanted - set(state))
        if missing:
            raise _invalid(f"state must hold every component's value; {missing[0]!r} is missing")
        for component in self.components:
            if component.has_state:
                component.check_state(state[component.key])


@dataclass(frozen=True, slots=True)
class StateReport:
    """Device -> hub (and Home Assistant) on <root>/state, retained: the value of
    every component it has, after a change and at every connect. `command_id`
    names the command this state answers, if it answers one."""

    state: dict[str, Any]
    command_id: str | None = None

    def __post_init__(self) -> None:
        _check_object(self.state, "state")
        if len(self.state) > MAX_COMPONENTS:
            raise _invalid(f"state holds at most {MAX_COMPONENTS} values")
        for key in self.state:
            check_key(key, "each key of state")
        _check_optional_id(self.command_id, "command_id")


@dataclass(frozen=True, slots=True)
class Command:
    """Hub -> device on <root>/command, never retained: set `component` to
    `value` (a button: press it, value null). The hub checked the value against
    the device's description; the device answers with a StateReport naming
    `command_id`."""

    command_id: str
    component: str
    value: Any

    def __post_init__(self) -> None:
        _check_request_id(self.command_id, "command_id")
        check_key(self.component, "component")


@dataclass(frozen=True, slots=True)
class Rejection:
    """An inbound payload we refuse, with what we know of where to answer."""

    error: ErrorCode
    description: str
    request_id: str | None = None
    reply_to: str | None = None
