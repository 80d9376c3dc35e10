"""The codec on its own: what goes on the wire, and what bad input becomes."""

import base64
import json
import secrets
from typing import Any

import pytest

import linkhub_protocol as protocol
from firmware_sim import keys
from linkhub_protocol import (
    ApprovedReply,
    DeviceInfo,
    DeviceReply,
    DeviceStatus,
    ErrorCode,
    ErrorReply,
    LinkCredentials,
    LinkRequest,
    MqttCredentials,
    PendingReply,
    Rejection,
    SettingsDesired,
    SettingsGet,
    SettingsReported,
    SettingsSet,
)

REPLY_TO = protocol.reply_topic(secrets.token_urlsafe(24))
REQUEST_ID = secrets.token_urlsafe(24)
PUBLIC_KEY = keys.public_key(keys.new_private_key())


def request_payload(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "v": 1,
        "type": "link_request",
        "request_id": REQUEST_ID,
        "reply_to": REPLY_TO,
        "device": {"name": "Kitchen Lamp", "model": "LMP-1", "address": "192.168.1.23"},
        "public_key": PUBLIC_KEY,
    }
    body.update(overrides)
    return json.dumps(body).encode()


def test_a_link_request_round_trips() -> None:
    device = DeviceInfo("Kitchen Lamp", "LMP-1", "192.168.1.23")
    request = LinkRequest(REQUEST_ID, REPLY_TO, device, PUBLIC_KEY)
    assert protocol.parse_link_request(protocol.encode(request)) == request
    assert json.loads(protocol.encode(request))["public_key"] == PUBLIC_KEY


@pytest.mark.parametrize(
    "reply",
    [
        PendingReply(REQUEST_ID, "BCDF-GHJK", "http://hub/link", "http://hub/link?code=BCDF-GHJK", 900, 5),
        ApprovedReply(REQUEST_ID, "dev-0a1b2c", base64.b64encode(secrets.token_bytes(200)).decode()),
        ErrorReply(REQUEST_ID, ErrorCode.ACCESS_DENIED, "denied"),
        ErrorReply(REQUEST_ID, ErrorCode.SLOW_DOWN, "too many", retry_after=42),
        ErrorReply(REQUEST_ID, ErrorCode.TOO_MANY_PENDING, "busy", retry_after=7),
    ],
)
def test_replies_round_trip(reply: protocol.LinkReply) -> None:
    assert protocol.parse_link_reply(protocol.encode(reply)) == reply


def test_an_approved_reply_carries_no_credentials_in_the_clear() -> None:
    sealed = base64.b64encode(secrets.token_bytes(200)).decode()
    body = json.loads(protocol.encode(ApprovedReply(REQUEST_ID, "dev-0a1b2c", sealed)))
    assert set(body) == {"v", "type", "status", "request_id", "device_id", "sealed_credentials"}
    with pytest.raises(protocol.ProtocolError):
        ApprovedReply(REQUEST_ID, "dev-0a1b2c", "not base64!")


def test_sealed_credentials_name_their_request_and_device() -> None:
    mqtt = MqttCredentials("hub", 1884, "dev-0a1b2c", "dev-0a1b2c", "s3cret")
    plaintext = protocol.encode(LinkCredentials(REQUEST_ID, "dev-0a1b2c", mqtt))
    assert json.loads(plaintext)["type"] == "link_credentials"
    reply = ApprovedReply(REQUEST_ID, "dev-0a1b2c", base64.b64encode(b"x" * 60).decode())
    assert protocol.approved_credentials(reply, plaintext) == mqtt
    other = ApprovedReply(secrets.token_urlsafe(24), "dev-0a1b2c", reply.sealed_credentials)
    refused = protocol.approved_credentials(other, plaintext)
    assert isinstance(refused, Rejection) and "another request" in refused.description
    assert isinstance(protocol.approved_credentials(reply, b'{"v":1,"type":"status"}'), Rejection)
    assert isinstance(protocol.approved_credentials(reply, b"\xff"), Rejection)


def test_request_topics_carry_the_client_id() -> None:
    topic = protocol.link_request_topic("lh-boot-0a1b2c3d")
    assert topic == "linkhub/v1/link/request/lh-boot-0a1b2c3d"
    assert protocol.link_request_client_id(topic) == "lh-boot-0a1b2c3d"
    assert protocol.link_request_client_id("linkhub/v1/link/request") is None
    assert protocol.link_request_client_id("linkhub/v1/link/request/") is None
    assert protocol.link_request_client_id("linkhub/v1/link/request/a/b") is None
    assert protocol.link_request_client_id("linkhub/v1/link/request/bad.id") == "bad.id"  # read, then refused
    assert protocol.link_request_subscription() == "$share/linkhub-hubs/linkhub/v1/link/request/+"
    for bad in ("", "a/b", "a+b", "x" * 65, "bad.id"):
        with pytest.raises(protocol.ProtocolError):
            protocol.link_request_topic(bad)
    parsed = protocol.parse_link_request(request_payload(), client_id="bad.id")
    assert isinstance(parsed, Rejection) and parsed.error is ErrorCode.INVALID_REQUEST
    assert "client id" in parsed.description and parsed.reply_to == REPLY_TO
    assert isinstance(protocol.parse_link_request(request_payload(), client_id="lh-boot-1"), LinkRequest)


@pytest.mark.parametrize(
    "public_key",
    [
        None,
        "",
        42,
        base64.b64encode(bytes(32)).decode(),  # the all-zero point
        base64.b64encode(secrets.token_bytes(31)).decode(),
        base64.b64encode(secrets.token_bytes(33)).decode(),
        base64.urlsafe_b64encode(b"\xff" * 32).decode(),  # the URL-safe alphabet
        base64.b64encode(secrets.token_bytes(32)).decode().rstrip("="),  # unpadded
        PUBLIC_KEY[:42] + "B=",  # non-canonical: unused bits set (43rd char must end in 0b00)
    ],
    ids=["missing", "empty", "number", "zero", "short", "long", "urlsafe", "unpadded", "noncanonical"],
)
def test_a_request_without_a_good_public_key_is_refused(public_key: object) -> None:
    body = json.loads(request_payload())
    if public_key is None:
        del body["public_key"]
    else:
        body["public_key"] = public_key
    parsed = protocol.parse_link_request(json.dumps(body).encode())
    assert isinstance(parsed, Rejection) and parsed.error is ErrorCode.INVALID_REQUEST
    assert "public_key" in parsed.description and "sealed" in parsed.description
    assert parsed.reply_to == REPLY_TO and parsed.request_id == REQUEST_ID  # answerable


def test_mqtt5_response_topic_may_replace_reply_to() -> None:
    body = json.loads(request_payload())
    del body["reply_to"]
    parsed = protocol.parse_link_request(json.dumps(body).encode(), response_topic=REPLY_TO)
    assert isinstance(parsed, LinkRequest) and parsed.reply_to == REPLY_TO


def test_disagreeing_reply_topics_are_refused() -> None:
    other = protocol.reply_topic(secrets.token_urlsafe(24))
    parsed = protocol.parse_link_request(request_payload(), response_topic=other)
    assert isinstance(parsed, Rejection) and parsed.error is ErrorCode.INVALID_REQUEST
    assert parsed.reply_to == other  # MQTT 5: the Response Topic is where answers go


@pytest.mark.parametrize(
    ("payload", "error", "can_answer"),
    [
        (b"\xff\xfe", ErrorCode.INVALID_REQUEST, False),
        (b"[1, 2]", ErrorCode.INVALID_REQUEST, False),
        (b"{not json", ErrorCode.INVALID_REQUEST, False),
        (request_payload(v=2), ErrorCode.UNSUPPORTED_VERSION, True),
        (request_payload(v=True), ErrorCode.UNSUPPORTED_VERSION, True),
        (request_payload(v=1.0), ErrorCode.UNSUPPORTED_VERSION, True),
        (request_payload(type="hello"), ErrorCode.INVALID_REQUEST, True),
        (request_payload(request_id="short"), ErrorCode.INVALID_REQUEST, True),
        (request_payload(device="lamp"), ErrorCode.INVALID_REQUEST, True),
        (request_payload(device={"name": "", "model": "x"}), ErrorCode.INVALID_REQUEST, True),
        (request_payload(device={"name": "a\x00b", "model": "x"}), ErrorCode.INVALID_REQUEST, True),
        (request_payload(device={"name": "n" * 65, "model": "x"}), ErrorCode.INVALID_REQUEST, True),
        (request_payload(padding="x" * 5000), ErrorCode.PAYLOAD_TOO_LARGE, True),
        (request_payload(reply_to="linkhub/v1/link/reply/guessable"), ErrorCode.INVALID_REQUEST, False),
        (request_payload(reply_to="linkhub/v1/devices/dev-123/x"), ErrorCode.INVALID_REQUEST, False),
    ],
)
def test_bad_requests_become_rejections_not_exceptions(
    payload: bytes, error: ErrorCode, can_answer: bool
) -> None:
    parsed = protocol.parse_link_request(payload)
    assert isinstance(parsed, Rejection)
    assert parsed.error is error
    assert (parsed.reply_to is not None and protocol.is_valid_reply_topic(parsed.reply_to)) is can_answer


def test_messages_validate_when_built() -> None:
    with pytest.raises(protocol.ProtocolError):
        LinkRequest("x", REPLY_TO, DeviceInfo("a", "b"), PUBLIC_KEY)
    with pytest.raises(protocol.ProtocolError):
        LinkRequest(REQUEST_ID, REPLY_TO, DeviceInfo("a", "b"), "AAAA")
    with pytest.raises(protocol.ProtocolError):
        protocol.device_root("../etc")


PAGE = "http://192.168.1.10:8080/link"
PENDING: dict[str, Any] = {
    "request_id": REQUEST_ID,
    "user_code": "ABCD-EFGH",
    "verification_uri": PAGE,
    "verification_uri_complete": f"{PAGE}?code=ABCD-EFGH",
    "expires_in": 900,
    "interval": 5,
}


@pytest.mark.parametrize(
    ("kind", "fields"),
    [
        (PendingReply, PENDING | {"request_id": "short"}),
        (PendingReply, PENDING | {"user_code": ""}),
        (PendingReply, PENDING | {"verification_uri": "javascript:alert(1)"}),
        (PendingReply, PENDING | {"verification_uri_complete": f"{PAGE}?code=A B"}),
        (PendingReply, PENDING | {"expires_in": -1}),
        (PendingReply, PENDING | {"interval": 0}),
        (PendingReply, PENDING | {"interval": True}),
        (ErrorReply, {"request_id": "", "error": ErrorCode.SLOW_DOWN, "error_description": "x"}),
        (ErrorReply, {"request_id": None, "error": "slow_down", "error_description": "x"}),
        (ErrorReply, {"request_id": None, "error": ErrorCode.SLOW_DOWN, "error_description": "x" * 1025}),
        (
            ErrorReply,
            {"request_id": None, "error": ErrorCode.SLOW_DOWN, "error_description": "", "retry_after": -1},
        ),
        (DeviceStatus, {"online": 1}),
        (SettingsGet, {"request_id": "x" * 129}),
        (SettingsDesired, {"version": -1, "desired": {}, "full": True}),
        (SettingsDesired, {"version": 2**53, "desired": {}, "full": True}),
        (SettingsDesired, {"version": 1, "desired": [], "full": True}),
        (SettingsDesired, {"version": 1, "desired": {}, "full": "yes"}),
        (SettingsReported, {"applied_version": 1.5, "reported": {}}),
        (SettingsReported, {"applied_version": 1, "reported": None}),
        (SettingsSet, {"request_id": "", "base_version": 1, "changes": {"a": 1}}),
        (SettingsSet, {"request_id": "r", "base_version": 1, "changes": {}}),
        (SettingsSet, {"request_id": "r", "base_version": False, "changes": {"a": 1}}),
        (DeviceReply, {"request_id": "r", "ok": True, "error": ErrorCode.SERVER_ERROR}),
        (DeviceReply, {"request_id": "r", "ok": False}),
        (DeviceReply, {"request_id": "r", "ok": "no", "error": ErrorCode.SERVER_ERROR}),
        (DeviceReply, {"request_id": "r", "ok": True, "version": -3}),
        (DeviceReply, {"request_id": "r", "ok": False, "error": ErrorCode.SLOW_DOWN, "retry_after": 2**31}),
    ],
    ids=lambda value: value.__name__ if isinstance(value, type) else "",
)
def test_every_message_refuses_a_bad_value_when_built(kind: type, fields: dict[str, Any]) -> None:
    with pytest.raises(protocol.ProtocolError):
        kind(**fields)


def test_the_good_values_next_to_those_are_built() -> None:
    """The refusals above are about the one bad field: the same messages, good, build."""
    assert PendingReply(**PENDING).interval == 5
    assert ErrorReply(None, ErrorCode.SLOW_DOWN, "wait", retry_after=3).retry_after == 3
    assert SettingsSet("r", 0, {"a": None}).changes == {"a": None}
    assert DeviceReply("r", ok=False, error=ErrorCode.SLOW_DOWN, retry_after=2**31 - 1).retry_after
    assert DeviceReply(None, ok=True, version=2**53 - 1).version == 2**53 - 1


def test_parse_tells_a_message_by_its_topic_and_says_where_a_refusal_goes() -> None:
    device_id = "dev-0a1b2c3d4e5f"
    reply = protocol.device_topic(device_id, protocol.DEVICE_REPLY)
    get = protocol.parse(
        protocol.device_topic(device_id, protocol.SETTINGS_GET), b'{"v":1,"type":"settings_get"}'
    )
    assert get == SettingsGet()
    refused = protocol.parse(
        protocol.device_topic(device_id, protocol.SETTINGS_SET), b'{"v":1,"request_id":"r1"}'
    )
    assert isinstance(refused, Rejection) and (refused.request_id, refused.reply_to) == ("r1", reply)
    status = protocol.parse(protocol.device_status_topic(device_id), b"[]")
    assert isinstance(status, Rejection) and status.reply_to == reply
    request = protocol.parse(protocol.link_request_topic("lh-boot-1"), request_payload())
    assert isinstance(request, LinkRequest)
    bad_request = protocol.parse(protocol.link_request_topic("lh-boot-1"), request_payload(v=2))
    assert isinstance(bad_request, Rejection) and bad_request.reply_to == REPLY_TO
    pending = protocol.parse(REPLY_TO, protocol.encode(PendingReply(**PENDING)))
    assert pending == PendingReply(**PENDING)
    elsewhere = protocol.parse("linkhub/v1/other", b"{}")
    assert isinstance(elsewhere, Rejection) and elsewhere.reply_to is None
    unknown_leaf = protocol.parse(protocol.device_topic(device_id, "lights/on"), b"{}")
    assert isinstance(unknown_leaf, Rejection) and unknown_leaf.reply_to == reply


def test_device_topics_are_built_and_matched_in_one_place() -> None:
    topic = protocol.device_status_topic("dev-0a1b2c")
    assert topic == "linkhub/v1/devices/dev-0a1b2c/status"
    assert protocol.parse_device_topic(topic) == ("dev-0a1b2c", "status")
    assert protocol.parse_device_topic("linkhub/v1/devices/BAD ID/status") is None
    assert protocol.parse_device_topic("linkhub/v1/link/request/lh-boot-1") is None


def test_status_messages() -> None:
    assert protocol.parse_device_status(protocol.encode(DeviceStatus(True))) == DeviceStatus(True)
    assert isinstance(protocol.parse_device_status(b'{"v":1,"type":"status","online":"yes"}'), Rejection)


def test_overlong_correlation_data_is_refused_but_answerable() -> None:
    parsed = protocol.parse_link_request(request_payload(), REPLY_TO, correlation_data=b"x" * 129)
    assert isinstance(parsed, Rejection) and parsed.reply_to == REPLY_TO
    assert isinstance(protocol.parse_link_request(request_payload(), REPLY_TO, b"x" * 128), LinkRequest)
