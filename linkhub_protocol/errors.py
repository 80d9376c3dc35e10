"""The error codes a peer receives, their default words, and the one exception
the protocol package raises (a value that may not go on the wire)."""

from __future__ import annotations

from enum import StrEnum

from linkhub_protocol.constants import (
    MAX_DEVICE_DESCRIPTION_BYTES,
    MAX_LINK_REQUEST_BYTES,
    MAX_SETTINGS_MESSAGE_BYTES,
    MAX_STATE_BYTES,
    MAX_STATUS_BYTES,
    PROTOCOL_VERSION,
)


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
    # A state or command names what the device has not described (yet).
    NOT_DESCRIBED = "not_described"


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
    ErrorCode.NOT_DESCRIBED: "Send the device's description before its state.",
}
# PAYLOAD_TOO_LARGE's text for each kind of message: each has its own limit.
SETTINGS_TOO_LARGE = f"The settings message is larger than {MAX_SETTINGS_MESSAGE_BYTES} bytes."
STATUS_TOO_LARGE = f"The status message is larger than {MAX_STATUS_BYTES} bytes."
DESCRIPTION_TOO_LARGE = f"The description is larger than {MAX_DEVICE_DESCRIPTION_BYTES} bytes."
STATE_TOO_LARGE = f"The state message is larger than {MAX_STATE_BYTES} bytes."


class ProtocolError(ValueError):
    """A value that may not go on the wire, with the code a peer would receive."""

    def __init__(self, code: ErrorCode, description: str) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
