"""docs/protocol.md is the contract firmware authors implement without our
code: every JSON example in it must be a message linkhub_protocol's codec reads,
and encodes back to the same JSON (no field the document shows is dropped or
renamed by the hub, none the hub sends is missing from the example)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import linkhub_protocol as protocol
from linkhub_protocol import Rejection

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_FENCED_JSON = re.compile(r"^```json\n(.*?)^```", re.MULTILINE | re.DOTALL)


def examples() -> list[tuple[int, dict[str, Any]]]:
    """Every JSON object in a ```json block, with its line; a block may hold several."""
    text = DOCUMENT.read_text()
    found = []
    decoder = json.JSONDecoder()
    for block in _FENCED_JSON.finditer(text):
        line = text.count("\n", 0, block.start()) + 2
        body, at = block.group(1), 0
        while at < len(body.rstrip()):
            while body[at].isspace():
                at += 1
            obj, end = decoder.raw_decode(body, at)
            found.append((line + body.count("\n", 0, at), obj))
            at = end
    return found


def parse(obj: dict[str, Any]) -> object:
    """The codec's reading of one example, by its `type` (and status)."""
    payload = json.dumps(obj).encode()
    match obj.get("type"):
        case "link_request":
            return protocol.parse_link_request(payload)
        case "link_reply":
            return protocol.parse_link_reply(payload)
        case "link_credentials":
            return protocol.parse_link_credentials(payload)
        case "status":
            return protocol.parse_device_status(payload)
        case "settings_get":
            return protocol.parse_settings_message(protocol.SETTINGS_GET, payload)
        case "reported":
            return protocol.parse_settings_message(protocol.SETTINGS_REPORTED, payload)
        case "settings_set":
            return protocol.parse_settings_message(protocol.SETTINGS_SET, payload)
        case "desired":
            return protocol.parse_settings_desired(payload)
        case "reply":
            return protocol.parse_device_reply(payload)
        case "description":
            return protocol.parse_description(payload)
        case "state":
            return protocol.parse_state_report(payload)
        case "command":
            return protocol.parse_command(payload)
    raise AssertionError(f"docs/protocol.md shows a message of unknown type {obj.get('type')!r}")


def test_the_document_has_an_example_of_every_message_type() -> None:
    shown = {obj["type"] for _, obj in examples()}
    assert shown == {
        "link_request",
        "link_reply",
        "link_credentials",
        "status",
        "settings_get",
        "desired",
        "reported",
        "settings_set",
        "reply",
        "description",
        "state",
        "command",
    }


@pytest.mark.parametrize(("line", "example"), examples(), ids=lambda v: str(v) if isinstance(v, int) else "")
def test_every_json_example_in_the_document_is_read_and_written_back_by_the_codec(
    line: int, example: dict[str, Any]
) -> None:
    message = parse(example)
    assert not isinstance(message, Rejection), f"docs/protocol.md line {line}: {message}"
    written = json.loads(protocol.encode(message))  # type: ignore[arg-type]
    assert written == example, f"docs/protocol.md line {line}"


def test_the_document_says_it_is_the_contract() -> None:
    text = DOCUMENT.read_text()
    assert "the code is\nright" not in text and "the code is right" not in text
    assert "this document is the contract" in text
