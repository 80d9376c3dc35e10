"""Two hubs on one PostgreSQL database and one broker (docs/protocol.md §12.5):
settings changes from devices, the CLI and the pages at once, one hub killed
with SIGKILL in the middle; every accepted change lands once, in order, no
version is used twice, and the account service and the devices agree.

Hub A runs in-process; hub B is `linkhub run` in a subprocess (so it can be
killed for real, mid-transaction). Nothing here sleeps to synchronise: workers
wait on replies with deadlines, and the kill is triggered by progress.
"""

from __future__ import annotations

import http.client
import json
import queue
import secrets
import signal
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from conftest import HubFactory, RunningBroker, free_port, wait_until
from device_doubles import RawClient
from flask.testing import FlaskClient
from hub_process import READY, LineReader, linkhub_run_command
from sqlmodel import Session, col, select
from test_settings_bridge import link_devices
from test_web import OWNER, PASSWORD, control_app, sign_in, token, web_app

import linkhub_protocol as protocol
from hub.core.accounts import ChangeKind, SettingsChange
from hub.daemon import Hub
from hub.errors import ConfigError, HubNotRunning
from hub.services.activity import ActivityKind
from hub.services.outbox import Outbox
from hub.store.engine import make_engine
from hub.store.models import ActivityEvent, ChangeLogEntry, DeviceShadow, OutboxEntry, PreferencesCache
from linkhub import control_client
from linkhub_protocol import DeviceReply, SettingsDesired, SettingsGet, SettingsSet

DEVICES = 3
DEVICE_CHANGES = 12  # per device
PERSON_CHANGES = 12  # per stream (CLI, pages)
REPLY_TIMEOUT_S = 2.0  # a device resends the same request after this long without an answer
KILL_AFTER = 12  # accepted changes, all streams together, before hub B is killed


# --- hub B: `linkhub run` in a subprocess -----------------------------------------------


@dataclass
class HubProcess:
    process: subprocess.Popen[str]
    data_dir: Path

    @property
    def socket(self) -> Path:
        return self.data_dir / "hub.sock"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)


@pytest.fixture
def start_hub_process(broker: RunningBroker) -> Iterator[Any]:
    started: list[subprocess.Popen[str]] = []

    def start(data_dir: Path, database_url: str) -> HubProcess:
        extra = ["--database-url", database_url, "--broker", broker.url, "--poll-interval", "1"]
        process = subprocess.Popen(
            linkhub_run_command(data_dir, http_port=free_port(), extra=extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        started.append(process)
        assert process.stdout is not None
        LineReader(process.stdout).until(lambda line: line.startswith(READY), timeout_s=60)
        return HubProcess(process, data_dir)

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# --- the streams of changes ---------------------------------------------------------------


@dataclass
class Accepted:
    """What one stream saw: `accepted[key]` the (value, version) pairs answered ok, in
    order; `unknown[key]` the values whose answer was lost when hub B died."""

    accepted: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))
    unknown: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    after_kill: int = 0


class Progress:
    """Accepted changes across the streams; sets `due` when hub B should die."""

    def __init__(self, kill_after: int) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._kill_after = kill_after
        self.due = threading.Event()
        self.killed = threading.Event()

    def one(self, seen: Accepted) -> None:
        with self._lock:
            self._count += 1
            if self._count >= self._kill_after:
                self.due.set()
        if self.killed.is_set():
            seen.after_kill += 1


class Device:
    """A linked device changing its own key `n` to 1, 2, 3, ...: each change waits
    for its answer and is resent, same request_id, if none comes in time (as
    firmware would after the hub that took it died)."""

    def __init__(self, broker: RunningBroker, state: dict[str, Any]) -> None:
        self.device_id: str = state["device_id"]
        self.client = RawClient(
            broker.port, state["mqtt"]["username"], state["mqtt"]["password"], client_id=self.device_id
        )
        assert not self.client.connack_reason.is_failure
        for leaf in (protocol.SETTINGS_DESIRED, protocol.DEVICE_REPLY):
            assert self.client.subscribe(protocol.device_topic(self.device_id, leaf))
        self.replies: queue.Queue[DeviceReply] = queue.Queue()
        self.desired: queue.Queue[SettingsDesired] = queue.Queue()
        self.resends = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._closing = threading.Event()
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            try:
                message = self.client.next_message(0.2)
            except queue.Empty:
                continue
            if message.topic.endswith("/" + protocol.DEVICE_REPLY):
                reply = protocol.parse_device_reply(message.payload)
                assert isinstance(reply, DeviceReply), reply
                self.replies.put(reply)
            else:
                desired = protocol.parse_settings_desired(message.payload)
                assert isinstance(desired, SettingsDesired), desired
                self.desired.put(desired)

    def run(self, changes: int, progress: Progress, seen: Accepted) -> None:
        base = 0
        for value in range(1, changes + 1):
            request = SettingsSet(f"{self.device_id}-{value}-{secrets.token_hex(4)}", base, {"n": value})
            reply = self.ask(request)
            assert reply.ok, reply
            assert reply.version is not None
            seen.accepted[(self.device_id, "n")].append((value, reply.version))
            base = reply.version
            progress.one(seen)

    def ask(self, request: SettingsSet) -> DeviceReply:
        topic = protocol.device_topic(self.device_id, protocol.SETTINGS_SET)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.client.publish(topic, protocol.encode(request))
            resend_at = time.monotonic() + REPLY_TIMEOUT_S
            while (left := resend_at - time.monotonic()) > 0:
                try:
                    reply = self.replies.get(timeout=left)
                except queue.Empty:
                    break
                if reply.request_id == request.request_id:
                    return reply
            self.resends += 1
        raise AssertionError(f"{self.device_id}: no answer to {request.request_id} in 30 s")

    def full_document(self) -> SettingsDesired:
        """The whole desired document, asked for as after a reconnect."""
        while not self.desired.empty():  # full documents sent with answers to resends
            self.desired.get_nowait()
        self.client.publish(
            protocol.device_topic(self.device_id, protocol.SETTINGS_GET),
            protocol.encode(SettingsGet("final")),
        )
        deadline = time.monotonic() + 10
        while True:
            desired = self.desired.get(timeout=max(0.01, deadline - time.monotonic()))
            if desired.full:
                return desired

    def close(self) -> None:
        self._closing.set()
        self._reader.join(timeout=5)
        self.client.close()


def cli_stream(
    hub_b: HubProcess, hub_a: Hub, device_ids: list[str], progress: Progress, seen: Accepted
) -> None:
    """`linkhub settings set` through the control API: hub B's socket while it lives,
    then hub A's; device key `c` and preference `p` take turns."""
    fallback = control_app(hub_a).test_client()
    for value in range(1, PERSON_CHANGES + 1):
        device_id = device_ids[value % len(device_ids)]
        on_device = value % 2 == 0
        path = "/v1/settings/device" if on_device else "/v1/settings/account"
        body: dict[str, Any] = {"changes": {"c" if on_device else "p": value}}
        body |= {"device_id": device_id} if on_device else {"account": OWNER}
        subject = (device_id, "c") if on_device else (OWNER, "p")
        try:
            answer = control_client.call(hub_b.socket, "POST", path, body)
        except HubNotRunning:
            response = fallback.post(path, json=body)
            assert response.status_code == 200, response.get_json()
            answer = response.get_json()
        except (control_client.HubWentAway, OSError, http.client.HTTPException):
            seen.unknown[subject].add(value)  # hub B died with it: applied or not, nobody knows
            continue
        version = answer["desired_version"] if on_device else answer["version"]
        seen.accepted[subject].append((value, version))
        progress.one(seen)


def page_stream(client: FlaskClient, device_ids: list[str], progress: Progress, seen: Accepted) -> None:
    """The web pages on hub A: device key `w` and preference `q` take turns."""
    for value in range(1, PERSON_CHANGES + 1):
        device_id = device_ids[value % len(device_ids)]
        on_device = value % 2 == 0
        path = f"/devices/{device_id}/settings" if on_device else "/settings"
        form = client.get(path.removesuffix("/settings") if on_device else "/settings")
        key = "w" if on_device else "q"
        posted = client.post(path, data={"csrf_token": token(form), "key": key, "value": str(value)})
        assert posted.status_code == 303, posted.get_data(as_text=True)
        seen.accepted[(device_id if on_device else OWNER, key)].append((value, -1))  # version: see below
        progress.one(seen)


def run_all(workers: list[Callable[[], None]]) -> None:
    """Run the workers at once; the first failure is raised here, on the test's thread."""
    failures: list[BaseException] = []

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException as exc:
                failures.append(exc)

        return run

    threads = [threading.Thread(target=guarded(worker), daemon=True) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=90)
    assert not any(thread.is_alive() for thread in threads), "a stream did not finish"
    if failures:
        raise failures[0]


# --- the test --------------------------------------------------------------------------------


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_hubs_keep_every_change_once_and_in_order_when_one_is_killed(
    make_hub: HubFactory, start_hub_process: Any, database_url: str, broker: RunningBroker, tmp_path: Path
) -> None:
    hub_a = make_hub(data_dir=tmp_path / "a", database_url=database_url)
    account_id = hub_a.accounts.create(OWNER, PASSWORD).id
    states = link_devices(hub_a, broker, tmp_path, account_id, DEVICES)
    hub_b = start_hub_process(tmp_path / "b", database_url)
    devices = [Device(broker, state) for state in states]
    device_ids = [device.device_id for device in devices]
    for device in devices:  # connected: the whole document first (docs/protocol.md §12.4)
        assert device.full_document().version == 1
    pages = web_app(hub_a).test_client()
    assert sign_in(pages).status_code == 302

    progress = Progress(KILL_AFTER)
    streams = {name: Accepted() for name in ("cli", "pages", *device_ids)}

    def killer() -> None:
        assert progress.due.wait(timeout=60), "the streams never got going"
        hub_b.kill()
        progress.killed.set()

    workers = [
        killer,
        partial(cli_stream, hub_b, hub_a, device_ids, progress, streams["cli"]),
        partial(page_stream, pages, device_ids, progress, streams["pages"]),
        *(partial(device.run, DEVICE_CHANGES, progress, streams[device.device_id]) for device in devices),
    ]
    try:
        run_all(workers)
        assert progress.killed.is_set()
        # The kill fell in the middle: changes were still being accepted after it.
        assert sum(seen.after_kill for seen in streams.values()) > 0
        wait_until(lambda: hub_a.outbox.pending() == 0, timeout_s=20, what="hub A to deliver every change")
        finals = {device.device_id: device.full_document() for device in devices}
    finally:
        for device in devices:
            device.close()

    assert hub_a.engine is not None
    with Session(hub_a.engine) as session:
        outbox = session.exec(select(OutboxEntry).order_by(col(OutboxEntry.seq))).all()
        logged = session.exec(select(ChangeLogEntry).order_by(col(ChangeLogEntry.seq))).all()
        shadows = {s.device_id: s for s in session.exec(select(DeviceShadow)).all()}
        preferences = session.get(PreferencesCache, account_id)
        activity = session.exec(
            select(ActivityEvent).where(ActivityEvent.kind == str(ActivityKind.SETTINGS_CHANGED))
        ).all()
    assert preferences is not None

    # Each subject's versions, in the order the hubs queued them: rising, none used twice.
    def subject(entry: OutboxEntry | ChangeLogEntry) -> tuple[str, str]:
        return (entry.device_id, "") if entry.kind == ChangeKind.DEVICE_SETTINGS else (OWNER, "")

    versions: dict[tuple[str, str], list[int]] = defaultdict(list)
    for entry in outbox:
        versions[subject(entry)].append(entry.version)
    for where, seq in versions.items():
        assert seq == sorted(set(seq)), f"versions of {where} used twice or out of order: {seq}"

    # Every accepted change once, in the order it was accepted; a lost answer at most once.
    values: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    for entry in outbox:
        owner = entry.device_id if entry.kind == ChangeKind.DEVICE_SETTINGS else OWNER
        for key, value in json.loads(entry.patch_json).items():
            values[(owner, key)].append((value, entry.version))
    for name, seen in streams.items():
        for key, accepted in seen.accepted.items():
            stored = [pair for pair in values[key] if pair[0] not in seen.unknown[key]]
            if name == "pages":  # the page says the version only in its flash message
                stored = [(value, -1) for value, _version in stored]
            assert stored == accepted, f"{name} {key}: accepted {accepted}, stored {stored}"
        for key, lost in seen.unknown.items():
            counts = [value for value, _version in values[key] if value in lost]
            assert len(counts) == len(set(counts)), f"{name} {key}: an unanswered change stored twice"
    # One activity entry per change, not one per hub that saw it.
    assert len(activity) == len(outbox)

    # The account service got each change once, in order, and applied every one.
    assert sorted(e.change_id for e in logged) == sorted(e.change_id for e in outbox)
    applied: dict[tuple[str, str], list[int]] = defaultdict(list)
    for entry in logged:
        applied[subject(entry)].append(entry.version)
    assert applied == versions
    for device_id, shadow in shadows.items():
        service = hub_a.accounts.device_settings(device_id)
        assert service.document == json.loads(shadow.settings_json)
        assert service.version == versions[(device_id, "")][-1]
        # And the device runs with what the hub holds.
        assert finals[device_id].version == shadow.desired_version
        assert finals[device_id].desired == json.loads(shadow.desired_json)
    service_preferences = hub_a.accounts.preferences(account_id)
    assert service_preferences.document == json.loads(preferences.document_json)
    assert service_preferences.version == preferences.version == versions[(OWNER, "")][-1]


# --- a resent change, and one hub per SQLite file -----------------------------------------------


def outbox_rows(hub: Hub) -> int:
    assert hub.engine is not None
    with Session(hub.engine) as session:
        return len(session.exec(select(OutboxEntry.seq)).all())


def test_a_change_resent_after_it_was_accepted_is_answered_not_applied_again(
    hub: Hub, broker: RunningBroker, tmp_path: Path
) -> None:
    """A device that heard no answer (the hub that took its change died) sends the
    same request again, by then stale: it gets the answer it missed, not a conflict."""
    account_id = hub.accounts.create(OWNER, PASSWORD).id
    (state,) = link_devices(hub, broker, tmp_path, account_id, 1)
    device = Device(broker, state)
    try:
        first = device.full_document()
        press = SettingsSet("button-1", first.version, {"volume": 1})
        accepted = device.ask(press)
        assert accepted.ok and accepted.version == first.version + 1
        hub.settings.set_device_settings(device.device_id, {"volume": 5}, origin="web")
        queued = outbox_rows(hub)

        again = device.ask(press)  # the same request_id, its base now older than volume's change

        assert (again.ok, again.version) == (True, accepted.version)
        assert outbox_rows(hub) == queued  # nothing new queued
        view = hub.settings.device_view(device.device_id)
        assert (
            view is not None and view.settings == {"volume": 5} and view.desired_version == first.version + 2
        )
        # The whole document came with the answer, in case the change itself was never sent.
        full = device.desired.get(timeout=5)
        while not full.full:
            full = device.desired.get(timeout=5)
        assert (full.version, full.desired) == (view.desired_version, view.desired)
    finally:
        device.close()


def test_a_second_hub_on_one_sqlite_file_is_refused_with_a_reason(
    make_hub: HubFactory, tmp_path: Path
) -> None:
    database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = make_hub(data_dir=tmp_path / "a", database_url=database_url)
    with pytest.raises(ConfigError) as refused:
        make_hub(data_dir=tmp_path / "b", database_url=database_url)
    assert f"already running on the SQLite database {tmp_path / 'shared.db'}" in str(refused.value)
    assert "PostgreSQL" in str(refused.value)
    first.stop()  # the lock goes with the hub (or its process): the next one starts
    second = make_hub(data_dir=tmp_path / "b", database_url=database_url)
    assert second.accounts.create(OWNER, PASSWORD).id is not None


class CountingService:
    """An account service that records every delivery it gets."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.delivered: list[str] = []

    def apply_change(self, change: SettingsChange) -> bool:
        with self.lock:
            self.delivered.append(change.change_id)
        return True


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_outboxes_on_one_database_deliver_each_change_once_in_order(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        with Session(engine) as session:
            for n in range(60):
                session.add(
                    OutboxEntry(
                        change_id=f"change-{n:03}",
                        kind=str(ChangeKind.PREFERENCES),
                        account_id=1,
                        patch_json=json.dumps({"n": n}),
                        version=n + 1,
                        origin="test",
                        made_at_s=0.0,
                    )
                )
            session.commit()
        service = CountingService()
        outboxes = [Outbox(engine, service, clock=time.time) for _ in range(2)]  # type: ignore[arg-type]
        start = threading.Barrier(len(outboxes))

        def deliver(outbox: Outbox) -> None:
            start.wait(timeout=10)
            outbox.deliver_pending()

        run_all([partial(deliver, outbox) for outbox in outboxes])
        run_all([partial(deliver, outbox) for outbox in outboxes])  # whatever one left to the other
        assert service.delivered == [f"change-{n:03}" for n in range(60)]
        assert outboxes[0].pending() == 0
    finally:
        engine.dispose()
