"""The one codec: messages become bytes in `encode`, and bytes become messages
(or a `Rejection` saying what is wrong and where the answer goes) in `parse`
and the `parse_*` it dispatches to. Parsers never raise on a peer's input: the
hub must answer garbage with an error, not crash (h11's split between our bugs
and the peer's garbage)."""

from __future__ import annotations

import json
from typing import Any

from linkhub_protocol.components import Component
from linkhub_protocol.constants import (
    MAX_COMMAND_BYTES,
    MAX_CORRELATION_BYTES,
    MAX_DESCRIPTION_CHARS,
    MAX_DEVICE_DESCRIPTION_BYTES,
    MAX_ECHOED_ID_CHARS,
    MAX_LINK_REQUEST_BYTES,
    MAX_SEALED_CHARS,
    MAX_SETTINGS_MESSAGE_BYTES,
    MAX_STATE_BYTES,
    MAX_STATUS_BYTES,
    PROTOCOL_VERSION,
)
from linkhub_protocol.errors import (
    DESCRIPTION_TOO_LARGE,
    ERROR_DESCRIPTIONS,
    SETTINGS_TOO_LARGE,
    STATE_TOO_LARGE,
    STATUS_TOO_LARGE,
    ErrorCode,
    ProtocolError,
)
from linkhub_protocol.messages import (
    ApprovedReply,
    Command,
    DeviceDescription,
    DeviceInfo,
    DeviceReply,
    DeviceStatus,
    ErrorReply,
    LinkCredentials,
    LinkReply,
    LinkRequest,
    MqttCredentials,
    PendingReply,
    Rejection,
    SettingsDesired,
    SettingsGet,
    SettingsMessage,
    SettingsReported,
    SettingsSet,
    StateReport,
)
from linkhub_protocol.topics import (
    COMMAND,
    DESCRIPTION,
    DEVICE_INBOUND,
    DEVICE_REPLY,
    LINK_REPLY_ROOT,
    SETTINGS_DESIRED,
    SETTINGS_GET,
    SETTINGS_REPORTED,
    SETTINGS_SET,
    STATE,
    STATUS,
    device_topic,
    is_valid_client_id,
    is_valid_reply_topic,
    link_request_client_id,
    parse_device_topic,
)


def _dump(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def encode(
    message: LinkRequest
    | LinkReply
    | LinkCredentials
    | DeviceStatus
    | SettingsMessage
    | SettingsDesired
    | DeviceReply
    | DeviceDescription
    | StateReport
    | Command,
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
        case DeviceDescription():
            body |= {
                "type": "description",
                "manufacturer": message.manufacturer,
                "model": message.model,
                "components": [component.to_json() for component in message.components],
            }
            if message.firmware is not None:
                body["firmware"] = message.firmware
            if message.request_id is not None:
                body["request_id"] = message.request_id
        case StateReport():
            body |= {"type": "state", "state": message.state}
            if message.command_id is not None:
                body["command_id"] = message.command_id
        case Command():
            body |= {
                "type": "command",
                "command_id": message.command_id,
                "component": message.component,
                "value": message.value,
            }
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
    """An id to echo back in a refusal: a string of 1 to 128 characters, else none."""
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ECHOED_ID_CHARS else None


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
                    _str_or_none(obj.get("request_id")),
                    code,
                    str(obj.get("error_description", ""))[:MAX_DESCRIPTION_CHARS],
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
    try:
        return _settings_message(leaf, obj, request_id)
    except ProtocolError as exc:  # checked above; the message's own checks have the last word
        return Rejection(exc.code, exc.description, request_id)


def _settings_message(leaf: str, obj: dict[str, Any], request_id: str | None) -> SettingsMessage | Rejection:
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
    try:
        return SettingsDesired(version, desired, obj["full"])
    except ProtocolError as exc:
        return Rejection(exc.code, exc.description)


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
    description = obj.get("error_description")
    try:
        return DeviceReply(
            request_id=_str_or_none(obj.get("request_id")),
            ok=obj["status"] == "ok",
            version=_version(obj.get("version")),
            error=error,
            # Words for a person: shown cut short rather than the reply refused.
            error_description=(description[:MAX_DESCRIPTION_CHARS] if isinstance(description, str) else "")
            if error
            else None,
            retry_after=retry_after if type(retry_after) is int and 0 <= retry_after < 2**31 else None,
        )
    except ProtocolError as exc:
        return Rejection(exc.code, exc.description)


def parse_description(payload: bytes) -> DeviceDescription | Rejection:
    """Decode a description (the hub side): every component checked, unknown
    members of a component refused (a typo must not pass unnoticed)."""
    obj = _load_object(payload, MAX_DEVICE_DESCRIPTION_BYTES, DESCRIPTION_TOO_LARGE)
    if isinstance(obj, Rejection):
        return obj
    request_id = _str_or_none(obj.get("request_id"))
    if not _is_v1(obj):
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 message", request_id)
    if obj.get("type") != "description":
        return Rejection(ErrorCode.INVALID_REQUEST, "type must be 'description' on description", request_id)
    components = obj.get("components")
    if not isinstance(components, list):
        return Rejection(ErrorCode.INVALID_REQUEST, "components must be a list", request_id)
    try:
        return DeviceDescription(
            components=tuple(Component.from_json(entry, index) for index, entry in enumerate(components)),
            manufacturer=obj.get("manufacturer"),  # type: ignore[arg-type]  # checked when built
            model=obj.get("model"),  # type: ignore[arg-type]
            firmware=obj.get("firmware"),
            request_id=obj.get("request_id"),
        )
    except ProtocolError as exc:
        return Rejection(exc.code, exc.description, request_id)


def parse_state_report(payload: bytes) -> StateReport | Rejection:
    """Decode a state message; its values are checked against the device's
    description by whoever has it (DeviceDescription.check_state)."""
    obj = _load_object(payload, MAX_STATE_BYTES, STATE_TOO_LARGE)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "state":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 state message")
    state = obj.get("state")
    if not isinstance(state, dict):
        return Rejection(ErrorCode.INVALID_REQUEST, "state must be an object of component values")
    try:
        return StateReport(state, obj.get("command_id"))
    except ProtocolError as exc:
        return Rejection(exc.code, exc.description)


def parse_command(payload: bytes) -> Command | Rejection:
    """Decode a command (the device side); its value is checked against the
    device's own component (Component.check_command) by the device."""
    obj = _load_object(payload, MAX_COMMAND_BYTES)
    if isinstance(obj, Rejection):
        return obj
    if not _is_v1(obj) or obj.get("type") != "command":
        return Rejection(ErrorCode.UNSUPPORTED_VERSION, "not a v1 command")
    if "value" not in obj:
        return Rejection(ErrorCode.INVALID_REQUEST, "a command needs a value (null for a button)")
    try:
        return Command(obj.get("command_id"), obj.get("component"), obj["value"])  # type: ignore[arg-type]
    except ProtocolError as exc:
        return Rejection(exc.code, exc.description)


Message = (
    LinkRequest
    | LinkReply
    | DeviceStatus
    | SettingsMessage
    | SettingsDesired
    | DeviceReply
    | DeviceDescription
    | StateReport
    | Command
)


def parse(
    topic: str, payload: bytes, *, response_topic: str | None = None, correlation_data: bytes | None = None
) -> Message | Rejection:
    """Any message, told by the topic it arrived on (docs/protocol.md section 4),
    with the MQTT 5 properties that matter (Response Topic, Correlation Data).

    A `Rejection` says what is wrong and where the answer goes: `reply_to` is
    the request's reply topic for a link request, the device's `reply` topic
    for what a linked device sent, and None where nobody is to be answered (a
    topic no LinkHub message is sent on, or what the hub sent).
    """
    client_id = link_request_client_id(topic)
    if client_id is not None:
        return parse_link_request(payload, response_topic, correlation_data, client_id=client_id)
    if topic.startswith(LINK_REPLY_ROOT + "/"):
        return parse_link_reply(payload)
    device = parse_device_topic(topic)
    if device is None:
        return Rejection(ErrorCode.INVALID_REQUEST, f"no LinkHub message is sent on {topic!r}")
    device_id, leaf = device
    if leaf == SETTINGS_DESIRED:
        return parse_settings_desired(payload)
    if leaf == DEVICE_REPLY:
        return parse_device_reply(payload)
    if leaf == COMMAND:
        return parse_command(payload)
    parsed: Message | Rejection
    if leaf == STATUS:
        parsed = parse_device_status(payload)
    elif leaf in DEVICE_INBOUND:
        parsed = parse_settings_message(leaf, payload)
    elif leaf == DESCRIPTION:
        parsed = parse_description(payload)
    elif leaf == STATE:
        parsed = parse_state_report(payload)
    else:
        parsed = Rejection(ErrorCode.INVALID_REQUEST, f"no LinkHub message is sent on {topic!r}")
    if isinstance(parsed, Rejection):
        return Rejection(
            parsed.error, parsed.description, parsed.request_id, device_topic(device_id, DEVICE_REPLY)
        )
    return parsed
