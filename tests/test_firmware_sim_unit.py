"""Unit tests for firmware_sim that need no broker."""

from __future__ import annotations

import io
import json
import os
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import FakeClock, free_port

from firmware_sim import buttons, keys
from firmware_sim import state as state_file
from firmware_sim.cli import main, parse_hub_url
from firmware_sim.display import HumanPrinter, JsonPrinter
from firmware_sim.link import link
from firmware_sim.mqtt_client import Message
from firmware_sim.run import DeviceSession, press, run
from firmware_sim.settings import DeviceSettings, Outcome, merge_patch
from linkhub_protocol import (
    DEVICE_REPLY,
    SETTINGS_DESIRED,
    SETTINGS_SET,
    DeviceInfo,
    DeviceReply,
    ErrorCode,
    LinkRequest,
    MqttCredentials,
    SettingsDesired,
    SettingsSet,
    device_topic,
    encode,
    parse_settings_message,
    reply_topic,
)
from linkhub_protocol.values import parse_value

DEVICE = DeviceInfo(name="Kitchen lamp", model="LH-1")



def linked_state() -> state_file.DeviceState:
    return state_file.DeviceState(
        name="Kitchen lamp",
        model="LH-1",
        device_id="dev-abc123",
        mqtt=MqttCredentials("127.0.0.1", 1883, "dev-abc123", "dev-abc123", "s3cret"),
    )


# --- state file -------------------------------------------------------------------
def test_state_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    st = linked_state()
    state_file.save(path, st)
    assert state_file.load(path) == st
    assert json.loads(path.read_text())["mqtt"]["password"] == "s3cret"

    pending = state_file.DeviceState(name="n", model="m", pending=state_file.Pending("r" * 32, "t" * 32))
    state_file.save(path, pending)
    assert state_file.load(path) == pending
    assert json.loads(path.read_text()) == {
        "name": "n",
        "model": "m",
        "pending": {"request_id": "r" * 32, "reply_token": "t" * 32},
    }


def test_state_missing_file_is_empty(tmp_path: Path) -> None:
    st = state_file.load(tmp_path / "nope.json")
    assert st == state_file.DeviceState()
    assert not st.linked


@pytest.mark.parametrize("text", ["not json", "[]", '{"mqtt": {"host": "h"}}', '{"name": 3}'])
def test_state_malformed_raises(tmp_path: Path, text: str) -> None:
    path = tmp_path / "device.json"
    path.write_text(text)
    with pytest.raises(state_file.StateError):
        state_file.load(path)


def test_state_file_is_private_and_no_temp_left(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    path.write_text("{}")
    path.chmod(0o644)
    state_file.save(path, linked_state())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.json"]


def test_state_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "device.json"
    state_file.save(path, linked_state())
    before = path.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        state_file.save(path, state_file.DeviceState(name="other", model="m"))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device.json"]


# --- --hub URL --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("mqtt://127.0.0.1:1883", ("127.0.0.1", 1883, False)),
        ("mqtt://linkhub.local:18830", ("linkhub.local", 18830, False)),
        ("mqtt://linkhub.local", ("linkhub.local", 1884, False)),  # the hub's own broker by default
        ("mqtt://[::1]:1884", ("::1", 1884, False)),
        ("mqtt://hub:1883/", ("hub", 1883, False)),
        # As `linkhub run --mqtt-tls-port` prints its TLS listener.
        ("mqtts://127.0.0.1:18883", ("127.0.0.1", 18883, True)),
        ("mqtts://linkhub.local", ("linkhub.local", 8883, True)),
    ],
)
def test_parse_hub_url(url: str, expected: tuple[str, int, bool]) -> None:
    assert parse_hub_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:1883",
        "http://hub:1883",
        "ssl://hub:8883",
        "mqtt://:1883",
        "mqtt://hub:99999",
        "mqtt://hub:port",
        "mqtt://hub:0",
        "mqtt://user:pw@hub:1883",
        "mqtt://hub:1883/path",
        "mqtt://hub:1883?x=1",
        "",
    ],
)
def test_parse_hub_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="bad hub URL"):
        parse_hub_url(url)


def test_cli_bad_hub_url_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["link", "--name", "n", "--model", "m", "--state", str(tmp_path / "s.json")]
    rc = main([*argv, "--hub", "http://hub:1883"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--hub" in err and "mqtt://" in err
    assert not (tmp_path / "s.json").exists()


def test_an_mqtts_hub_url_needs_the_hubs_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["link", "--name", "n", "--model", "m", "--state", str(tmp_path / "s.json")]
    assert main([*argv, "--hub", "mqtts://127.0.0.1:8883"]) == 2
    err = capsys.readouterr().err
    assert "--hub mqtts://... needs --cafile FILE" in err and "/ca.pem" in err
    assert not (tmp_path / "s.json").exists()
    fleet = ["fleet", "--count", "1", "--state-dir", str(tmp_path / "fleet"), "--json"]
    assert main([*fleet, "--hub", "mqtts://127.0.0.1:8883"]) == 2
    assert "plain MQTT only" in capsys.readouterr().out


# --- link without a broker ----------------------------------------------------------
def test_link_keeps_trying_an_unreachable_broker_until_its_time_is_up(tmp_path: Path) -> None:
    """docs/protocol.md, "Connecting": no broker on the first connect is tried again
    with backoff, not given up at once; when the attempt's time is up, one error."""
    events: list[dict[str, Any]] = []
    path = tmp_path / "device.json"
    port = free_port()
    started = time.monotonic()
    rc = link("127.0.0.1", port, DEVICE, path, mqtt5=True, timeout_s=2, on_event=events.append)
    assert rc == 1
    assert 0.25 <= time.monotonic() - started < 10  # retried (a first wait of 0.25-0.5 s), then gave up
    assert len(events) == 1
    assert events[0]["event"] == "error"
    assert events[0]["error"] == "broker_unreachable"
    assert f"127.0.0.1:{port}" in events[0]["error_description"]


def test_link_keeps_the_same_request_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    port = free_port()
    for mqtt5 in (True, False):
        assert link("127.0.0.1", port, DEVICE, path, mqtt5=mqtt5, timeout_s=0.1, on_event=lambda e: None) == 1
        st = state_file.load(path)
        assert st.pending is not None
        if mqtt5:
            first = st.pending
        else:
            assert st.pending == first
    assert first is not None
    # What gets resent is a valid request with >= 128-bit secrets, and the same key.
    assert first.private_key is not None
    request = LinkRequest(
        first.request_id, reply_topic(first.reply_token), DEVICE, keys.public_key(first.private_key)
    )
    assert len(first.reply_token) >= 22 and len(request.request_id) >= 22
    assert first.request_id != first.reply_token
    assert (st.name, st.model) == ("Kitchen lamp", "LH-1")


def test_link_key_is_saved_privately_and_an_attempt_without_one_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    # A state file from before sealed credentials: its attempt has no key to open an answer with.
    state_file.save(path, state_file.DeviceState(pending=state_file.Pending("r" * 32, "t" * 32)))
    assert (
        link("127.0.0.1", free_port(), DEVICE, path, mqtt5=True, timeout_s=0.1, on_event=lambda e: None) == 1
    )
    st = state_file.load(path)
    assert st.pending is not None and st.pending.request_id != "r" * 32
    assert st.pending.private_key is not None and len(keys.public_key(st.pending.private_key)) == 44
    saved = json.loads(path.read_text())["pending"]
    assert saved["private_key"] == st.pending.private_key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert st.pending.private_key not in repr(st)  # never in a log line


def test_link_refuses_to_overwrite_credentials(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    state_file.save(path, linked_state())
    events: list[dict[str, Any]] = []
    rc = link("127.0.0.1", free_port(), DEVICE, path, mqtt5=True, on_event=events.append)
    assert rc == 1
    assert [e["error"] for e in events] == ["already_linked_locally"]
    assert state_file.load(path) == linked_state()


def test_cli_link_json_prints_one_object_per_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["link", "--name", "n", "--model", "m", "--state", str(tmp_path / "s.json")]
    rc = main(
        [*argv, "--hub", f"mqtt://127.0.0.1:{free_port()}", "--json", "--mqtt", "3.1.1", "--timeout", "0.1"]
    )
    assert rc == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "error" and event["error"] == "broker_unreachable"


# --- run without a broker ---------------------------------------------------------
def test_run_without_credentials(tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    rc = run(tmp_path / "none.json", on_event=events.append, stop=threading.Event())
    assert rc == 1
    assert [e["error"] for e in events] == ["not_linked"]


def test_run_unreachable_broker(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    st = linked_state()
    assert st.mqtt is not None
    port = free_port()
    state_file.save(path, state_file.DeviceState(device_id=st.device_id, mqtt=st.mqtt))
    data = json.loads(path.read_text())
    data["mqtt"]["port"] = port
    path.write_text(json.dumps(data))
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    rc = run(path, on_event=events.append, stop=threading.Event(), connect_retry_s=1.0)
    assert rc == 1
    assert time.monotonic() - started >= 0.25  # tried again at least once
    assert [e["error"] for e in events] == ["broker_unreachable"]


# --- output -------------------------------------------------------------------------
CODE_EVENT = {
    "event": "code",
    "user_code": "WDJB-MJHT",
    "verification_uri": "http://linkhub.local/link",
    "verification_uri_complete": "http://linkhub.local/link?code=WDJB-MJHT",
    "expires_in": 600,
}


def test_json_printer() -> None:
    out = io.StringIO()
    printer = JsonPrinter(out)
    printer(CODE_EVENT)
    printer({"event": "linked", "device_id": "dev-abc123"})
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [
        CODE_EVENT,
        {"event": "linked", "device_id": "dev-abc123"},
    ]


def test_human_printer_shows_code_url_and_qr() -> None:
    out, err = io.StringIO(), io.StringIO()
    HumanPrinter(out, err)(CODE_EVENT)
    text = out.getvalue()
    assert "W D J B - M J H T" in text
    assert "http://linkhub.local/link" in text
    assert "10 minutes" in text
    assert "█" in text or "▀" in text  # the QR code
    HumanPrinter(out, err)({"event": "error", "error": "timeout", "error_description": "x"})
    assert "timeout" in err.getvalue()


# --- settings (pure) ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        # RFC 7386 appendix A, the cases that fit a top-level object
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({"a": "foo"}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        ({"a": {"x": 1}}, {}, {"a": {"x": 1}}),
    ],
)
def test_merge_patch_rfc7386(doc: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]) -> None:
    before_doc, before_patch = json.dumps(doc), json.dumps(patch)
    assert merge_patch(doc, patch) == expected
    assert (json.dumps(doc), json.dumps(patch)) == (before_doc, before_patch)  # inputs untouched


def test_full_document_replaces_everything() -> None:
    s = DeviceSettings(desired={"old": 1, "theme": "light"}, applied_version=3)
    action = s.on_desired(SettingsDesired(7, {"theme": "dark"}, full=True))
    assert action.outcome is Outcome.APPLIED and action.version == 7
    assert (s.desired, s.applied_version) == ({"theme": "dark"}, 7)
    # Without a change since the last get, the hub's full document wins even if older.
    s.get_sent()
    assert s.on_desired(SettingsDesired(2, {"a": 1}, full=True)).outcome is Outcome.APPLIED
    assert (s.desired, s.applied_version) == ({"a": 1}, 2)


def test_next_change_is_merged() -> None:
    s = DeviceSettings(desired={"theme": "light", "ui": {"size": 1, "font": "x"}}, applied_version=4)
    action = s.on_desired(SettingsDesired(5, {"theme": "dark", "ui": {"font": None}}, full=False))
    assert action.outcome is Outcome.APPLIED and action.version == 5
    assert s.desired == {"theme": "dark", "ui": {"size": 1}}


@pytest.mark.parametrize("version", [1, 3, 4])
def test_stale_change_is_dropped(version: int) -> None:
    s = DeviceSettings(desired={"theme": "light"}, applied_version=4)
    action = s.on_desired(SettingsDesired(version, {"theme": "dark"}, full=False))
    assert action.outcome is Outcome.STALE and action.version == 4
    assert (s.desired, s.applied_version) == ({"theme": "light"}, 4)


def test_gap_asks_for_the_full_document() -> None:
    s = DeviceSettings(desired={"theme": "light"}, applied_version=4)
    action = s.on_desired(SettingsDesired(6, {"theme": "dark"}, full=False))
    assert action.outcome is Outcome.REFETCH and action.version == 4
    assert (s.desired, s.applied_version) == ({"theme": "light"}, 4)
    # ... and the full document repairs it.
    s.get_sent()
    assert s.on_desired(SettingsDesired(6, {"theme": "dark", "x": 1}, full=True)).outcome is Outcome.APPLIED
    assert (s.desired, s.applied_version) == ({"theme": "dark", "x": 1}, 6)


def test_full_document_older_than_a_change_since_the_get_is_dropped() -> None:
    """The hub answers a get outside its lock: a change can overtake the answer."""
    s = DeviceSettings(desired={"a": 1}, applied_version=7)
    s.get_sent()
    assert s.on_desired(SettingsDesired(8, {"a": 2}, full=False)).outcome is Outcome.APPLIED
    assert s.on_desired(SettingsDesired(7, {"a": 1}, full=True)).outcome is Outcome.STALE
    assert (s.desired, s.applied_version) == ({"a": 2}, 8)


def test_reported_includes_unacknowledged_local_changes() -> None:
    s = DeviceSettings(desired={"theme": "dark", "volume": 3}, applied_version=2)
    s.begin_local("r1", {"volume": 7})
    s.begin_local("r2", {"theme": None})
    assert s.reported() == {"volume": 7}
    assert s.desired == {"theme": "dark", "volume": 3}
    assert s.end_local("r2") and not s.end_local("r2")
    assert s.reported() == {"theme": "dark", "volume": 7}
    s.end_local("r1")
    assert s.reported() == s.desired


def test_state_keeps_settings(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    st = replace(linked_state(), settings=state_file.SavedSettings({"theme": "dark"}, 5))
    state_file.save(path, st)
    assert state_file.load(path) == st
    assert json.loads(path.read_text())["settings"] == {"desired": {"theme": "dark"}, "version": 5}
    path.write_text(json.dumps({"settings": {"desired": [], "version": 1}}))
    with pytest.raises(state_file.StateError):
        state_file.load(path)


# --- set: values, spool files -----------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("7", 7),
        ("-1.5", -1.5),
        ("true", True),
        ("null", None),
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("dark", "dark"),
        ('"7"', "7"),
        ("", ""),
        ("NaN", "NaN"),
        ("1e999", "1e999"),
        ("{broken", "{broken"),
    ],
)
def test_set_value_parsing(text: str, value: Any) -> None:
    assert parse_value(text) == value
    assert type(parse_value(text)) is type(value)


def test_set_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = str(tmp_path / "s.json")
    assert main(["set", "--state", state]) == 2
    assert main(["set", "--state", state, "novalue"]) == 2
    assert main(["set", "--state", state, "=3"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_set_without_credentials(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["set", "--state", str(tmp_path / "none.json"), "volume=7", "--json"]) == 1
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["error"] == "not_linked"


def test_set_unreachable_broker_withdraws_the_change(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    st = linked_state()
    assert st.mqtt is not None
    state_file.save(path, replace(st, mqtt=replace(st.mqtt, port=free_port())))
    events: list[dict[str, Any]] = []
    assert press(path, {"volume": 7}, on_event=events.append) == 1
    assert [e["error"] for e in events] == ["broker_unreachable"]
    assert buttons.take_request(path) is None  # never sent later by a `run`


def test_spool_is_first_in_first_out_and_withdrawable(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    for n in range(3):
        buttons.append_request(path, buttons.ButtonRequest(f"r{n}", {"n": n}, 1.0))
    with buttons.spool_path(path).open("ab") as f:
        f.write(b"garbage\n")
    assert buttons.withdraw_request(path, "r1")
    assert not buttons.withdraw_request(path, "r1")
    taken = [buttons.take_request(path) for _ in range(3)]
    assert [t.request_id if t else None for t in taken] == ["r0", "r2", None]


def test_done_file_finds_outcomes_and_stays_small(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    assert buttons.find_outcome(path, "x") is None
    for n in range(2000):
        buttons.record_outcome(path, {"request_id": f"r{n}", "ok": True, "version": n})
    assert buttons.find_outcome(path, "r1999") == {"request_id": "r1999", "ok": True, "version": 1999}
    assert buttons.done_path(path).stat().st_size <= buttons.MAX_DONE_BYTES


def test_device_lock_is_exclusive_and_names_its_holder(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    first, second = buttons.DeviceLock(path), buttons.DeviceLock(path)
    assert first.acquire("run")
    assert not second.acquire("set")
    assert second.holder() == (os.getpid(), "run")
    first.release()
    assert second.acquire("set")
    second.release()


def test_run_refuses_to_run_twice(tmp_path: Path) -> None:
    path = tmp_path / "device.json"
    state_file.save(path, linked_state())
    lock = buttons.DeviceLock(path)
    assert lock.acquire("run")
    try:
        events: list[dict[str, Any]] = []
        assert run(path, on_event=events.append, stop=threading.Event()) == 1
        assert [e["error"] for e in events] == ["already_running"]
    finally:
        lock.release()


def test_human_printer_settings_events() -> None:
    out, err = io.StringIO(), io.StringIO()
    printer = HumanPrinter(out, err)
    printer({"event": "settings", "desired": {"theme": "dark", "volume": 7}, "version": 4})
    printer({"event": "set_ok", "request_id": "abc", "version": 5})
    printer({"event": "error", "error": "not_owned", "error_description": "theme: account-wide"})
    text = out.getvalue()
    assert 'version 4: theme="dark", volume=7' in text
    assert "version 5" in text
    assert "not_owned" in err.getvalue()


@pytest.mark.parametrize("nesting", ["[", "{\"a\":"])
def test_a_value_too_deep_to_read_is_refused_in_plain_words(
    nesting: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nested beyond what the JSON parser can read: a usage error naming the key,
    not a RecursionError's traceback (and not stored as a string)."""
    assert main(["set", "--state", "unused.json", "k=" + nesting * 100_000]) == 2
    assert "k: the value nests too deeply to read" in capsys.readouterr().err


class _QuietClient:
    """The broker side of a DeviceSession, kept in memory: what it published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    def subscribe(self, topic: str, qos: int = 1, timeout: float | None = None) -> None:
        del topic, qos, timeout

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                timeout: float | None = None) -> None:  # fmt: skip
        del qos, retain, timeout
        self.published.append((topic, payload))

    def is_connected(self) -> bool:
        return True

    def sets(self) -> list[SettingsSet]:
        return [
            message
            for topic, payload in self.published
            if topic.endswith("/settings/set")
            and isinstance(message := parse_settings_message(SETTINGS_SET, payload), SettingsSet)
        ]


def _synced_session(
    tmp_path: Path, clock: FakeClock
) -> tuple[DeviceSession, _QuietClient, list[dict[str, Any]]]:
    client = _QuietClient()
    events: list[dict[str, Any]] = []
    st = linked_state()
    assert st.device_id is not None
    path = tmp_path / "lamp.json"
    state_file.save(path, st)
    session = DeviceSession(
        client,  # type: ignore[arg-type]
        st.device_id,
        path,
        st,
        on_event=events.append,
        announce_status=False,
        clock=clock,
    )
    session.start()
    desired = encode(SettingsDesired(version=3, desired={"volume": 1}, full=True))
    session.handle(Message(device_topic(st.device_id, SETTINGS_DESIRED), desired, retain=False))
    assert session.synced
    return session, client, events


def _reply(session: DeviceSession, reply: DeviceReply) -> None:
    session.handle(Message(device_topic(session.device_id, DEVICE_REPLY), encode(reply), retain=False))


@pytest.mark.parametrize(
    ("error", "retry_after", "wait_s"),
    [
        (ErrorCode.SLOW_DOWN, 42, 42),
        (ErrorCode.INSUFFICIENT_STORAGE, None, 60),
        (ErrorCode.SERVER_ERROR, None, 5),
    ],
)
def test_a_change_refused_for_now_is_sent_again_after_the_wait(
    tmp_path: Path, error: ErrorCode, retry_after: int | None, wait_s: int
) -> None:
    """docs/protocol.md section 12.2: after slow_down (retry_after), insufficient_storage
    (a minute) or server_error the device keeps the change and sends it again."""
    clock = FakeClock()
    session, client, events = _synced_session(tmp_path, clock)
    buttons.append_request(session.state_path, buttons.ButtonRequest("press-1", {"volume": 7}, time.time()))
    clock.advance(1)
    session.handle(None)
    assert [m.request_id for m in client.sets()] == ["press-1"]
    _reply(session, DeviceReply("press-1", ok=False, error=error, retry_after=retry_after))
    assert events[-1] == {
        "event": "waiting", "request_id": "press-1", "error": str(error),
        "error_description": "", "retry_after": wait_s,
    }  # fmt: skip
    clock.advance(wait_s - 0.5)
    session.handle(None)
    assert len(client.sets()) == 1  # not before the wait
    clock.advance(1)
    session.handle(None)
    again = client.sets()
    assert [m.request_id for m in again] == ["press-1", "press-1"]
    assert again[1].changes == {"volume": 7} and again[1].base_version == 3
    _reply(session, DeviceReply("press-1", ok=True, version=4))
    assert events[-1]["event"] == "set_ok" and session.finished["press-1"]["ok"] is True


def test_a_refusal_whose_wait_outlasts_the_change_is_its_outcome(tmp_path: Path) -> None:
    clock = FakeClock()
    session, _client, events = _synced_session(tmp_path, clock)
    buttons.append_request(session.state_path, buttons.ButtonRequest("press-1", {"volume": 7}, time.time()))
    clock.advance(1)
    session.handle(None)
    _reply(session, DeviceReply("press-1", ok=False, error=ErrorCode.SLOW_DOWN, retry_after=3600))
    assert session.finished["press-1"]["error"] == "slow_down"
    assert events[-1]["event"] == "error" and session.in_flight is None


def test_a_final_refusal_is_not_sent_again(tmp_path: Path) -> None:
    clock = FakeClock()
    session, client, _events = _synced_session(tmp_path, clock)
    buttons.append_request(session.state_path, buttons.ButtonRequest("press-1", {"volume": 7}, time.time()))
    clock.advance(1)
    session.handle(None)
    _reply(session, DeviceReply("press-1", ok=False, error=ErrorCode.VERSION_CONFLICT))
    clock.advance(600)
    session.handle(None)
    assert len(client.sets()) == 1 and session.finished["press-1"]["error"] == "version_conflict"
