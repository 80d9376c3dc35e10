"""Property tests (hypothesis) for every parser of outside input: what devices
send over MQTT, what the hub sends back (the device side of the codec), codes
people type, settings documents and values, and the JSON bodies of the control
API, the account service API and the pages' /api/v1 routes.

The one property throughout: garbage gets a clear error (a `Rejection` or a
protocol error code, a 4xx JSON body with an `error`), never an exception
that would take a handler down, and what is accepted is well-formed. Then a
burst of generated garbage goes through a real broker to a running hub, which
answers each with an error and still links a device afterwards.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import random
import re
import secrets
import string
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from conftest import HubFactory, RunningBroker, hub_pages
from device_doubles import BootstrapDevice, RawClient, bootstrap_client, new_reply_topic
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from werkzeug.test import TestResponse

import linkhub_protocol as protocol
from firmware_sim.discovery import hub_from_records
from hub.broker.managed import MAX_PACKET_BYTES
from hub.core import codes
from hub.core.rate_limits import LimitsPolicy
from hub.core.settings_merge import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    MAX_KEY_LENGTH,
    RESERVED_PREFIX,
    SettingsError,
    diff,
    merge_patch,
    validate_document,
)
from hub.daemon import Hub
from hub.errors import SettingsRefused
from hub.services.local_accounts import AccountService
from hub.store.engine import make_engine
from linkhub_protocol import (
    ApprovedReply,
    Command,
    Component,
    ComponentKind,
    DeviceDescription,
    DeviceInfo,
    DeviceReply,
    DeviceStatus,
    ErrorCode,
    ErrorReply,
    LinkCredentials,
    LinkRequest,
    MqttCredentials,
    PendingReply,
    ProtocolError,
    Rejection,
    SettingsDesired,
    SettingsGet,
    SettingsReported,
    SettingsSet,
    StateReport,
)
from linkhub_protocol.components import READ_ONLY_KINDS
from web import WebConfig
from web.account_api import create_account_api
from web.control import create_control_app
from web.values import non_finite_path, parse_value, show_value, typed_change

PROTOCOL_CODES = {str(code) for code in ErrorCode}

# --- strategies ----------------------------------------------------------------------

# JSON as Python's json reads it: NaN and Infinity included (they are in what
# devices may send), floats and ints of every size json.dumps writes, and
# integers past what SQL (BIGINT) holds drawn often, not by luck.
big_integers = st.integers(2**63 - 2, 2**70) | st.integers(-(2**70), -(2**63) + 1)
scalars = st.none() | st.booleans() | st.integers() | big_integers | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)

# Families of payloads that break naive parsers: nesting deeper than the
# parser's recursion, integers longer than Python reads (4300 digits), strict
# JSON's missing constants, truncated and non-UTF-8 text.
deep_nesting = (st.integers(1, 50) | st.integers(500, 20000)).flatmap(
    lambda n: st.sampled_from([b"[" * n + b"]" * n, b'{"a":' * n + b"1" + b"}" * n, b"[" * n])
)
long_numbers = st.integers(4000, 6000).map(lambda n: b'{"v":' + b"9" * n + b"}")
constants = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b'{"v":1e999}', b'{"v":NaN}'])
truncated = json_objects.map(lambda o: json.dumps(o).encode()[:-1])
raw_payloads = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | deep_nesting
    | long_numbers
    | constants
    | truncated
)

request_ids = st.from_regex(r"[A-Za-z0-9_-]{16,64}", fullmatch=True)
reply_tokens = st.from_regex(r"[A-Za-z0-9_-]{22,64}", fullmatch=True)
reply_topics = reply_tokens.map(protocol.reply_topic)
client_ids = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
device_ids = st.from_regex(r"[a-z0-9][a-z0-9-]{2,39}", fullmatch=True)
printable = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Cf"), min_codepoint=0x20), min_size=1)
labels = printable.filter(lambda s: s.strip() and "\x7f" not in s)
public_keys = st.binary(min_size=32, max_size=32).filter(any).map(lambda raw: base64.b64encode(raw).decode())
device_infos = st.builds(
    DeviceInfo,
    name=labels.map(lambda s: s[:64]),
    model=labels.map(lambda s: s[:64]),
    address=st.none() | labels.map(lambda s: s[:64]),
    firmware=st.none() | labels.map(lambda s: s[:32]),
)
link_requests = st.builds(
    LinkRequest, request_id=request_ids, reply_to=reply_topics, device=device_infos, public_key=public_keys
)
ports = st.integers(1, 65535)
sealed = st.binary(min_size=48, max_size=400).map(lambda raw: base64.b64encode(raw).decode())
mqtt_credentials = st.builds(
    MqttCredentials,
    host=st.text(min_size=1, max_size=30),
    port=ports,
    client_id=st.text(min_size=1, max_size=30),
    username=st.text(min_size=1, max_size=30),
    password=st.text(min_size=1, max_size=30),
) | st.builds(
    MqttCredentials,
    host=st.text(min_size=1, max_size=30),
    port=ports,
    client_id=st.text(min_size=1, max_size=30),
    username=st.text(min_size=1, max_size=30),
    password=st.text(min_size=1, max_size=30),
    tls_port=ports,
    ca_cert=st.text(max_size=50).map(lambda s: f"-----BEGIN CERTIFICATE-----\n{s}"),
)
# What a hub may give as its link page: http or https, a host, a port.
link_pages = st.builds(
    "{}://{}:{}/link".format,
    st.sampled_from(["http", "https"]),
    st.from_regex(r"[a-z0-9][a-z0-9.-]{0,40}", fullmatch=True),
    ports,
)
link_replies = (
    st.builds(
        PendingReply,
        request_id=request_ids,
        user_code=st.builds(codes.generate, st.randoms()).map(codes.display),
        verification_uri=link_pages,
        verification_uri_complete=link_pages.map(lambda page: f"{page}?code=ABCD-EFGH"),
        expires_in=st.integers(0, 86400),
        interval=st.integers(1, 60),
    )
    | st.builds(ApprovedReply, request_id=request_ids, device_id=device_ids, sealed_credentials=sealed)
    | st.builds(
        ErrorReply,
        request_id=st.none() | request_ids,
        error=st.sampled_from(ErrorCode),
        error_description=st.text(max_size=80),
        retry_after=st.none() | st.integers(0, 2**31 - 1),
    )
)
versions = st.integers(0, 2**53 - 1)


def json_documents(*, allow_null: bool = False, max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    """Settings-like documents: strict JSON (finite numbers), keys people use."""
    keys = st.text(string.ascii_letters + "_-$.", min_size=0, max_size=70) | st.sampled_from(
        ["tz", "theme", "volume", "$version", ""]
    )
    leaves = st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False, allow_infinity=False)
    leaves = leaves | st.text(max_size=30)
    if allow_null:
        leaves = leaves | st.none()
    return st.dictionaries(
        keys,
        st.recursive(
            leaves,
            lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
            max_leaves=max_leaves,
        ),
        max_size=5,
    )


def mutated(base: dict[str, Any], nested: str | None = None) -> st.SearchStrategy[dict[str, Any]]:
    """`base` with one field (or one field of `base[nested]`) replaced by any JSON
    value, deleted, or joined by an unknown one: near-valid messages."""
    fields = sorted(base) + ([f"{nested}.{key}" for key in sorted(base[nested])] if nested else [])

    def apply(path: str, how: str, value: Any) -> dict[str, Any]:
        out = copy.deepcopy(base)
        target, key = (out[nested], path.split(".", 1)[1]) if "." in path else (out, path)
        if not isinstance(target, dict):
            return out
        if how == "delete":
            target.pop(key, None)
        elif how == "add":
            target[f"x_{key}"] = value
        else:
            target[key] = value
        return out

    return st.builds(
        apply, st.sampled_from(fields), st.sampled_from(["replace", "delete", "add"]), json_values
    )


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# --- linkhub_protocol/codec.py: what devices send ----------------------------------------------------


def is_answer(parsed: object, *expected: type) -> bool:
    """A message of one of the expected types, or a Rejection with a protocol code."""
    if isinstance(parsed, Rejection):
        return parsed.error in ErrorCode and isinstance(parsed.description, str) and parsed.description != ""
    return isinstance(parsed, expected)


@given(payload=raw_payloads, response_topic=st.none() | reply_topics | st.text(max_size=40))
@example(payload=b"1" * 5000, response_topic=None)
def test_a_link_request_parser_answers_any_bytes(payload: bytes, response_topic: str | None) -> None:
    parsed = protocol.parse_link_request(payload, response_topic)
    assert is_answer(parsed, LinkRequest)
    if isinstance(parsed, Rejection) and parsed.reply_to is not None:
        # Where the hub answers is always a topic only a device can read.
        assert protocol.is_valid_reply_topic(parsed.reply_to)


@given(request=link_requests, client_id=client_ids, mqtt5=st.booleans())
def test_valid_link_requests_round_trip(request: LinkRequest, client_id: str, mqtt5: bool) -> None:
    payload = protocol.encode(request)
    response_topic = request.reply_to if mqtt5 else None
    assert protocol.parse_link_request(payload, response_topic, client_id=client_id) == request


@st.composite
def near_valid_link_requests(draw: st.DrawFn) -> bytes:
    body = json.loads(protocol.encode(draw(link_requests)))
    return dumps(draw(mutated(body, nested="device")))


@given(payload=near_valid_link_requests(), client_id=st.none() | client_ids | st.text(max_size=70))
def test_near_valid_link_requests_are_parsed_or_refused_with_a_reason(
    payload: bytes, client_id: str | None
) -> None:
    parsed = protocol.parse_link_request(payload, client_id=client_id)
    assert is_answer(parsed, LinkRequest)
    if isinstance(parsed, LinkRequest):
        # What is accepted is a real request: it encodes and parses back the same.
        assert protocol.parse_link_request(protocol.encode(parsed)) == parsed
    else:
        body = json.loads(payload)
        # A refusal knows where to answer whenever the request named a valid reply topic.
        reply_to = body.get("reply_to")
        if isinstance(reply_to, str) and protocol.is_valid_reply_topic(reply_to):
            assert parsed.reply_to == reply_to


@given(payload=raw_payloads)
def test_a_status_parser_answers_any_bytes(payload: bytes) -> None:
    parsed = protocol.parse_device_status(payload)
    assert is_answer(parsed, DeviceStatus)


@given(online=st.booleans())
def test_status_round_trips(online: bool) -> None:
    assert protocol.parse_device_status(protocol.encode(DeviceStatus(online))) == DeviceStatus(online)


@given(leaf=st.sampled_from([*protocol.DEVICE_INBOUND, "status", "settings/x", ""]), payload=raw_payloads)
@example(
    leaf=protocol.SETTINGS_SET, payload=b'{"v":1,"type":"settings_set","base_version":' + b"9" * 4400 + b"}"
)
def test_a_settings_message_parser_answers_any_bytes(leaf: str, payload: bytes) -> None:
    parsed = protocol.parse_settings_message(leaf, payload)
    assert is_answer(parsed, SettingsGet, SettingsReported, SettingsSet)


settings_messages = (
    st.builds(SettingsGet, st.none() | request_ids)
    | st.builds(SettingsReported, versions, json_documents())
    | st.builds(SettingsSet, request_ids, versions, json_documents(allow_null=True).filter(bool))
)
LEAF = {SettingsGet: protocol.SETTINGS_GET, SettingsReported: protocol.SETTINGS_REPORTED}

# --- components, descriptions, state and commands (docs/protocol.md section 13) ---
component_keys = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
short_labels = labels.filter(lambda s: len(s) <= 64)


@st.composite
def components(draw: st.DrawFn, key: str | None = None) -> Component:
    kind = draw(st.sampled_from(ComponentKind))
    extra: dict[str, Any] = {}
    if kind is ComponentKind.NUMBER:
        low = draw(st.integers(-1000, 1000))
        high = low + draw(st.integers(1, 1000))
        extra = {"minimum": low, "maximum": high, "step": draw(st.sampled_from([1, 0.5, 0.1]))}
        extra["unit"] = draw(st.none() | labels.filter(lambda s: len(s) <= 16))
    if kind is ComponentKind.SENSOR:
        extra["unit"] = draw(st.none() | labels.filter(lambda s: len(s) <= 16))
    if kind is ComponentKind.SELECT:
        extra["options"] = tuple(draw(st.lists(short_labels, min_size=1, max_size=5, unique=True)))
    if kind in (ComponentKind.SENSOR, ComponentKind.BINARY_SENSOR):
        extra["device_class"] = draw(st.none() | st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True))
    commandable = kind not in READ_ONLY_KINDS and (kind is ComponentKind.BUTTON or draw(st.booleans()))
    return Component(
        key=key or draw(component_keys), kind=kind, name=draw(short_labels), commandable=commandable, **extra
    )


@st.composite
def descriptions(draw: st.DrawFn) -> DeviceDescription:
    keys = draw(st.lists(component_keys, min_size=1, max_size=6, unique=True))
    return DeviceDescription(
        components=tuple(draw(components(key)) for key in keys),
        manufacturer=draw(short_labels),
        model=draw(short_labels),
        firmware=draw(st.none() | labels.filter(lambda s: len(s) <= 32)),
        request_id=draw(st.none() | request_ids),
    )


def state_values(component: Component) -> st.SearchStrategy[Any]:
    """A value `component` may be in (Component.check_state accepts every one)."""
    match component.kind:
        case ComponentKind.SWITCH | ComponentKind.BINARY_SENSOR:
            return st.booleans()
        case ComponentKind.LIGHT:
            return st.fixed_dictionaries({"on": st.booleans(), "brightness": st.integers(0, 255)})
        case ComponentKind.SENSOR:
            return st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=64)
        case ComponentKind.NUMBER:
            assert component.minimum is not None and component.step is not None
            assert component.maximum is not None
            count = int((component.maximum - component.minimum) // component.step)
            return st.integers(0, count).map(lambda n: component.minimum + n * component.step)
        case ComponentKind.SELECT:
            return st.sampled_from(component.options)
    return st.nothing()


@st.composite
def described_states(draw: st.DrawFn) -> tuple[DeviceDescription, StateReport]:
    description = draw(descriptions())
    state = {c.key: draw(state_values(c)) for c in description.components if c.has_state}
    return description, StateReport(state, draw(st.none() | request_ids))


state_reports = described_states().map(lambda pair: pair[1])
commands = st.builds(Command, request_ids, component_keys, st.none() | st.booleans() | st.integers())


@given(message=descriptions())
def test_descriptions_round_trip(message: DeviceDescription) -> None:
    assert protocol.parse_description(protocol.encode(message)) == message


@given(pair=described_states())
def test_a_state_of_every_component_is_taken_by_its_description(
    pair: tuple[DeviceDescription, StateReport],
) -> None:
    description, report = pair
    assert protocol.parse_state_report(protocol.encode(report)) == report
    description.check_state(report.state)


@given(message=commands)
def test_commands_round_trip(message: Command) -> None:
    assert protocol.parse_command(protocol.encode(message)) == message


@given(message=settings_messages)
def test_settings_messages_round_trip(message: SettingsGet | SettingsReported | SettingsSet) -> None:
    leaf = LEAF.get(type(message), protocol.SETTINGS_SET)
    assert protocol.parse_settings_message(leaf, protocol.encode(message)) == message


@st.composite
def near_valid_settings_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    message = draw(settings_messages)
    leaf = LEAF.get(type(message), protocol.SETTINGS_SET)
    return leaf, dumps(draw(mutated(json.loads(protocol.encode(message)))))


@given(near=near_valid_settings_messages())
def test_near_valid_settings_messages_are_parsed_or_refused(near: tuple[str, bytes]) -> None:
    leaf, payload = near
    parsed = protocol.parse_settings_message(leaf, payload)
    assert is_answer(parsed, SettingsGet, SettingsReported, SettingsSet)
    if not isinstance(parsed, Rejection):
        assert protocol.parse_settings_message(leaf, protocol.encode(parsed)) == parsed
    elif (
        isinstance(json.loads(payload).get("request_id"), str)
        and len(json.loads(payload)["request_id"]) <= 128
    ):
        # The refusal names the request it refuses, so the device can match it.
        assert parsed.request_id == json.loads(payload)["request_id"]


# --- linkhub_protocol/codec.py: what the hub sends (the device side) ---------------------------------


@given(payload=raw_payloads)
@example(
    payload=dumps(
        {
            "v": 1,
            "type": "link_reply",
            "status": "authorization_pending",
            "request_id": "r",
            "user_code": "c",
            "verification_uri": "u",
            "verification_uri_complete": "u",
            "expires_in": math.inf,
            "interval": 5,
        }
    )
)
def test_a_link_reply_parser_answers_any_bytes(payload: bytes) -> None:
    assert is_answer(protocol.parse_link_reply(payload), PendingReply, ApprovedReply, ErrorReply)


@given(reply=link_replies)
def test_link_replies_round_trip(reply: protocol.LinkReply) -> None:
    assert protocol.parse_link_reply(protocol.encode(reply)) == reply


@st.composite
def near_valid_link_replies(draw: st.DrawFn) -> bytes:
    return dumps(draw(mutated(json.loads(protocol.encode(draw(link_replies))))))


@given(payload=near_valid_link_replies())
def test_near_valid_link_replies_are_parsed_or_refused(payload: bytes) -> None:
    parsed = protocol.parse_link_reply(payload)
    assert is_answer(parsed, PendingReply, ApprovedReply, ErrorReply)
    if not isinstance(parsed, Rejection):
        assert protocol.parse_link_reply(protocol.encode(parsed)) == parsed


link_credentials = st.builds(
    LinkCredentials, request_id=request_ids, device_id=device_ids, mqtt=mqtt_credentials
)


@given(credentials=link_credentials)
def test_sealed_credentials_round_trip(credentials: LinkCredentials) -> None:
    assert protocol.parse_link_credentials(protocol.encode(credentials)) == credentials


@st.composite
def near_valid_credentials(draw: st.DrawFn) -> bytes:
    return dumps(draw(mutated(json.loads(protocol.encode(draw(link_credentials))), nested="mqtt")))


@given(payload=raw_payloads | near_valid_credentials())
def test_a_credentials_parser_answers_any_bytes(payload: bytes) -> None:
    assert is_answer(protocol.parse_link_credentials(payload), LinkCredentials)


@given(
    credentials=link_credentials,
    reply=st.builds(ApprovedReply, request_ids, device_ids, sealed),
    moved=st.booleans(),
)
def test_opened_credentials_must_name_their_envelope(
    credentials: LinkCredentials, reply: ApprovedReply, moved: bool
) -> None:
    if not moved:  # the box of this very reply
        reply = ApprovedReply(credentials.request_id, credentials.device_id, reply.sealed_credentials)
    opened = protocol.approved_credentials(reply, protocol.encode(credentials))
    same = (credentials.request_id, credentials.device_id) == (reply.request_id, reply.device_id)
    assert opened == credentials.mqtt if same else isinstance(opened, Rejection)


@given(payload=raw_payloads)
def test_desired_and_reply_parsers_answer_any_bytes(payload: bytes) -> None:
    assert is_answer(protocol.parse_settings_desired(payload), SettingsDesired)
    assert is_answer(protocol.parse_device_reply(payload), DeviceReply)


@given(
    message=st.builds(SettingsDesired, versions, json_documents(), st.booleans())
    | st.builds(
        DeviceReply,
        st.none() | request_ids,
        st.just(True),
        st.none() | versions,
    )
    | st.builds(
        DeviceReply,
        st.none() | request_ids,
        st.just(False),
        st.none() | versions,
        st.sampled_from(ErrorCode),
        st.text(max_size=40),
    )
)
def test_desired_and_replies_round_trip(message: SettingsDesired | DeviceReply) -> None:
    parse = (
        protocol.parse_settings_desired
        if isinstance(message, SettingsDesired)
        else protocol.parse_device_reply
    )
    assert parse(protocol.encode(message)) == message


# --- linkhub_protocol/topics.py and messages.py: topics and keys -------------------------------------------


@given(
    topic=st.text(max_size=80)
    | st.builds(lambda i, r: f"{protocol.DEVICES_ROOT}/{i}/{r}", st.text(), st.text())
)
def test_device_topics_parse_to_what_builds_them(topic: str) -> None:
    found = protocol.parse_device_topic(topic)
    if found is not None:
        assert protocol.device_topic(*found) == topic


@given(
    device_id=device_ids, leaf=st.sampled_from([*protocol.DEVICE_INBOUND, "status", protocol.DEVICE_REPLY])
)
def test_device_topics_round_trip(device_id: str, leaf: str) -> None:
    assert protocol.parse_device_topic(protocol.device_topic(device_id, leaf)) == (device_id, leaf)


@given(topic=st.text(max_size=90) | client_ids.map(protocol.link_request_topic))
def test_request_topics_name_one_client_id(topic: str) -> None:
    client_id = protocol.link_request_client_id(topic)
    if client_id is not None:
        assert "/" not in client_id and f"{protocol.LINK_REQUEST_ROOT}/{client_id}" == topic
        if protocol.is_valid_client_id(client_id):
            assert protocol.link_request_topic(client_id) == topic


@given(text=json_values | st.text(max_size=50) | public_keys | st.binary(max_size=40).map(base64.b64encode))
def test_public_keys_decode_or_raise_a_protocol_error(text: Any) -> None:
    if isinstance(text, bytes):
        text = text.decode()
    try:
        raw = protocol.decode_public_key(text)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST
    else:
        # One key, one spelling.
        assert len(raw) == protocol.PUBLIC_KEY_BYTES and base64.b64encode(raw).decode() == text


@given(text=st.text(max_size=60) | sealed)
def test_sealed_text_decodes_or_raises_a_protocol_error(text: str) -> None:
    try:
        raw = protocol.decode_sealed(text)
    except ProtocolError as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST
    else:
        assert base64.b64encode(raw).decode() == text


# --- firmware_sim/discovery.py: what an mDNS answer on the LAN says -------------------

txt_values = st.text(max_size=12) | st.integers().map(str) | big_integers.map(str) | st.just("1")


@given(
    txt=st.dictionaries(
        st.sampled_from(["v", "mqtt_host", "mqtt_port", "mqtt_tls_port", "hub_id", "x"]), txt_values
    ),
    addresses=st.lists(st.text(max_size=15), max_size=2),
    srv_port=st.none() | st.integers(-(2**20), 2**20),
)
def test_any_mdns_answer_is_a_usable_hub_or_none(
    txt: dict[str, str], addresses: list[str], srv_port: int | None
) -> None:
    found = hub_from_records("Hub", txt, addresses, srv_port, None)
    if found is not None:
        assert txt["v"] == str(protocol.PROTOCOL_VERSION)
        assert found.host and 0 < found.port < 65536
        assert found.tls_port is None or 0 < found.tls_port < 65536


# --- hub/core/codes.py: what people type -------------------------------------------------


@given(typed=st.text(max_size=40))
def test_any_typed_text_is_a_code_or_none(typed: str) -> None:
    code = codes.normalise(typed)
    if code is not None:
        assert len(code) == codes.CODE_LENGTH and set(code) <= set(codes.ALPHABET)
        assert codes.normalise(code) == code  # canonical
        assert [ch for ch in typed.upper() if ch in codes.ALPHABET] == list(code)


@st.composite
def sloppy_codes(draw: st.DrawFn) -> tuple[str, str]:
    """A code and one way a person might type it: any case, separators anywhere."""
    code = codes.generate(random.Random(draw(st.integers())))
    parts = []
    for ch in codes.display(code):
        parts.append(
            draw(st.sampled_from([ch, ch.lower()])) if ch != "-" else draw(st.sampled_from(["-", "", " "]))
        )
        parts.append(draw(st.sampled_from(["", "", " ", "-", "\t", ".", "_"])))
    return code, draw(st.sampled_from(["", " "])) + "".join(parts)


@given(pair=sloppy_codes())
def test_sloppy_typing_finds_the_code(pair: tuple[str, str]) -> None:
    code, typed = pair
    assert codes.normalise(typed) == code
    assert codes.normalise(codes.display(code)) == code


# --- hub/core/settings_merge.py: documents and patches ----------------------------------


def container_depth(value: object, depth: int = 1) -> int:
    """How deep objects and arrays nest; the document itself is level 1."""
    if isinstance(value, dict):
        return max([depth, *(container_depth(v, depth + 1) for v in value.values())])
    if isinstance(value, list):
        return max([depth, *(container_depth(v, depth + 1) for v in value)])
    return 0


def walk(value: object) -> Iterator[tuple[str | None, object]]:
    """Every (key, value) below `value`; key None for array items."""
    items = (
        value.items()
        if isinstance(value, dict)
        else ((None, v) for v in value)
        if isinstance(value, list)
        else ()
    )
    for key, item in items:
        yield key, item
        yield from walk(item)


def nulls_allowed(value: object, allow_null: bool, in_array: bool = False) -> bool:
    """null only as an object's member, and only in a change (it deletes the key)."""
    if value is None:
        return allow_null and not in_array
    if isinstance(value, dict):
        return all(nulls_allowed(item, allow_null, in_array) for item in value.values())
    if isinstance(value, list):
        return all(nulls_allowed(item, allow_null, True) for item in value)
    return True


def within_limits(document: dict[str, Any], *, allow_null: bool) -> bool:
    """The document rules of docs/protocol.md, written out again independently."""
    if container_depth(document) > MAX_DEPTH or not nulls_allowed(document, allow_null):
        return False
    for key, value in walk(document):
        if key is not None and (not 1 <= len(key) <= MAX_KEY_LENGTH or key.startswith(RESERVED_PREFIX)):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
    return len(json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()) <= MAX_DOCUMENT_BYTES


@given(
    document=json_documents(allow_null=True, max_leaves=30)
    | st.builds(lambda n: {"deep": json.loads("[" * n + "]" * n)}, st.integers(1, 10))
    | st.builds(lambda n: {"big": "x" * n}, st.integers(8100, 8200)),
    allow_null=st.booleans(),
)
def test_documents_pass_exactly_when_within_the_limits(document: dict[str, Any], allow_null: bool) -> None:
    expected = within_limits(document, allow_null=allow_null)
    try:
        accepted = validate_document(document, allow_null=allow_null)
    except SettingsError as exc:
        assert exc.code in PROTOCOL_CODES and exc.description
        assert not expected, f"refused a document within the limits: {exc.description}"
    else:
        assert accepted is document and expected


@given(value=json_values)
def test_anything_that_is_not_an_object_is_refused_as_a_document(value: object) -> None:
    assume(not isinstance(value, dict))
    with pytest.raises(SettingsError) as refused:
        validate_document(value)
    assert refused.value.code == ErrorCode.INVALID_REQUEST


@given(document=json_documents(), patch=json_documents(allow_null=True))
def test_a_merge_patch_applied_twice_is_applied_once(document: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(document, patch)
    assert merge_patch(once, patch) == once  # RFC 7386 patches are idempotent


@given(document=json_documents(), patch=json_documents(allow_null=True))
def test_a_merge_patch_leaves_its_inputs_alone(document: dict[str, Any], patch: dict[str, Any]) -> None:
    before = copy.deepcopy((document, patch))
    merge_patch(document, patch)
    assert (document, patch) == before
    assert merge_patch(document, {}) == document


@given(old=json_documents(), new=json_documents())
def test_the_diff_patch_turns_old_into_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    assert merge_patch(old, diff(old, new)) == new
    assert diff(new, new) == {}


# --- web/values.py: values people type ---------------------------------------------


@given(
    text=st.text(max_size=60)
    | long_numbers.map(bytes.decode)
    | deep_nesting.map(bytes.decode)
    | constants.map(bytes.decode)
)
@example(text="1" * 5000)
def test_a_typed_value_is_strict_json_or_refused(text: str) -> None:
    try:
        value = parse_value(text)
    except SettingsRefused as exc:
        assert exc.code in PROTOCOL_CODES
        return
    json.dumps(value, allow_nan=False)  # what a device's parser can read back
    assert non_finite_path(value) is None


@given(value=json_values.filter(lambda v: non_finite_path(v) is None))
def test_shown_values_read_back_the_same(value: object) -> None:
    assert parse_value(show_value(value)) == value


@given(form=st.dictionaries(st.sampled_from(["key", "value", "action", "other"]), st.text(max_size=30)))
def test_a_settings_form_is_a_change_or_refused(form: dict[str, str]) -> None:
    try:
        change = typed_change(form)
    except SettingsRefused as exc:
        assert exc.code in PROTOCOL_CODES
    else:
        assert list(change) == [form["key"].strip()]


# --- JSON bodies: the control API, the account service API, the pages' /api/v1 ---------

API_KEYS = [
    "code", "account", "name", "password", "changes", "device_id", "account_id", "change_id",
    "origin", "kind", "document", "base_version", "totp", "recovery_code", "secret", "after", "limit",
]  # fmt: skip
KNOWN = ["alice", "1", "0", "-1", "BCDF-GHJK", "dev-0a1b2c3d4e5f", "", "x" * 70]
near_api_bodies = st.dictionaries(
    st.sampled_from(API_KEYS) | st.text(max_size=8),
    st.sampled_from(KNOWN) | json_values | json_documents(allow_null=True),
    max_size=6,
)
# Bodies the routes expect, then one field replaced, deleted or added.
settings_change_bodies = st.fixed_dictionaries(
    {
        "change_id": st.text(min_size=1, max_size=70),
        "kind": st.sampled_from(["preferences", "device_settings"]),
        "account_id": st.integers(0, 3),
        "device_id": st.sampled_from(KNOWN),
        "patch": json_documents(allow_null=True) | json_objects,
        "version": st.integers(1, 5),
        "origin": st.sampled_from(["web", "cli", "device"]),
        "made_at_s": st.floats(0, 2e9),
    }
)
control_settings_bodies = st.fixed_dictionaries(
    {
        "account": st.sampled_from(KNOWN),
        "device_id": st.sampled_from(KNOWN),
        "changes": json_documents(allow_null=True),
    }
)
shaped_bodies = (settings_change_bodies | control_settings_bodies).flatmap(mutated)
bodies = st.one_of(
    near_api_bodies.map(lambda d: (dumps(d), "application/json")),
    shaped_bodies.map(lambda d: (dumps(d), "application/json")),
    raw_payloads.map(lambda b: (b, "application/json")),
    deep_nesting.map(lambda b: (b, "application/json")),
    st.binary(max_size=100).map(lambda b: (b, "text/plain")),
    st.just((b"", None)),
)
segments = st.sampled_from(KNOWN) | st.integers().map(str) | big_integers.map(str) | st.text(max_size=20)
queries = st.dictionaries(st.sampled_from(["after", "limit", "account", "json", "n"]), segments, max_size=3)
METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH"]


def api_calls(app: Flask, prefix: str) -> st.SearchStrategy[tuple[str, str]]:
    """(method, path) for every route of `app` under `prefix`, with generated
    path parameters, mostly with a method the route takes; and paths that lead
    nowhere."""
    rules = sorted(
        ((rule.rule, sorted(rule.methods - {"HEAD", "OPTIONS"})) for rule in app.url_map.iter_rules()),
    )
    rules = [(rule, methods) for rule, methods in rules if rule.startswith(prefix)]
    assert rules, f"no routes under {prefix}"

    def fill(rule: str, values: list[str]) -> str:
        parts = re.split(r"<[^>]+>", rule)
        path = parts[0]
        for value, part in zip(values, parts[1:], strict=False):
            path += quote(value, safe="") + part
        return path

    @st.composite
    def calls(draw: st.DrawFn) -> tuple[str, str]:
        rule, methods = draw(st.sampled_from(rules))
        method = draw(st.integers(0, 4).flatmap(lambda n: st.sampled_from(METHODS if n == 0 else methods)))
        return method, fill(rule, draw(st.lists(segments, min_size=3, max_size=3)))

    nowhere = st.tuples(st.sampled_from(METHODS), st.text(max_size=20).map(lambda s: f"{prefix}{quote(s)}"))
    return st.integers(0, 9).flatmap(lambda n: nowhere if n == 0 else calls())


def assert_json_answer(response: TestResponse, what: str) -> dict[str, Any] | None:
    """No 5xx but 503 (the broker did not answer), and every 4xx is a JSON error."""
    assert response.status_code < 500 or response.status_code == 503, (what, response.status_code)
    if response.status_code < 400:
        return None
    assert response.is_json, (what, response.status_code, response.get_data(as_text=True)[:200])
    body = response.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], (what, body)
    assert isinstance(body.get("message"), str), (what, body)
    return body


def send(
    client: FlaskClient,
    method: str,
    path: str,
    body: tuple[bytes, str | None],
    query: dict[str, str],
    **kw: Any,
) -> TestResponse:
    data, content_type = body
    return client.open(path, method=method, data=data, content_type=content_type, query_string=query, **kw)


API_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SETTINGS_ERRORS = PROTOCOL_CODES | {
    "bad_request",
    "unknown_account",
    "unknown_device",
    "request_entity_too_large",
}


@pytest.fixture
def control(hub: Hub) -> FlaskClient:
    if hub.accounts.find("alice") is None:
        hub.accounts.create("alice", "correct horse battery")
    app = create_control_app(
        links=hub.links, accounts=hub.accounts, settings=hub.settings, activity=hub.activity
    )
    return app.test_client()


@API_SETTINGS
@given(data=st.data(), body=bodies, query=queries)
def test_the_control_api_answers_any_body_with_a_json_error(
    control: FlaskClient,
    data: st.DataObject,
    body: tuple[bytes, str | None],
    query: dict[str, str],
) -> None:
    method, path = data.draw(api_calls(control.application, "/v1/"))
    answer = assert_json_answer(send(control, method, path, body, query), f"{method} {path}")
    if answer is not None and method == "POST" and path in ("/v1/settings/account", "/v1/settings/device"):
        # A refused settings change says which protocol rule it broke.
        assert answer["error"] in SETTINGS_ERRORS, answer


@pytest.fixture
def account_api(tmp_path: Path) -> Iterator[tuple[FlaskClient, str, AccountService]]:
    service = AccountService(make_engine(f"sqlite:///{tmp_path}/accounts.db"), time.time)
    service.create("alice", "correct horse battery")
    token = secrets.token_urlsafe(32)
    yield create_account_api(service, token=token).test_client(), token, service


def assert_strict_json(document: object) -> None:
    """What was stored is JSON every parser reads: no NaN, no Infinity."""
    json.dumps(document, allow_nan=False)


@API_SETTINGS
@given(data=st.data(), body=bodies, query=queries, with_token=st.booleans())
def test_the_account_service_api_answers_any_body_with_a_json_error(
    account_api: tuple[FlaskClient, str, AccountService],
    data: st.DataObject,
    body: tuple[bytes, str | None],
    query: dict[str, str],
    with_token: bool,
) -> None:
    client, token, service = account_api
    method, path = data.draw(api_calls(client.application, "/v1/"))
    headers = {"Authorization": f"Bearer {token}"} if with_token else {}
    response = send(client, method, path, body, query, headers=headers)
    assert_json_answer(response, f"{method} {path}")
    if not with_token and path != "/v1/health":
        assert response.status_code == 401
    for account_id in range(4):
        assert_strict_json(service.preferences(account_id).document)
    for device_id in KNOWN:
        assert_strict_json(service.device_settings(device_id).document)
    for logged in service.changes(0, 1000):
        assert_strict_json(logged.change.to_json())


hostile_bodies = deep_nesting | long_numbers | constants | truncated | st.binary(max_size=100)


@API_SETTINGS
@given(data=st.data(), body=hostile_bodies)
def test_bodies_that_break_json_parsers_are_a_bad_request(
    control: FlaskClient,
    account_api: tuple[FlaskClient, str, AccountService],
    data: st.DataObject,
    body: bytes,
) -> None:
    account_client, token, _ = account_api
    client, headers = data.draw(
        st.sampled_from([(control, {}), (account_client, {"Authorization": f"Bearer {token}"})])
    )
    rules = [r for r in client.application.url_map.iter_rules() if "POST" in r.methods and "<" not in r.rule]
    path = data.draw(st.sampled_from(sorted(r.rule for r in rules)))
    response = client.post(path, data=body, content_type="application/json", headers=headers)
    assert assert_json_answer(response, f"POST {path}") is not None
    assert response.status_code in (400, 413), response.get_json()


@pytest.fixture
def pages(hub: Hub) -> tuple[FlaskClient, str]:
    """A signed-in client of the pages, and its CSRF token for the X-CSRFToken header."""
    if hub.accounts.find("alice") is None:
        hub.accounts.create("alice", "correct horse battery")
    app = hub_pages(hub, WebConfig(secret_key="test", testing=True))
    client = app.test_client()
    form = client.get("/login")
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', form.get_data(as_text=True))
    assert csrf
    signed_in = client.post(
        "/login", data={"csrf_token": csrf.group(1), "name": "alice", "password": "correct horse battery"}
    )
    assert signed_in.status_code == 302
    return client, csrf.group(1)


@API_SETTINGS
@given(
    data=st.data(),
    body=bodies,
    query=queries,
    with_csrf=st.booleans(),
    signed_in=st.booleans(),
)
def test_the_pages_api_answers_any_body_with_a_json_error(
    hub: Hub,
    pages: tuple[FlaskClient, str],
    data: st.DataObject,
    body: tuple[bytes, str | None],
    query: dict[str, str],
    with_csrf: bool,
    signed_in: bool,
) -> None:
    client, csrf = pages
    if not signed_in:
        client = client.application.test_client()
    method, path = data.draw(api_calls(client.application, "/api/v1/"))
    headers = {"X-CSRFToken": csrf} if with_csrf else {}
    assert_json_answer(send(client, method, path, body, query, headers=headers), f"{method} {path}")


@API_SETTINGS
@given(change=settings_change_bodies.flatmap(lambda body: st.just(body) | mutated(body)))
def test_the_account_service_stores_only_sound_changes(
    account_api: tuple[FlaskClient, str, AccountService], change: dict[str, Any]
) -> None:
    client, token, service = account_api
    response = client.post("/v1/changes", json=change, headers={"Authorization": f"Bearer {token}"})
    assert_json_answer(response, "POST /v1/changes")
    assert response.status_code in (200, 400), response.get_json()
    for account_id in range(4):
        assert_strict_json(service.preferences(account_id).document)
    for logged in service.changes(0, 1000):
        assert_strict_json(logged.change.to_json())


@API_SETTINGS
@given(
    body=control_settings_bodies.flatmap(lambda body: st.just(body) | mutated(body)),
    route=st.sampled_from(["/v1/settings/account", "/v1/settings/device"]),
    patch=st.none() | json_objects,
)
def test_the_control_api_stores_only_sound_settings(
    hub: Hub, control: FlaskClient, body: dict[str, Any], route: str, patch: dict[str, Any] | None
) -> None:
    if patch is not None:
        body = body | {"account": "alice", "changes": patch}
    response = control.post(route, json=body)
    answer = assert_json_answer(response, f"POST {route}")
    if answer is not None:
        assert answer["error"] in SETTINGS_ERRORS, answer
    alice = hub.accounts.find("alice")
    assert alice is not None
    document = hub.settings.preferences(alice.id).document
    assert_strict_json(document)
    validate_document(document)  # the limits hold for what was stored


# --- a running hub, over a real broker ------------------------------------------------

LAMP = DeviceInfo(name="Kitchen Lamp", model="LH-Lamp 2", address="192.168.1.42")
BURST_SETTINGS = settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)


def link_one(hub: Hub, port: int) -> tuple[str, MqttCredentials]:
    """A device linked the way firmware does it, to check the hub still does that."""
    device = BootstrapDevice(port, LAMP)
    try:
        pending = device.request()
        account = hub.accounts.find("alice") or hub.accounts.create("alice", "correct horse battery")
        linked = hub.links.approve(pending.user_code, account.id)
        approved = device.wait_reply()
        assert isinstance(approved, ApprovedReply) and approved.device_id == linked.device_id
        return linked.device_id, device.credentials(approved)
    finally:
        device.close()


@BURST_SETTINGS
@given(burst=st.lists(raw_payloads | near_valid_link_requests(), min_size=12, max_size=12))
def test_the_hub_answers_garbage_link_requests_and_still_links(
    hub: Hub, broker: RunningBroker, burst: list[bytes]
) -> None:
    sender = bootstrap_client(broker.port)
    quiet = bootstrap_client(broker.port, mqtt5=False)  # MQTT 3.1.1: no response topic to answer on
    try:
        reply_to = new_reply_topic()
        assert sender.subscribe(reply_to)
        for payload in burst:
            if len(payload) > MAX_PACKET_BYTES - 1024:
                continue  # the broker disconnects its sender (tests/test_bootstrap_flood.py)
            expected = protocol.parse_link_request(payload, reply_to, client_id=sender.client_id)
            assert sender.publish(sender.request_topic, payload, response_topic=reply_to)
            if not payload or len(payload) > protocol.MAX_LINK_REQUEST_BYTES:
                # Dropped unanswered (docs/protocol.md check 0a); were it answered, that
                # answer would come before the next one and fail the checks below.
                quiet.client.publish(quiet.request_topic, payload, qos=1)
                continue
            answer = protocol.parse_link_reply(sender.next_message(10).payload)
            if isinstance(expected, Rejection):
                assert isinstance(answer, ErrorReply) and answer.error == expected.error, (payload, answer)
                assert answer.error_description
            else:  # a request after all: a code, or told to slow down
                assert isinstance(answer, PendingReply | ErrorReply), answer
            quiet.client.publish(quiet.request_topic, payload, qos=1)
        # Last, a request that is answered: nothing unanswered above may come before it.
        assert sender.publish(sender.request_topic, b"not json", response_topic=reply_to)
        last = protocol.parse_link_reply(sender.next_message(10).payload)
        assert isinstance(last, ErrorReply) and last.error == ErrorCode.INVALID_REQUEST, last
        assert sender.messages.empty()
    finally:
        sender.close()
        quiet.close()
    link_one(hub, broker.port)


@pytest.fixture
def hub(make_hub: HubFactory) -> Hub:
    """The per-device limits (tests/test_device_limits.py) out of the way: the
    bursts below send far more than a device may, to check what each answer says."""
    return make_hub(
        limits=LimitsPolicy(
            device_settings_sets="1000000 per minute",
            device_reports="1000000 per minute",
            device_settings_gets="1000000 per minute",
            device_status="1000000 per minute",
        )
    )


@pytest.fixture
def linked_device(hub: Hub, broker: RunningBroker) -> Iterator[tuple[str, RawClient]]:
    device_id, credentials = link_one(hub, broker.port)
    client = RawClient(
        broker.port, credentials.username, credentials.password, client_id=credentials.client_id
    )
    assert client.subscribe(protocol.device_topic(device_id, protocol.DEVICE_REPLY))
    assert client.subscribe(protocol.device_topic(device_id, protocol.SETTINGS_DESIRED))
    yield device_id, client
    client.close()


@BURST_SETTINGS
@given(
    burst=st.lists(
        st.tuples(st.sampled_from([*protocol.DEVICE_INBOUND, "status"]), raw_payloads)
        | near_valid_settings_messages(),
        min_size=12,
        max_size=12,
    )
)
# Deeper nesting than fits in the broker's largest packet (hypothesis drew one in a full run).
@example(
    burst=[(protocol.SETTINGS_SET, b'{"a":' * 8000 + b"1" + b"}" * 8000), (protocol.SETTINGS_GET, b"{}")]
)
def test_the_hub_answers_garbage_from_a_linked_device_and_carries_on(
    hub: Hub, broker: RunningBroker, linked_device: tuple[str, RawClient], burst: list[tuple[str, bytes]]
) -> None:
    device_id, client = linked_device
    for leaf, payload in burst:
        if len(payload) > MAX_PACKET_BYTES - 1024:
            # The broker disconnects its sender, and paho sends the same QoS 1
            # publish again on reconnecting, for ever (tests/test_bootstrap_flood.py).
            continue
        expected = protocol.parse_settings_message(leaf, payload) if leaf != "status" else None
        assert client.publish(protocol.device_topic(device_id, leaf), payload)
        # A request the hub always refuses, with our id: every answer before
        # its refusal belongs to the payload above.
        sentinel = secrets.token_urlsafe(12)
        end = dumps({"v": 1, "type": "settings_set", "request_id": sentinel})
        assert client.publish(protocol.device_topic(device_id, protocol.SETTINGS_SET), end)
        answers = []
        while True:
            message = client.next_message(10)
            if message.topic != protocol.device_topic(device_id, protocol.DEVICE_REPLY):
                continue  # a desired document, after a change that was accepted
            answer = protocol.parse_device_reply(message.payload)
            assert isinstance(answer, DeviceReply), answer
            if answer.request_id == sentinel:
                assert answer.error is ErrorCode.INVALID_REQUEST
                break
            answers.append(answer)
        if isinstance(expected, Rejection):
            assert [(a.ok, a.error, a.request_id) for a in answers] == [
                (False, expected.error, expected.request_id)
            ], payload
            assert answers[0].error_description
    # And a well-formed request still gets its answer.
    assert client.publish(
        protocol.device_topic(device_id, protocol.SETTINGS_GET), protocol.encode(SettingsGet())
    )
    while True:
        message = client.next_message(10)
        if message.topic == protocol.device_topic(device_id, protocol.SETTINGS_DESIRED):
            full = protocol.parse_settings_desired(message.payload)
            if isinstance(full, SettingsDesired) and full.full:
                break
