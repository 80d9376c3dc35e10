"""`linkhub backup` and `linkhub restore` (hub/store/backup.py).

The round trip is the one a person makes: a running hub with its own mosquitto
and a linked device is backed up, stopped, restored into a new data directory
and started there on new ports; the device then connects with the credentials
it saved, so the broker's identities came back with the database. The rest
checks hub/store/backup.py's refusals and checks without the command line.
"""

from __future__ import annotations

import io
import json
import queue
import signal
import socket
import sqlite3
import stat
import subprocess
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pytest
from conftest import free_port, wait_until
from test_shell_path import DEVICE, LINKHUB, run_command

from hub.services.local_accounts import AccountService
from hub.store.backup import (
    DATABASE_MEMBER,
    MANIFEST_MEMBER,
    SESSION_KEY_FILE,
    BackupError,
    create_backup,
    read_manifest,
    restore_backup,
)
from hub.store.engine import head_revision, make_engine
from linkhub.cli import main as linkhub_main
from web.sessions import SessionRecords

SECRETS = {
    "hub-id": "0a1b2c3d4e5f\n",
    "hub-password": "hub-secret\n",
    "broker/admin-password": "admin-secret\n",
    "broker/dynamic-security.json": json.dumps({"clients": [{"username": "dev-000000000001"}]}),
}


# --- helpers -------------------------------------------------------------------
class Lines:
    """A process's output, line by line, read on a thread: every wait is bounded,
    even when the process prints nothing at all."""

    def __init__(self, stream: IO[str]) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, predicate: Callable[[str], bool], timeout_s: float = 30) -> list[str]:
        seen: list[str] = []
        deadline = time.monotonic() + timeout_s
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"the process ended first; it printed {seen}")
            seen.append(line)
            if predicate(line):
                return seen
        raise AssertionError(f"timed out; saw {seen}")

    def event(self, *names: str, timeout_s: float = 30) -> dict[str, Any]:
        """The next JSON event named one of `names` (or an error), skipping others."""
        lines = self.until(lambda line: json.loads(line)["event"] in (*names, "error"), timeout_s)
        return json.loads(lines[-1])


@dataclass
class CliHub:
    process: subprocess.Popen[str]
    data_dir: Path
    mqtt_port: int

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return linkhub(*args, "--data-dir", str(self.data_dir), stdin=stdin)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        assert self.process.wait(timeout=30) == 0


def linkhub(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LINKHUB, *args], input=stdin, capture_output=True, text=True, timeout=60)


@contextmanager
def hub_running(data_dir: Path) -> Iterator[CliHub]:
    """`linkhub run` with its own mosquitto on new free ports; stopped at the end whatever happens."""
    http_port, mqtt_port = free_port(), free_port()
    process = subprocess.Popen(
        [*run_command(data_dir, http_port, mqtt_port), "--poll-interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        Lines(process.stdout).until(lambda line: line.startswith("Stop with"), timeout_s=60)
        yield CliHub(process, data_dir, mqtt_port)
    finally:
        stop_process(process, signal.SIGTERM)


def stop_process(process: subprocess.Popen[str], how: signal.Signals) -> None:
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive, "r:gz") as tar:
        return {info.name: info for info in tar.getmembers()}


# --- the round trip, as a person does it ---------------------------------------
def test_a_linked_hub_comes_back_in_a_new_data_directory(tmp_path: Path) -> None:
    old_dir, new_dir, archive = tmp_path / "old", tmp_path / "new", tmp_path / "backups" / "hub.tar.gz"
    state = tmp_path / "lamp.json"

    with hub_running(old_dir) as hub:
        added = hub.cli("account", "add", "alice", "--password-stdin", stdin="correct horse battery\n")
        assert added.returncode == 0, added.stderr
        device = subprocess.Popen(
            [
                DEVICE, "link", "--name", "Kitchen Lamp", "--model", "LMP-1", "--state", str(state),
                "--hub", f"mqtt://127.0.0.1:{hub.mqtt_port}", "--json", "--timeout", "60",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert device.stdout is not None
            events = Lines(device.stdout)
            code = events.event("code")
            assert code["event"] == "code", code
            approved = hub.cli("link", "approve", code["user_code"], "--account", "alice")
            assert approved.returncode == 0, approved.stderr
            linked = events.event("linked")
            assert linked["event"] == "linked", linked
            assert device.wait(timeout=30) == 0
        finally:
            stop_process(device, signal.SIGINT)
        device_id = linked["device_id"]
        changed = hub.cli("settings", "set", "--account", "alice", "theme=dark")
        assert changed.returncode == 0, changed.stderr

        made = hub.cli("backup", str(archive))  # while the hub runs
        assert made.returncode == 0, made.stderr
        assert "backup written to" in made.stdout and "dynamic-security.json" in made.stdout

        # Restoring into a directory whose hub runs is refused, and changes nothing.
        refused = hub.cli("restore", str(archive), "--force")
        assert refused.returncode == 1
        assert "a hub is running" in refused.stderr and "stop it first" in refused.stderr
        hub.stop()

    assert mode(archive) == 0o600
    inside = members(archive)
    assert set(inside) == {
        MANIFEST_MEMBER,
        DATABASE_MEMBER,
        "data/hub-id",
        "data/hub-password",
        "data/broker/dynamic-security.json",
        "data/broker/admin-password",
    }
    assert {info.mode for info in inside.values()} == {0o600}
    manifest = read_manifest(archive)
    assert manifest["database"]["schema_revision"] == head_revision()
    assert manifest["hub_id"] == (old_dir / "hub-id").read_text().strip()

    restored = linkhub("restore", str(archive), "--data-dir", str(new_dir))
    assert restored.returncode == 0, restored.stderr
    assert f"linkhub run --data-dir {new_dir}" in restored.stdout
    assert not (new_dir / "web-secret").exists()  # the hub makes a new one: everyone signs in again
    for name in ("linkhub.db", "hub-id", "hub-password", "broker/admin-password"):
        assert mode(new_dir / name) == 0o600, name
        assert (new_dir / name).read_bytes() == (old_dir / name).read_bytes() or name == "linkhub.db"
    assert mode(new_dir) == mode(new_dir / "broker") == 0o700
    assert device_id in (new_dir / "broker/dynamic-security.json").read_text()

    again = linkhub("restore", str(archive), "--data-dir", str(new_dir))
    assert again.returncode == 1 and "already holds a database" in again.stderr and "--force" in again.stderr

    with hub_running(new_dir) as hub:
        listed = hub.cli("devices", "--json")
        assert listed.returncode == 0, listed.stderr
        assert [(d["device_id"], d["name"]) for d in json.loads(listed.stdout)] == [
            (device_id, "Kitchen Lamp")
        ]
        shown = hub.cli("settings", "show", "--account", "alice", "--json")
        assert json.loads(shown.stdout)["document"] == {"theme": "dark"}

        # The device, told only the new port, connects with what it saved.
        saved = json.loads(state.read_text())
        saved["mqtt"]["port"] = hub.mqtt_port
        state.write_text(json.dumps(saved))
        runner = subprocess.Popen(
            [DEVICE, "run", "--state", str(state), "--json"], stdout=subprocess.PIPE, text=True
        )
        try:
            assert runner.stdout is not None
            online = Lines(runner.stdout).event("online")
            assert online == {"event": "online", "device_id": device_id, "tls": False}
            wait_until(
                lambda: json.loads(hub.cli("devices", "--json").stdout)[0]["online"],
                what="the hub to see the device online",
            )
        finally:
            stop_process(runner, signal.SIGINT)
        assert runner.returncode == 0
        hub.stop()


# --- hub/store/backup.py without the command line -------------------------------------
def make_data_dir(directory: Path) -> tuple[Path, str]:
    """A data directory as a hub leaves it: a database with an account, and its secrets."""
    directory.mkdir(parents=True)
    url = f"sqlite:///{directory / 'linkhub.db'}"
    engine = make_engine(url)
    AccountService(engine, time.time).create("alice", "correct horse battery")
    engine.dispose()
    for name, body in SECRETS.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(body)
    (directory / SESSION_KEY_FILE).write_text("the key that signs sessions")
    return directory, url


def account_names(url: str) -> list[str]:
    database = url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        return [name for (name,) in connection.execute("SELECT name FROM account ORDER BY id")]


def test_backup_is_consistent_while_the_hub_writes(tmp_path: Path) -> None:
    data_dir, url = make_data_dir(tmp_path / "data")
    engine = make_engine(url)
    accounts = AccountService(engine, time.time)
    stop = threading.Event()
    written: list[str] = []

    def keep_writing() -> None:
        while not stop.is_set() and len(written) < 200:
            name = f"user{len(written)}"
            accounts.create(name, "correct horse battery")
            written.append(name)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        wait_until(lambda: len(written) >= 3, what="three accounts written")
        report = create_backup(data_dir, tmp_path / "b.tar.gz", url)
    finally:
        stop.set()
        writer.join(timeout=60)
        engine.dispose()
    assert report.notes == []

    new_dir = tmp_path / "restored"
    new_url = f"sqlite:///{new_dir / 'linkhub.db'}"
    restored = restore_backup(tmp_path / "b.tar.gz", new_dir, new_url)
    assert restored.database_path == new_dir / "linkhub.db"
    assert sorted(restored.files) == sorted(SECRETS)
    names = account_names(new_url)
    # A snapshot: alice and the users written before it, in order, nothing torn.
    assert names[0] == "alice" and names[1:] == written[: len(names) - 1]
    for name, body in SECRETS.items():
        assert (new_dir / name).read_text() == body
    with sqlite3.connect(new_dir / "linkhub.db") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    make_engine(new_url).dispose()  # and the hub opens it


def test_a_backup_holds_no_session_key_and_a_restore_signs_everyone_out(tmp_path: Path) -> None:
    """A leaked backup must not make sessions (issue 19, item 15)."""
    data_dir, url = make_data_dir(tmp_path / "data")
    engine = make_engine(url)
    SessionRecords(engine, time.time).start(1, 3600)
    engine.dispose()
    archive = tmp_path / "b.tar.gz"
    create_backup(data_dir, archive, url)
    assert f"data/{SESSION_KEY_FILE}" not in members(archive)
    assert SESSION_KEY_FILE not in [entry["path"] for entry in read_manifest(archive)["files"]]
    with tarfile.open(archive) as tar:
        database = tar.extractfile(DATABASE_MEMBER)
        assert database is not None
        (tmp_path / "copy.db").write_bytes(database.read())
    with sqlite3.connect(tmp_path / "copy.db") as copy:
        assert copy.execute("SELECT count(*) FROM web_session").fetchone() == (0,)
    with sqlite3.connect(data_dir / "linkhub.db") as live:  # the live hub's sessions are untouched
        assert live.execute("SELECT count(*) FROM web_session").fetchone() == (1,)

    # Restored over the same data directory: the old key goes, so no old cookie works.
    report = restore_backup(archive, data_dir, url, force=True)
    assert not (data_dir / SESSION_KEY_FILE).exists()
    assert any("signs in to the web pages again" in note for note in report.notes)
    with sqlite3.connect(data_dir / "linkhub.db") as restored:
        assert restored.execute("SELECT count(*) FROM web_session").fetchone() == (0,)


def test_restore_replaces_a_database_only_with_force(tmp_path: Path) -> None:
    data_dir, url = make_data_dir(tmp_path / "data")
    create_backup(data_dir, tmp_path / "b.tar.gz", url)

    target_dir = tmp_path / "other"
    target_dir.mkdir()
    target_url = f"sqlite:///{target_dir / 'linkhub.db'}"
    engine = make_engine(target_url)
    AccountService(engine, time.time).create("mallory", "correct horse battery")
    engine.dispose()
    (target_dir / "hub-id").write_text("ffffffffffff\n")
    (target_dir / "linkhub.db-wal").write_bytes(b"an old journal that must not be replayed")

    with pytest.raises(BackupError, match=r"already holds a database .*, hub-id.*--force"):
        restore_backup(tmp_path / "b.tar.gz", target_dir, target_url)
    assert account_names(target_url) == ["mallory"]  # nothing was touched

    restore_backup(tmp_path / "b.tar.gz", target_dir, target_url, force=True)
    assert not (target_dir / "linkhub.db-wal").exists()
    assert account_names(target_url) == ["alice"]
    assert (target_dir / "hub-id").read_text() == SECRETS["hub-id"]


def test_restore_refuses_while_a_hub_answers_but_not_for_a_stale_socket(tmp_path: Path) -> None:
    data_dir, url = make_data_dir(tmp_path / "data")
    create_backup(data_dir, tmp_path / "b.tar.gz", url)
    target = tmp_path / "target"
    target.mkdir()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listening:
        listening.bind(str(target / "hub.sock"))
        listening.listen()
        with pytest.raises(BackupError, match="a hub is running"):
            restore_backup(tmp_path / "b.tar.gz", target, f"sqlite:///{target / 'linkhub.db'}")
    assert not (target / "linkhub.db").exists()
    # The socket file a killed hub leaves behind answers nobody: no reason to refuse.
    assert (target / "hub.sock").exists()
    restore_backup(tmp_path / "b.tar.gz", target, f"sqlite:///{target / 'linkhub.db'}")
    assert account_names(f"sqlite:///{target / 'linkhub.db'}") == ["alice"]


def rewrite_archive(source: Path, target: Path, change: Callable[[str, bytes], bytes]) -> None:
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for info in old.getmembers():
            handle = old.extractfile(info)
            assert handle is not None
            body = change(info.name, handle.read())
            info.size = len(body)
            new.addfile(info, io.BytesIO(body))


def test_restore_checks_the_manifest_and_every_digest(tmp_path: Path) -> None:
    data_dir, url = make_data_dir(tmp_path / "data")
    good = tmp_path / "good.tar.gz"
    create_backup(data_dir, good, url)
    target = tmp_path / "target"
    target_url = f"sqlite:///{target / 'linkhub.db'}"

    def restore(archive: Path) -> None:
        restore_backup(archive, target, target_url)

    damaged = tmp_path / "damaged.tar.gz"
    rewrite_archive(good, damaged, lambda name, body: b"x" + body if name == "data/hub-password" else body)
    with pytest.raises(BackupError, match="damaged: data/hub-password does not match"):
        restore(damaged)

    def manifest_says(**changes: Any) -> Callable[[str, bytes], bytes]:
        def change(name: str, body: bytes) -> bytes:
            if name != MANIFEST_MEMBER:
                return body
            manifest = json.loads(body)
            for key, value in changes.items():
                section, _, field = key.partition("__")
                if field:
                    manifest[section][field] = value
                else:
                    manifest[section] = value
            return json.dumps(manifest).encode()

        return change

    newer = tmp_path / "newer.tar.gz"
    rewrite_archive(good, newer, manifest_says(database__schema_revision="9999"))
    with pytest.raises(BackupError, match=r"schema revision 9999, which this LinkHub .* does not know"):
        restore(newer)

    future = tmp_path / "future.tar.gz"
    rewrite_archive(good, future, manifest_says(format_version=2))
    with pytest.raises(BackupError, match="made by a newer LinkHub"):
        restore(future)

    escape = tmp_path / "escape.tar.gz"
    rewrite_archive(
        good,
        escape,
        manifest_says(files=[{"path": "../../etc/cron.d/x", "member": "data/../../etc/cron.d/x"}]),
    )
    with pytest.raises(BackupError, match="lists a file LinkHub does not restore"):
        restore(escape)

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(BackupError, match="is damaged or truncated"):
        restore(truncated)

    not_a_backup = tmp_path / "notes.txt"
    not_a_backup.write_text("hello")
    with pytest.raises(BackupError, match="is not a LinkHub backup"):
        restore(not_a_backup)
    other_tar = tmp_path / "other.tar.gz"
    with tarfile.open(other_tar, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("README"), io.BytesIO(b""))
    with pytest.raises(BackupError, match="no LinkHub manifest"):
        restore(other_tar)
    with pytest.raises(BackupError, match="there is no file"):
        restore(tmp_path / "missing.tar.gz")

    assert not target.exists()  # every refusal came before any write
    restore(good)
    assert account_names(target_url) == ["alice"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_postgresql_hub_is_backed_up_without_its_database(
    database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    engine = make_engine(database_url)
    AccountService(engine, time.time).create("alice", "correct horse battery")
    engine.dispose()
    for name, body in SECRETS.items():
        (data_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / name).write_text(body)
    archive = tmp_path / "pg.tar.gz"

    code = linkhub_main(["backup", str(archive), "--data-dir", str(data_dir), "--database-url", database_url])
    out = capsys.readouterr().out
    assert code == 0
    assert "pg_dump" in out and "does not copy it" in out
    assert "postgresql://postgres@127.0.0.1:5432/" in out  # a URL pg_dump takes, no driver name
    assert DATABASE_MEMBER not in members(archive)
    assert read_manifest(archive)["database"]["member"] is None

    new_dir = tmp_path / "new"
    code = linkhub_main(["restore", str(archive), "--data-dir", str(new_dir), "--database-url", database_url])
    out = capsys.readouterr().out
    assert code == 0 and "pg_restore" in out
    for name, body in SECRETS.items():
        assert (new_dir / name).read_text() == body

    # A SQLite backup does not go into a PostgreSQL hub.
    sqlite_dir, sqlite_url = make_data_dir(tmp_path / "sqlite")
    create_backup(sqlite_dir, tmp_path / "s.tar.gz", sqlite_url)
    with pytest.raises(BackupError, match="uses SQLite"):
        restore_backup(tmp_path / "s.tar.gz", tmp_path / "pg-target", database_url)


def test_backup_says_what_is_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code = linkhub_main(["backup", str(tmp_path / "x.tar.gz"), "--data-dir", str(empty)])
    assert code == 1
    assert "there is no database at" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()

    # A hub on a broker it does not run (--broker): no broker state here, and it is said.
    data_dir, url = make_data_dir(tmp_path / "data")
    for name in ("broker/dynamic-security.json", "broker/admin-password"):
        (data_dir / name).unlink()
    report = create_backup(data_dir, tmp_path / "b.tar.gz", url)
    assert any("--broker" in note for note in report.notes)
    assert "broker/dynamic-security.json" in report.manifest["absent"]
