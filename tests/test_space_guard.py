"""The free-space guard: below its threshold the hub stores nothing new, says
why on the device's reply topic (insufficient_storage), on the page (503) and
in /healthz, and keeps what is stored intact. One test on a real small tmpfs
as the data directory; the logic with an injected free-space probe."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FakeClock, HubFactory, RunningBroker
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from test_device_limits import DEVICE, Recorder, count, send_set, service
from test_device_limits import engine as engine  # the fixture
from test_settings_bridge import DeviceClient, link_devices
from test_web import signed_in_client, token

import linkhub_protocol as protocol
from hub.daemon import Hub
from hub.errors import StorageFull
from hub.services import metrics
from hub.store.engine import MB, SpaceGuard, free_bytes, guard_writes, session_scope
from hub.store.models import ActivityEvent, OutboxEntry
from linkhub_protocol import ErrorCode, SettingsSet


class Disk:
    """A free-space probe the test sets."""

    def __init__(self, free: int) -> None:
        self.free = free

    def __call__(self, _path: Path) -> int:
        return self.free


def test_below_the_threshold_a_device_change_is_refused_and_nothing_is_stored(
    engine: Engine,
    tmp_path: Path,
) -> None:
    disk = Disk(100 * MB)
    guard = SpaceGuard(tmp_path, 64 * MB, probe=disk)
    guard_writes(engine, guard)
    recorder, clock = Recorder(), FakeClock()
    settings = service(engine, recorder, clock)
    send_set(settings, 1, base_version=1)
    assert recorder.replies()[-1].ok
    stored = settings.device_view(DEVICE)

    disk.free = 63 * MB
    send_set(settings, 2, base_version=2)
    refusal = recorder.replies()[-1]
    assert (refusal.ok, refusal.error) == (False, ErrorCode.INSUFFICIENT_STORAGE)
    assert "63.0 MB free, less than the 64 MB" in (refusal.error_description or "")
    assert settings.device_view(DEVICE) == stored  # reads go on; nothing new was written
    assert (count(engine, OutboxEntry), count(engine, ActivityEvent)) == (1, 1)
    with pytest.raises(StorageFull):  # a person's change too (the page turns it into a 503)
        settings.set_device_settings(DEVICE, {"brightness": 5}, origin="web")
    health = metrics.HealthProbe(engine, space=guard.shortage)
    try:
        report = health()
        assert not report.database.ok and report.as_json()["status"] == "degraded"
        assert "less than the 64 MB" in report.as_json()["database"]["error"]
        disk.free = 65 * MB
        assert health().database.ok
    finally:
        health.close()
    send_set(settings, 3, base_version=2)
    assert recorder.replies()[-1].ok


def test_a_threshold_of_zero_turns_the_guard_off(tmp_path: Path) -> None:
    assert SpaceGuard(tmp_path, 0, probe=Disk(0)).shortage() is None
    assert "cannot be checked" in (SpaceGuard(tmp_path / "gone", 1).shortage() or "")


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 16 MB tmpfs: a data directory that really fills up."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:  # pragma: no cover - needs root
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "--lazy", str(mount_point)], check=False)


def fill(directory: Path, leave_free: int) -> Path:
    """A file that takes all but about `leave_free` bytes of the file system."""
    filler = directory / "filler"
    with filler.open("wb") as out:
        while free_bytes(directory) > leave_free + MB:
            out.write(b"\0" * MB)
            out.flush()
            os.fsync(out.fileno())
        out.write(b"\0" * max(0, free_bytes(directory) - leave_free))
    return filler


def test_on_a_nearly_full_tmpfs_the_hub_refuses_new_writes_and_keeps_what_it_has(
    small_tmpfs: Path, make_hub: HubFactory, broker: RunningBroker, tmp_path: Path
) -> None:
    hub = make_hub(data_dir=small_tmpfs / "hub")
    assert hub.space is not None and hub.engine is not None
    hub.space.min_free_bytes = 4 * MB  # the default (64 MB) is more than this whole disk
    account_id = hub.accounts.create("alice", "correct horse battery").id
    web = signed_in_client(hub)
    (state,) = link_devices(hub, broker, tmp_path, account_id, 1)
    lamp = DeviceClient(broker, state)
    health = metrics.HealthProbe(hub.engine, space=hub.space.shortage)
    try:
        lamp.get()
        lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("before-full-0001", 1, {"b": 1})))
        lamp.desired()
        assert lamp.reply().ok
        stored = hub.settings.device_view(lamp.device_id)
        assert health().ok

        filler = fill(small_tmpfs, leave_free=2 * MB)
        lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("when-full-00001", 2, {"b": 2})))
        refusal = lamp.reply()
        assert (refusal.ok, refusal.error, refusal.request_id) == (
            False,
            ErrorCode.INSUFFICIENT_STORAGE,
            "when-full-00001",
        )
        form = web.get("/settings")
        answer = web.post("/settings", data={"csrf_token": token(form), "key": "mode", "value": "dark"})
        assert answer.status_code == 503
        assert "The hub cannot store changes now" in answer.get_data(as_text=True)
        assert "MB free, less than the 4 MB" in answer.get_data(as_text=True)
        assert web.get("/devices").status_code == 200  # what is stored is still shown
        report = health().as_json()
        assert report["status"] == "degraded" and "less than the 4 MB" in report["database"]["error"]
        assert hub.settings.device_view(lamp.device_id) == stored
        with session_scope(hub.engine) as session:
            assert session.execute(text("PRAGMA integrity_check")).scalar() == "ok"

        filler.unlink()  # space again: writes are taken again, nothing was lost
        assert health().ok
        lamp.send(protocol.SETTINGS_SET, protocol.encode(SettingsSet("after-full-0001", 2, {"b": 3})))
        lamp.desired()
        assert lamp.reply().ok
        view = hub.settings.device_view(lamp.device_id)
        assert view is not None and view.settings == {"b": 3} and view.desired_version == 3
        assert json.loads(json.dumps(view.desired)) == {"b": 3}
    finally:
        health.close()
        lamp.close()


def test_a_database_that_cannot_write_is_a_503_with_its_cause_not_a_500(
    hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    web = signed_in_client(hub)

    def full(*_args: object, **_kwargs: object) -> None:
        raise OperationalError(
            "UPDATE preferences_cache", {}, sqlite3.OperationalError("database or disk is full")
        )

    monkeypatch.setattr(hub.settings, "set_preferences", full)
    form = web.get("/settings")
    answer = web.post("/settings", data={"csrf_token": token(form), "key": "mode", "value": "dark"})
    assert answer.status_code == 503
    assert "database or disk is full" in answer.get_data(as_text=True)
