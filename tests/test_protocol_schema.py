"""docs/protocol.schema.json, the JSON Schema firmware authors in other languages
validate with, checked against the codec (linkhub_protocol/codec.py) and the
document: every example in docs/protocol.md is valid; every message the codec
writes is valid; whatever the codec reads from near-valid input is valid too
(the schema never refuses what the hub accepts or sends); and it says no to
plain mistakes. Validated with `jsonschema` (Draft 2020-12)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, validators
from test_properties import (
    commands,
    descriptions,
    link_credentials,
    link_replies,
    link_requests,
    near_valid_link_replies,
    near_valid_link_requests,
    near_valid_settings_messages,
    settings_messages,
    state_reports,
    versions,
)
from test_protocol_document import examples

import linkhub_protocol as protocol
from linkhub_protocol import DeviceReply, DeviceStatus, ErrorCode, Rejection, SettingsDesired

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "docs" / "protocol.schema.json"
SCHEMA = json.loads(SCHEMA_FILE.read_text())
# JSON Schema's `integer` admits 1.0; the protocol's integers are written without
# a fraction (the schema's description says so), as the hub reads them.
IntegersOnly = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: type(value) is int
    ),
)
VALIDATOR = IntegersOnly(SCHEMA)


def problems(message: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path))}: {error.message}"
        for error in VALIDATOR.iter_errors(message)
    ]


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    assert [error.message for error in meta.iter_errors(SCHEMA)] == []


def test_the_schema_names_every_error_code_and_each_message_type() -> None:
    assert set(SCHEMA["$defs"]["error_code"]["enum"]) == {str(code) for code in ErrorCode}
    types = {
        d["properties"]["type"]["const"]
        for d in SCHEMA["$defs"].values()
        if "type" in d.get("properties", {})
    }
    assert types == {
        "link_request", "link_reply", "link_credentials", "status",
        "settings_get", "desired", "reported", "settings_set", "reply",
        "description", "state", "command",
    }  # fmt: skip


@pytest.mark.parametrize(("line", "example"), examples(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_every_example_in_the_document_is_valid(line: int, example: dict[str, Any]) -> None:
    assert problems(example) == [], f"docs/protocol.md line {line}"


hub_sends = (
    link_replies
    | st.builds(DeviceStatus, st.booleans())
    | st.builds(SettingsDesired, versions, st.dictionaries(st.text(max_size=8), st.integers()), st.booleans())
    | st.builds(DeviceReply, st.none() | st.text(min_size=1, max_size=128), st.just(True), version=versions)
    | st.builds(
        DeviceReply,
        st.none() | st.text(min_size=1, max_size=128),
        st.just(False),
        error=st.sampled_from(ErrorCode),
        error_description=st.text(max_size=1024),
        retry_after=st.none() | st.integers(0, 2**31 - 1),
    )
)


@given(
    message=link_requests
    | link_credentials
    | settings_messages
    | hub_sends
    | descriptions()
    | state_reports
    | commands
)
def test_every_message_the_codec_writes_is_valid(message: Any) -> None:
    assert problems(json.loads(protocol.encode(message))) == []


@given(
    near=near_valid_link_requests().map(lambda p: ("linkhub/v1/link/request/lh-boot-1", p))
    | near_valid_settings_messages().map(lambda lp: (protocol.device_topic("dev-0a1b2c", lp[0]), lp[1]))
)
def test_the_schema_and_the_hub_agree_on_what_devices_send(near: tuple[str, bytes]) -> None:
    """Near-valid input (one field changed, dropped or added) of what devices
    send: the hub reads it exactly when the schema accepts it, so a firmware
    author who validates with the schema is not refused by the hub, nor the
    other way round. (What devices read, the hub's side is stricter than the
    device's reader: an unknown error code is read as server_error, docs/protocol.md
    section 6.4, so that hubs can add codes.)"""
    topic, payload = near
    response_topic = None
    if topic.startswith("linkhub/v1/link/request/") and "reply_to" not in json.loads(payload):
        response_topic = "linkhub/v1/link/reply/" + "q" * 22
    parsed = protocol.parse(topic, payload, response_topic=response_topic)
    assert (not isinstance(parsed, Rejection)) == (problems(json.loads(payload)) == []), (payload, parsed)


@given(payload=near_valid_link_replies())
def test_what_a_device_reads_from_near_valid_replies_the_schema_accepts_once_written_again(
    payload: bytes,
) -> None:
    parsed = protocol.parse("linkhub/v1/link/reply/" + "r" * 22, payload)
    if not isinstance(parsed, Rejection):
        assert problems(json.loads(protocol.encode(parsed))) == []


@pytest.mark.parametrize(
    "mistake",
    [
        {"v": 1.5, "type": "status", "online": True},
        {"v": True, "type": "status", "online": True},
        {"v": 1, "type": "status", "online": "yes"},
        {"v": 1, "type": "settings_set", "request_id": "r", "base_version": 1, "changes": {}},
        {"v": 1, "type": "settings_set", "request_id": "r", "base_version": -1, "changes": {"a": 1}},
        {"v": 1, "type": "reply", "request_id": "r", "status": "error"},
        {
            "v": 1,
            "type": "reply",
            "request_id": "r",
            "status": "ok",
            "error": "slow_down",
            "error_description": "",
        },
        {
            "v": 1,
            "type": "link_reply",
            "status": "error",
            "request_id": None,
            "error": "teapot",
            "error_description": "",
        },
        {
            "v": 1,
            "type": "link_request",
            "request_id": "short",
            "device": {"name": "a", "model": "b"},
            "public_key": "A" * 43 + "=",
        },
        {
            "v": 1,
            "type": "link_request",
            "request_id": "r" * 16,
            "device": {"name": "lamp\u202e", "model": "b"},
            "public_key": "A" * 43 + "=",
        },
        {"v": 1, "type": "desired", "version": 2**53, "full": True, "desired": {}},
        {"v": 1, "type": "no_such_message"},
    ],
)
def test_plain_mistakes_are_refused_by_the_schema_and_by_the_codec(mistake: dict[str, Any]) -> None:
    assert problems(mistake) != []
    topics = {
        "status": protocol.device_status_topic("dev-0a1b2c"),
        "settings_set": protocol.device_topic("dev-0a1b2c", protocol.SETTINGS_SET),
        "reply": protocol.device_topic("dev-0a1b2c", protocol.DEVICE_REPLY),
        "link_reply": "linkhub/v1/link/reply/" + "r" * 22,
        "link_request": "linkhub/v1/link/request/lh-boot-1",
        "desired": protocol.device_topic("dev-0a1b2c", protocol.SETTINGS_DESIRED),
    }
    topic = topics.get(mistake["type"], "linkhub/v1/devices/dev-0a1b2c/other")
    if mistake["type"] in ("reply", "link_reply"):
        return  # what a device reads: its reader takes unknown codes as server_error (section 6.4)
    reply_to = "linkhub/v1/link/reply/" + "q" * 22
    assert isinstance(protocol.parse(topic, json.dumps(mistake).encode(), response_topic=reply_to), Rejection)
