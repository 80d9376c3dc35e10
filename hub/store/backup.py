"""`linkhub backup` and `linkhub restore`: a hub's whole state in one file.

A hub is more than its database: the broker's dynamic-security file holds every
linked device's identity, and the secrets in the data directory name the hub to
its broker. A backup that missed any of them would bring back devices that can
no longer connect. So one archive (tar.gz, mode 0600) holds:

- `manifest.json`: what is inside, with sizes and SHA-256 digests;
- `database/linkhub.db`: the SQLite database, copied through SQLite's online
  backup API, so the hub may keep running and writing meanwhile;
- `data/...`: the broker's state and the hub's secrets, as files.

The database is copied first and the broker's state after it, so every device
the copied database knows has its identity in the copied broker state (an
identity made in between is only an unused extra).

A PostgreSQL database is not copied: `pg_dump` is the tool for that, and the
archive then holds everything else.

Left out on purpose: the key that signs the web sessions (`web-secret`) and the
records of the sessions signed in (`web_session`, emptied in the copy). With
the key, a leaked backup would make a session cookie for any account, past
two-factor sign-in; without it a restored hub makes a new key, and everyone
signs in again. What the archive still holds (password and recovery-code
hashes, TOTP secrets, device credentials' identities, the broker admin
password) is why it is mode 0600 and must be kept like the data directory
(docs/security.md, "Backups").
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import socket
import sqlite3
import tarfile
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from sqlalchemy.engine import URL, make_url

from hub.config.model import control_socket
from hub.errors import LinkHubError

FORMAT = "linkhub-backup"
FORMAT_VERSION = 1
MANIFEST_MEMBER = "manifest.json"
DATABASE_MEMBER = "database/linkhub.db"
DYNSEC_FILE = "broker/dynamic-security.json"
# Paths inside the data directory; nothing else is ever read from or written to.
STATE_FILES = (
    "hub-id",
    "hub-password",
    "account-service-token",  # only where `linkhub account-service` runs
    DYNSEC_FILE,
    "broker/admin-password",
    # The CA devices trust for the TLS listener (hub/broker/tls.py): a restored hub must
    # keep it. The server certificate is not kept: the hub makes it again at start.
    "broker/tls/ca.key",
    "broker/tls/ca.pem",
    # The key apps' id_tokens are signed with (web/oauth/id_tokens.py): its public half
    # is what apps verify them with, so a restored hub keeps it.
    "oauth-signing-key.json",
)
# Never backed up, never restored (an older backup may hold it): see the module's docstring.
SESSION_KEY_FILE = "web-secret"
SESSION_TABLE = "web_session"
_CHUNK = 1 << 20
# What a damaged or truncated tar.gz raises on the way.
_ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


class BackupError(LinkHubError):
    """Backup or restore refused, with what to do about it."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    path: Path
    manifest: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what the person should know (PostgreSQL, ...)


@dataclass(frozen=True, slots=True)
class RestoreReport:
    data_dir: Path
    manifest: dict[str, Any]
    database_path: Path | None  # None: the backup held no database (PostgreSQL)
    files: list[str]
    notes: list[str] = field(default_factory=list)


# --- backup --------------------------------------------------------------------
def create_backup(
    data_dir: Path, destination: Path, database_url: str, *, clock: Callable[[], float] = time.time
) -> BackupReport:
    """Write the hub's state in `data_dir` (and its database) to `destination`.

    Safe while the hub runs. The archive appears whole or not at all: it is
    written beside `destination` and renamed into place.
    """
    data_dir = data_dir.expanduser()
    if not data_dir.is_dir():
        raise BackupError(f"there is no data directory {data_dir} (pass the hub's --data-dir)")
    destination = destination.expanduser().absolute()
    if destination.is_dir():
        raise BackupError(
            f"{destination} is a directory: name the file to write, e.g. {destination}/linkhub.tar.gz"
        )
    try:
        return _create_backup(data_dir, destination, make_url(database_url), clock())
    except OSError as exc:  # a directory we may not write, a full disk, an unreadable secret
        raise BackupError(f"cannot write the backup {destination}: {exc}") from None


def _create_backup(data_dir: Path, destination: Path, url: URL, now: float) -> BackupReport:
    present = [name for name in STATE_FILES if (data_dir / name).is_file()]
    destination.parent.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".linkhub-backup-") as scratch:
        members: list[tuple[str, Path]] = []
        if _is_sqlite(url):
            source = _sqlite_path(url)
            if not source.is_file():
                raise BackupError(
                    f"there is no database at {source} (has a hub run with this data directory?)"
                )
            copy = Path(scratch) / "linkhub.db"
            database = _copy_sqlite(source, copy)
            members.append((DATABASE_MEMBER, copy))
        else:
            if not present:
                raise BackupError(f"nothing to back up in {data_dir}: is it the hub's data directory?")
            shown = url.set(drivername=url.get_backend_name()).render_as_string(hide_password=True)
            database = {"kind": url.get_backend_name(), "url": shown, "member": None}
            notes.append(
                f"The database is {url.get_backend_name()} ({shown}): LinkHub does not copy it. "
                f"Back it up with pg_dump, e.g. pg_dump --format=custom --file=linkhub.dump '{shown}'; "
                "this file holds everything else."
            )
        # After the database (see the module's docstring), each file read once.
        files = []
        for name in present:
            staged = Path(scratch) / "data" / name
            staged.parent.mkdir(parents=True, exist_ok=True)
            body = _read_json_file(data_dir / name) if name == DYNSEC_FILE else (data_dir / name).read_bytes()
            staged.write_bytes(body)
            files.append({"path": name, "member": f"data/{name}", **_digest(staged)})
            members.append((f"data/{name}", staged))
        absent = [name for name in STATE_FILES if name not in present]
        if DYNSEC_FILE in absent:
            notes.append(
                f"No {DYNSEC_FILE} in {data_dir}: the hub does not run its own mosquitto here "
                "(--broker), so back up that broker's dynamic-security file where it runs."
            )
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "linkhub_version": _linkhub_version(),
            "created_at": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
            "created_at_s": now,
            "data_dir": str(data_dir.absolute()),
            "hub_id": (Path(scratch) / "data/hub-id").read_text().strip() if "hub-id" in present else None,
            "database": database,
            "files": files,
            "absent": absent,
        }
        partial = Path(scratch) / "backup.tar.gz"
        _write_archive(partial, manifest, members, now)
        os.replace(partial, destination)
    return BackupReport(destination, manifest, notes)


def _copy_sqlite(source: Path, copy: Path) -> dict[str, Any]:
    """A consistent copy of a live database: SQLite's online backup API copies
    one snapshot even while the hub writes (WAL included)."""
    try:
        with (
            contextlib.closing(sqlite3.connect(source, timeout=30)) as live,
            contextlib.closing(sqlite3.connect(copy)) as target,
        ):
            live.backup(target)
            # The sessions signed in stay behind with their key (the module's docstring).
            if target.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (SESSION_TABLE,)
            ).fetchone():
                target.execute(f"DELETE FROM {SESSION_TABLE}")  # only token hashes: no VACUUM needed
                target.commit()
            # One self-contained file: no -wal beside it, whatever the hub uses.
            target.execute("PRAGMA journal_mode=DELETE")
            (check,) = target.execute("PRAGMA integrity_check").fetchone()
            revision = _schema_revision(target)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot copy the database {source}: {exc}") from None
    if check != "ok":
        raise BackupError(f"the database {source} fails SQLite's integrity check: {check}")
    os.chmod(copy, 0o600)
    return {
        "kind": "sqlite",
        "member": DATABASE_MEMBER,
        "source": str(source),
        "schema_revision": revision,
        **_digest(copy),
    }


def _schema_revision(connection: sqlite3.Connection) -> str | None:
    """The Alembic revision; None for a database made before migrations (it is adopted at start)."""
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        return None
    return row[0] if row else None


def _read_json_file(path: Path, attempts: int = 5) -> bytes:
    """Mosquitto rewrites its dynamic-security file on every change; a copy must
    be one whole version of it, so it is read until it parses."""
    for attempt in range(attempts):
        body = path.read_bytes()
        try:
            json.loads(body)
            return body
        except ValueError:
            if attempt == attempts - 1:
                raise BackupError(f"{path} is not valid JSON; is the broker writing it?") from None
            time.sleep(0.1)
    raise AssertionError("unreachable")


def _write_archive(path: Path, manifest: dict[str, Any], members: list[tuple[str, Path]], now: float) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as archive:
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        archive.addfile(_member_info(MANIFEST_MEMBER, len(body), now), io.BytesIO(body))
        for name, source in members:
            with source.open("rb") as handle:
                archive.addfile(_member_info(name, source.stat().st_size, now), handle)


def _member_info(name: str, size: int, now: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(now)
    return info


# --- restore -------------------------------------------------------------------
def restore_backup(archive: Path, data_dir: Path, database_url: str, *, force: bool = False) -> RestoreReport:
    """Bring a backup back into `data_dir`, where no hub may be running.

    Everything is checked (the manifest, every digest, what would be replaced)
    before anything is written, so a refused restore leaves the directory as it was.
    """
    data_dir = data_dir.expanduser()
    if hub_is_running(data_dir):
        raise BackupError(
            f"a hub is running with data directory {data_dir} (it answers on {control_socket(data_dir)}): "
            "stop it first, then restore"
        )
    url = make_url(database_url)
    with _open_archive(archive) as tar, tempfile.TemporaryDirectory(prefix="linkhub-restore-") as scratch:
        manifest = _read_manifest(tar, archive)
        staged = _stage_members(tar, manifest, Path(scratch), archive)
        database = manifest["database"]
        target_db: Path | None = None
        notes = []
        if database.get("member"):
            if not _is_sqlite(url):
                raise BackupError(
                    "this backup holds a SQLite database, but the database here is "
                    f"{url.get_backend_name()}: restore into a data directory that uses SQLite"
                )
            target_db = _sqlite_path(url)
        else:
            notes.append(
                f"This backup holds no database (the hub used {database.get('kind')}, "
                f"{database.get('url')}): restore that from its pg_dump with pg_restore "
                "before starting the hub."
            )
        in_the_way = _in_the_way(data_dir, target_db, staged)
        if in_the_way and not force:
            raise BackupError(
                f"{data_dir} already holds {', '.join(in_the_way)}: restoring would replace "
                f"{'it' if len(in_the_way) == 1 else 'them'}. Pass --force to replace, "
                "or restore into a new data directory"
            )
        files = [entry for entry in manifest["files"] if entry["path"] != SESSION_KEY_FILE]
        try:
            _make_private_dir(data_dir)
            if target_db is not None:
                _put_database(staged[DATABASE_MEMBER], target_db)
            for entry in files:
                target = data_dir / entry["path"]
                _make_private_dir(target.parent)
                _put_file(staged[entry["member"]], target)
            # A new key when the hub starts: every session from before ends.
            (data_dir / SESSION_KEY_FILE).unlink(missing_ok=True)
        except OSError as exc:
            raise BackupError(f"cannot restore into {data_dir}: {exc}") from None
        notes.append("Everyone signs in to the web pages again: a backup holds no session key.")
    return RestoreReport(data_dir, manifest, target_db, [entry["path"] for entry in files], notes)


def hub_is_running(data_dir: Path) -> bool:
    """A hub answers on its control socket; a socket file left by a crash does not."""
    path = control_socket(data_dir)
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(2)
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def read_manifest(archive: Path) -> dict[str, Any]:
    """The manifest of a backup, checked (for showing what a file holds)."""
    with _open_archive(archive) as tar:
        return _read_manifest(tar, archive)


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tarfile.TarFile]:
    try:
        tar = tarfile.open(archive, mode="r:gz")  # noqa: SIM115  (closed below, after the checks)
    except FileNotFoundError:
        raise BackupError(f"there is no file {archive}") from None
    except _ARCHIVE_ERRORS as exc:
        raise BackupError(f"{archive} is not a LinkHub backup ({exc})") from None
    with tar:
        try:
            tar.getmembers()  # reads to the end: a truncated copy is found before anything else
        except _ARCHIVE_ERRORS as exc:
            raise BackupError(f"{archive} is damaged or truncated ({exc})") from None
        yield tar


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict[str, Any]:
    from hub.store.engine import known_revisions  # imported late: it pulls in Alembic

    try:
        handle = tar.extractfile(MANIFEST_MEMBER)
        manifest = json.load(handle) if handle is not None else None
    except (KeyError, ValueError, tarfile.TarError, OSError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{archive} is not a LinkHub backup (no LinkHub manifest in it)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise BackupError(
            f"{archive} was made by a newer LinkHub ({manifest.get('linkhub_version')}, backup format "
            f"{version}); this one reads format {FORMAT_VERSION}: restore it with that version"
        )
    database, files = manifest.get("database"), manifest.get("files")
    if not isinstance(database, dict) or not isinstance(files, list):
        raise BackupError(f"{archive}: its manifest is incomplete")
    for entry in files:
        if not isinstance(entry, dict) or entry.get("path") not in STATE_FILES:
            raise BackupError(f"{archive}: its manifest lists a file LinkHub does not restore: {entry!r}")
        if entry.get("member") != f"data/{entry['path']}":
            raise BackupError(f"{archive}: its manifest is inconsistent for {entry['path']}")
    if database.get("member") not in (None, DATABASE_MEMBER):
        raise BackupError(f"{archive}: its manifest names an unexpected database member")
    revision = database.get("schema_revision")
    if revision is not None and revision not in known_revisions():
        raise BackupError(
            f"{archive} holds a database at schema revision {revision}, which this LinkHub "
            f"({_linkhub_version()}) does not know: it was made by a newer one; restore it with that version"
        )
    return manifest


def _stage_members(
    tar: tarfile.TarFile, manifest: dict[str, Any], scratch: Path, archive: Path
) -> dict[str, Path]:
    """Every member the manifest names, copied out and checked against its digest.

    Only those names are read, and to paths made here: a member's own name
    never becomes a path on disk.
    """
    wanted: list[dict[str, Any]] = list(manifest["files"])
    if manifest["database"].get("member"):
        wanted.append(manifest["database"])
    staged = {}
    for number, entry in enumerate(wanted):
        member = entry["member"]
        try:
            handle = tar.extractfile(member)
        except KeyError:
            handle = None
        if handle is None:
            raise BackupError(f"{archive} is damaged: {member} is missing")
        target = scratch / f"member-{number}"
        try:
            digest = _copy_hashing(handle, target)
        except _ARCHIVE_ERRORS as exc:
            raise BackupError(f"{archive} is damaged: {member} cannot be read ({exc})") from None
        if digest != {"size": entry.get("size"), "sha256": entry.get("sha256")}:
            raise BackupError(f"{archive} is damaged: {member} does not match its manifest")
        staged[member] = target
    return staged


def _in_the_way(data_dir: Path, target_db: Path | None, staged: dict[str, Path]) -> list[str]:
    """What restoring would replace: a database always counts; a file only if it differs."""
    found = []
    if target_db is not None and target_db.exists():
        found.append(f"a database ({target_db})")
    for member, source in staged.items():
        if member == DATABASE_MEMBER:
            continue
        target = data_dir / member.removeprefix("data/")
        if target.exists() and target.read_bytes() != source.read_bytes():
            found.append(member.removeprefix("data/"))
    return found


def _put_database(source: Path, target: Path) -> None:
    """Replace the database file whole. The old one's -wal and -shm go first:
    SQLite would otherwise replay the old journal into the new database."""
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = target.with_name(target.name + ".restoring")
    _copy_private(source, incoming)
    for leftover in (target.with_name(target.name + "-wal"), target.with_name(target.name + "-shm")):
        leftover.unlink(missing_ok=True)
    os.replace(incoming, target)


def _put_file(source: Path, target: Path) -> None:
    incoming = target.with_name(target.name + ".restoring")
    _copy_private(source, incoming)
    os.replace(incoming, target)


def _copy_private(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out, source.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            out.write(chunk)


def _make_private_dir(path: Path) -> None:
    """The data directory and the broker's hold secrets: one made here is its
    owner's alone (an existing one keeps the mode its owner chose)."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)


# --- shared --------------------------------------------------------------------
def _is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory SQLite database cannot be backed up or restored")
    return Path(url.database).expanduser().absolute()


def _digest(path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        return {"size": path.stat().st_size, "sha256": hashlib.file_digest(handle, "sha256").hexdigest()}


def _copy_hashing(handle: IO[bytes], target: Path) -> dict[str, Any]:
    sha256, size = hashlib.sha256(), 0
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        while chunk := handle.read(_CHUNK):
            sha256.update(chunk)
            size += len(chunk)
            out.write(chunk)
    return {"size": size, "sha256": sha256.hexdigest()}


def _linkhub_version() -> str:
    try:
        return metadata.version("linkhub")
    except metadata.PackageNotFoundError:  # pragma: no cover - run from a source tree
        return "unknown"
