"""Control and format characters (Unicode Cc and Cf: ESC sequences, line breaks,
C1 controls, bidi overrides, zero-width characters) in device names and settings
keys (issue 19, item 12): refused at the protocol edge with a reason that names
the character, and shown escaped where names and keys are printed (the CLI's
tables, `settings show`) and logged."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from test_protocol import request_payload

import linkhub_protocol as protocol
from hub.core.settings_merge import SettingsError, validate_document
from linkhub import cli
from linkhub.server import escape_hidden_characters
from linkhub_protocol import DeviceInfo, ErrorCode, ProtocolError, Rejection, escape_hidden, hidden_character

HOSTILE = {
    "ESC sequence": ("Lamp\x1b[2J\x1b[31mOWNED", "U+001B"),
    "line break": ("Lamp\n2026-12-03 INFO hub: fake line", "U+000A"),
    "C1 control (NEL)": ("Lamp\x85x", "U+0085"),
    "bidi override": ("Lamp\u202egnp.exe", "U+202E"),
    "zero-width space": ("Ki\u200btchen", "U+200B"),
    "byte order mark": ("\ufeffLamp", "U+FEFF"),
}


@pytest.mark.parametrize(("name", "char"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_device_name_with_a_hidden_character_is_refused_with_a_reason(name: str, char: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        DeviceInfo(name, "LMP-1")
    assert refused.value.code is ErrorCode.INVALID_REQUEST and char in refused.value.description
    parsed = protocol.parse_link_request(request_payload(device={"name": name, "model": "LMP-1"}))
    assert isinstance(parsed, Rejection) and char in parsed.description
    with pytest.raises(ProtocolError):
        DeviceInfo("Kitchen Lamp", name)  # the model too


@pytest.mark.parametrize("name", ["Küche Lämpchen", "Лампа", "客厅灯", "Lamp 💡", "Lamp (2nd floor) #3"])
def test_ordinary_names_in_any_script_are_fine(name: str) -> None:
    assert DeviceInfo(name, "LMP-1").name == name
    assert hidden_character(name) is None and escape_hidden(name) == name


@pytest.mark.parametrize(("key", "char"), HOSTILE.values(), ids=HOSTILE.keys())
def test_a_settings_key_with_a_hidden_character_is_refused(key: str, char: str) -> None:
    for document in ({key: 1}, {"quiet_hours": {key: "22:00"}}):
        with pytest.raises(SettingsError) as refused:
            validate_document(document)
        assert refused.value.code == "invalid_request" and char in refused.value.description
        assert hidden_character(refused.value.description) is None  # the reason itself is safe to print


def test_escaped_text_shows_each_character_and_keeps_the_rest() -> None:
    assert escape_hidden("a\x1b[31mb\u202ec\u200bd\ne\x85") == "a\\x1b[31mb\\u202ec\\u200bd\\ne\\x85"


def test_cli_tables_show_hidden_characters_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    cli.print_table([("KEY", "VALUE"), ("Lamp\x1b[2J", "\u202eevil"), ("ok", "line\nbreak")])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\u202e" not in out
    assert "Lamp\\x1b[2J" in out and "\\u202eevil" in out and "line\\nbreak" in out
    assert len(out.splitlines()) == 3  # one line per row: no forged line


def test_settings_show_escapes_keys_and_values_stored_before_the_rule(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys stored before this rule are still printed safely."""
    stored = {"account": "alice", "version": 3, "document": {"a\x1b]0;pwned\x07": "x\u202ey"}}

    def call(*_args: Any, **_kwargs: Any) -> dict[str, Any]:
        return stored

    monkeypatch.setattr(cli.control_client, "call", call)
    assert cli.main(["settings", "show", "--account", "alice", "--data-dir", "/nonexistent"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "a\\x1b]0;pwned\\x07 = " in out


def test_log_lines_escape_what_devices_sent() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(escape_hidden_characters)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log = logging.getLogger("test-hidden-characters")
    log.addHandler(handler)
    try:
        log.warning("refused a name from %s: %s", "dev-1", "Lamp\nINFO hub: admin signed in\x1b[2K")
    finally:
        log.removeHandler(handler)
    written = stream.getvalue()
    assert written.count("\n") == 1 and "\x1b" not in written
    assert "Lamp\\nINFO hub: admin signed in\\x1b[2K" in written
