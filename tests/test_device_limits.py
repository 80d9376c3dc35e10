"""What one linked device may send: per-device limits with a slow_down refusal
that changes nothing, refusals logged once a minute per device, server_error
when the hub fails, and the smaller settings refusals (issue 18 §2 and §6,
issue 19 item 8). The settings service on a real SQLite database with an
injected clock; no broker (tests/test_settings_bridge.py has the real one)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker
from fakes import FakeDevicePublisher
from sqlalchemy.engine import Engine
from sqlmodel import func, select
from test_settings_bridge import DeviceClient, link_devices

import linkhub_protocol as protocol
from hub.core.rate_limits import DeviceLimits, LimitsPolicy, Rate
from hub.services.activity import ActivityLog
from hub.services.settings import SettingsService
from hub.store.engine import make_engine, session_scope
from hub.store.models import ActivityEvent, Device, OutboxEntry
from linkhub_protocol import (
    DeviceReply,
    ErrorCode,
    SettingsDesired,
    SettingsGet,
    SettingsReported,
    SettingsSet,
)

DEVICE = "lamp-1"
OTHER = "lamp-2"


class Recorder(FakeDevicePublisher):
    """The broker side (tests/fakes.py), asked about this file's device by default."""

    def replies(self, device_id: str = DEVICE) -> list[DeviceReply]:
        return super().replies(device_id)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'linkhub.db'}")
    with session_scope(engine) as session:
        for device_id in (DEVICE, OTHER):
            session.add(
                Device(
                    device_id=device_id,
                    account_id=1,
                    name=device_id,
                    model="m",
                    request_id=f"request-{device_id}-000000",
                    linked_at_s=0.0,
                    confirmed=True,
                )
            )
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def service(engine: Engine, recorder: Recorder, clock: FakeClock, **rates: str) -> SettingsService:
    policy = LimitsPolicy(**rates)
    return SettingsService(
        engine,
        recorder,
        clock=clock,
        activity=ActivityLog(engine, clock),
        limits=DeviceLimits(policy.device_rates(), clock=clock),
    )


def send_set(settings: SettingsService, n: int, base_version: int, device_id: str = DEVICE) -> None:
    message = SettingsSet(f"button-{n:012d}", base_version, {"brightness": n})
    settings.handle_device_message(device_id, protocol.SETTINGS_SET, protocol.encode(message))


def count(engine: Engine, table: type) -> int:
    with session_scope(engine) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def test_a_device_over_its_settings_set_limit_is_told_to_wait_and_nothing_changes(
    engine: Engine, recorder: Recorder, clock: FakeClock
) -> None:
    settings = service(engine, recorder, clock, device_settings_sets="3 per minute")
    for n in range(3):
        send_set(settings, n, base_version=1 + n)
    assert [r.ok for r in recorder.replies()] == [True, True, True]
    before = settings.device_view(DEVICE)
    assert before is not None and before.desired_version == 4

    clock.advance(20)
    send_set(settings, 3, base_version=4)
    refusal = recorder.replies()[-1]
    assert (refusal.ok, refusal.error, refusal.request_id) == (False, ErrorCode.SLOW_DOWN, f"button-{3:012d}")
    assert refusal.retry_after == 40  # the first of the three leaves the minute then
    assert "at most 3 per minute" in (refusal.error_description or "")
    after = settings.device_view(DEVICE)
    assert after == before  # nothing stored: no version, no document, no report
    assert (count(engine, OutboxEntry), count(engine, ActivityEvent)) == (3, 3)
    send_set(settings, 99, base_version=4)  # a flood is answered once a second, the rest dropped
    assert len(recorder.replies()) == 4

    # Another device, and another kind of message from this one, are not held back.
    send_set(settings, 0, base_version=1, device_id=OTHER)
    assert recorder.replies(OTHER)[-1].ok
    settings.handle_device_message(DEVICE, protocol.SETTINGS_GET, protocol.encode(SettingsGet("g1")))
    assert isinstance(recorder.sent[-1][2], SettingsDesired)

    clock.advance(40)  # retry_after later the device may send again
    send_set(settings, 4, base_version=4)
    assert recorder.replies()[-1].ok and recorder.replies()[-1].version == 5


def test_every_kind_of_device_message_has_its_own_limit(
    engine: Engine, recorder: Recorder, clock: FakeClock
) -> None:
    settings = service(
        engine, recorder, clock, device_settings_gets="2 per minute", device_reports="1 per minute"
    )
    for _ in range(3):
        settings.handle_device_message(DEVICE, protocol.SETTINGS_GET, protocol.encode(SettingsGet("get-1")))
    assert [type(m).__name__ for _, _, m in recorder.sent] == [
        "SettingsDesired",
        "SettingsDesired",
        "DeviceReply",
    ]
    assert recorder.replies()[-1].error == ErrorCode.SLOW_DOWN

    report = protocol.encode(SettingsReported(1, {}))
    settings.handle_device_message(DEVICE, protocol.SETTINGS_REPORTED, report)
    settings.handle_device_message(DEVICE, protocol.SETTINGS_REPORTED, report)
    assert recorder.replies()[-1].error == ErrorCode.SLOW_DOWN and recorder.replies()[-1].request_id is None
    with pytest.raises(KeyError):  # a new kind of message must be given a limit first
        settings.limits.admit(DEVICE, "firmware_update")


def test_status_over_its_limit_is_not_recorded_and_the_device_is_told(
    engine: Engine, recorder: Recorder, clock: FakeClock
) -> None:
    settings = service(engine, recorder, clock, device_status="2 per minute")
    online = protocol.encode(protocol.DeviceStatus(online=True))
    assert settings.checked_status(DEVICE, online) == protocol.DeviceStatus(online=True)
    assert settings.checked_status(DEVICE, online) is not None
    assert settings.checked_status(DEVICE, online) is None
    assert recorder.replies()[-1].error == ErrorCode.SLOW_DOWN
    assert settings.checked_status(DEVICE, b"not json") is None  # still over: dropped, not answered again
    assert len(recorder.replies()) == 1


def test_the_wire_carries_retry_after() -> None:
    reply = DeviceReply("r", ok=False, error=ErrorCode.SLOW_DOWN, error_description="wait", retry_after=12)
    assert protocol.parse_device_reply(protocol.encode(reply)) == reply


def test_a_base_version_newer_than_the_hubs_is_refused_as_invalid_request(
    engine: Engine, recorder: Recorder, clock: FakeClock
) -> None:
    settings = service(engine, recorder, clock)
    send_set(settings, 1, base_version=1)
    before = settings.device_view(DEVICE)
    assert before is not None and before.desired_version == 2
    send_set(settings, 2, base_version=3)
    refusal = recorder.replies()[-1]
    assert (refusal.ok, refusal.error) == (False, ErrorCode.INVALID_REQUEST)
    assert "newer than the hub's version 2" in (refusal.error_description or "")
    assert settings.device_view(DEVICE) == before


def test_a_device_whose_message_failed_inside_the_hub_gets_server_error(
    engine: Engine, recorder: Recorder, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service(engine, recorder, clock)

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(ActivityLog, "add", broken)
    send_set(settings, 1, base_version=1)
    reply = recorder.replies()[-1]
    assert (reply.ok, reply.error, reply.request_id) == (False, ErrorCode.SERVER_ERROR, f"button-{1:012d}")
    monkeypatch.undo()
    view = settings.device_view(DEVICE)
    assert view is not None and view.desired_version == 1 and view.settings == {}  # rolled back
    assert count(engine, OutboxEntry) == 0


def test_an_oversized_settings_message_gets_its_own_text(
    engine: Engine, recorder: Recorder, clock: FakeClock
) -> None:
    settings = service(engine, recorder, clock)
    big = SettingsSet("big-000000000001", 1, {"note": "x" * protocol.MAX_SETTINGS_MESSAGE_BYTES})
    settings.handle_device_message(DEVICE, protocol.SETTINGS_SET, protocol.encode(big))
    reply = recorder.replies()[-1]
    assert reply.error == ErrorCode.PAYLOAD_TOO_LARGE and reply.request_id == "big-000000000001"
    assert reply.error_description == "The settings message is larger than 16384 bytes."
    assert "2048" not in (reply.error_description or "")


def test_one_devices_refusals_are_logged_once_a_minute_with_a_count(
    engine: Engine, recorder: Recorder, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    settings = service(engine, recorder, clock, device_settings_sets="100000 per minute")
    caplog.set_level(logging.WARNING, logger="hub.services.settings")
    for _ in range(1000):
        settings.handle_device_message(DEVICE, protocol.SETTINGS_SET, b"not json")
    settings.handle_device_message(OTHER, protocol.SETTINGS_SET, b"{}")
    assert len(recorder.replies()) == 1000  # every one is still answered
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"refused 1 message(s) from device {DEVICE}")
    assert lines[1].startswith(f"refused 1 message(s) from device {OTHER}")

    caplog.clear()
    clock.advance(61)
    settings.handle_device_message(DEVICE, protocol.SETTINGS_SET, b"[]")
    (line,) = [r.getMessage() for r in caplog.records]
    # The 999 held back in the minute, and this one.
    assert line.startswith(f"refused 1000 message(s) from device {DEVICE}")
    assert "payload must be a JSON object" in line


# --- on a real hub and broker -------------------------------------------------------------------


def test_a_device_looping_settings_set_at_full_speed_is_held_to_its_limit_and_others_are_answered(
    make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    """Issue 18 §2: 598 changes in 10 s were all accepted before; now at most the
    per-minute limit is stored, every message is answered, and another device of
    the same account is served in the middle of the flood."""
    hub = make_hub()
    account_id = hub.accounts.create("alice", "correct horse battery").id
    flooder_state, other_state = link_devices(hub, broker, tmp_path, account_id, 2)
    flooder, other = DeviceClient(broker, flooder_state), DeviceClient(broker, other_state)
    limit = LimitsPolicy().device_settings_sets
    assert isinstance(limit, Rate)
    allowed = limit.amount
    sent = 600
    assert hub.engine is not None
    try:
        base = flooder.get().version
        topic = protocol.device_topic(flooder.device_id, protocol.SETTINGS_SET)
        began = time.monotonic()
        for n in range(sent):  # pipelined, not waiting for acknowledgements: full speed
            message = SettingsSet(f"flood-{n:012d}", base + min(n, allowed), {"brightness": n})
            flooder.client.client.publish(topic, protocol.encode(message), qos=1)
            if n == sent // 2:
                assert other.get().full  # answered while the flood goes on
        # A message after the flood, answered once everything before it was handled.
        flooder.send(protocol.SETTINGS_GET, protocol.encode(SettingsGet("after-the-flood")))
        replies = replies_until_full_document(flooder)
        elapsed_s = time.monotonic() - began
        accepted = [r for r in replies if r.ok]
        refused = [r for r in replies if not r.ok]
        assert len(accepted) == allowed
        # Over the limit: one slow_down a second at most, the rest dropped unanswered.
        assert 1 <= len(refused) <= elapsed_s + 1
        assert {r.error for r in refused} == {ErrorCode.SLOW_DOWN}
        assert all(r.retry_after and 0 < r.retry_after <= 60 for r in refused)
        assert count(hub.engine, OutboxEntry) == allowed
        with session_scope(hub.engine) as session:
            changes = session.exec(select(func.count()).where(ActivityEvent.kind == "settings_changed")).one()
        assert changes == allowed
        view = hub.settings.device_view(flooder.device_id)
        assert view is not None and view.desired_version == base + allowed
    finally:
        flooder.close()
        other.close()


def replies_until_full_document(device: DeviceClient, timeout_s: float = 30) -> list[DeviceReply]:
    """The replies the device receives until a full desired document arrives."""
    replies = []
    deadline = time.monotonic() + timeout_s
    while True:
        message = device.client.next_message(max(0.01, deadline - time.monotonic()))
        leaf = message.topic.removeprefix(protocol.device_root(device.device_id) + "/")
        if leaf == protocol.DEVICE_REPLY:
            parsed = protocol.parse_device_reply(message.payload)
            assert isinstance(parsed, DeviceReply), parsed
            replies.append(parsed)
        elif leaf == protocol.SETTINGS_DESIRED:
            desired = protocol.parse_settings_desired(message.payload)
            if isinstance(desired, SettingsDesired) and desired.full:
                return replies
