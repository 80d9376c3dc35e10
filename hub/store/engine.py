"""The database engine: SQLite (WAL) by default, PostgreSQL by URL.

The schema is Alembic's (hub/store/migrations): every engine brings its database to
the newest revision before anything else touches it, so a hub upgraded in place
upgrades its data too.

Alembic is imported only when a database is behind: it costs 11 MB of resident
memory for the life of the process (docs/performance.md), and a Pi Zero has
512 MB. `linkhub run` goes further and upgrades in a child process
(`migrate_in_child`), so the long-running hub never imports it at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, UnboundExecutionError
from sqlmodel import Session, create_engine

from hub.errors import ConfigError, LinkHubError, StorageFull
from hub.store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest revision in hub/store/migrations/versions, known without importing Alembic
# (tests/test_migrations.py checks that it is Alembic's head).
HEAD_REVISION = "0010"
# The revision that is the schema as create_all made it before migrations, and its tables.
BASELINE_REVISION = "0001"
BASELINE_TABLES = frozenset(
    {
        "account",
        "link_request",
        "device",
        "preferences_cache",
        "device_shadow",
        "settings_outbox",
        "account_preferences",
        "account_device_settings",
        "account_change_log",
    }
)
# Any constant will do: it only has to be the same for every LinkHub process.
_PG_MIGRATION_LOCK = 0x4C494E4B485542  # "LINKHUB"
# Alembic's `context` and `op` are module globals: one migration at a time per process.
_MIGRATING = threading.Lock()
# The first key of the two-key advisory locks on an account's settings (`lock_account_settings`).
_PG_SETTINGS_LOCK = 0x4C48_5353  # "LHSS"


def make_engine(database_url: str) -> Engine:
    """An engine whose database is at the newest schema: whoever opens it first
    (the hub, a CLI command, the account service) upgrades it."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(database_url, pool_pre_ping=True)
    if _stored_revision(engine) != HEAD_REVISION:
        try:
            migrate(engine)
        except Exception as exc:
            engine.dispose()
            raise LinkHubError(_upgrade_failed(engine.dialect.name, exc)) from exc
    return engine


def _upgrade_failed(backend: str, exc: BaseException) -> str:
    """What a person reads when the upgrade at start fails: the error itself, then what to do."""
    return (
        f"upgrading the {backend} database to schema revision {HEAD_REVISION} failed: "
        f"{describe_database_error(exc)}. Nothing was changed (the upgrade runs in one transaction). "
        "Check that the database answers and that its user may create and alter tables "
        "(`linkhub config check` shows which database the hub uses), then start the hub again."
    )


def describe_database_error(exc: BaseException) -> str:
    """The error in the driver's own words, on one line. SQLAlchemy wraps it with
    the statement it ran and a last line "(Background on this error at:
    https://sqlalche.me/...)", which is all a person saw when only the last line
    of the error was shown."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        text_ = str(exc.orig)
    elif isinstance(exc, SQLAlchemyError):
        text_ = str(exc).split("\n[SQL:", 1)[0]
    else:
        text_ = str(exc)
    lines = [
        line.strip()
        for line in text_.splitlines()
        if line.strip() and not line.strip().startswith("(Background on this error at")
    ]
    return "; ".join(lines) or type(exc).__name__


def migrate_in_child(database_url: str) -> None:
    """Upgrade the database from a short-lived child process, so that this
    process never imports Alembic (see the module docstring)."""
    script = "import sys; from hub.store.engine import _upgrade_main; sys.exit(_upgrade_main(sys.argv[1]))"
    result = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode == _UPGRADE_FAILED:
        raise LinkHubError(result.stderr.strip())
    if result.returncode != 0:  # something unforeseen: its last words, not a help link
        lines = [
            line
            for line in result.stderr.strip().splitlines()
            if not line.strip().startswith("(Background on this error at")
        ]
        raise LinkHubError(f"upgrading the database failed: {lines[-1] if lines else 'no message'}")


_UPGRADE_FAILED = 3


def _upgrade_main(database_url: str) -> int:
    """The child process of `migrate_in_child`: the message on stderr, and its own exit code."""
    try:
        make_engine(database_url).dispose()
    except LinkHubError as exc:
        print(exc, file=sys.stderr)
        return _UPGRADE_FAILED
    return 0


def _stored_revision(engine: Engine) -> str | None:
    """The revision recorded in the database, or None (no table yet, or unreadable):
    a plain SELECT, so a database that is up to date never loads Alembic."""
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code: the revisions ship in the package,
    so an installed hub needs no alembic.ini and no working directory of its own."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this code knows (what `migrate` brings a database to)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def migrate(engine: Engine) -> None:
    """Bring the database to the newest revision, in one locked transaction.

    The lock matters because several processes may open the same database at
    once (the hub, a CLI command, a separate account service): one upgrades,
    the others wait and then find nothing left to do. A database made before
    migrations (its tables there, no alembic_version) is adopted, not recreated.
    """
    from alembic import command

    _quiet_alembic()
    with _MIGRATING, engine.connect() as connection:
        _lock_for_migration(connection)
        config = alembic_config(connection)
        before = current_revision(connection)
        if before is None:
            present = BASELINE_TABLES & set(inspect(connection).get_table_names())
            if present:
                _adopt(config, present)
        command.upgrade(config, "head")
        after = current_revision(connection)
        connection.commit()
    if after != before:
        log.info("database schema upgraded from %s to %s", before or "nothing", after)


def _quiet_alembic() -> None:
    """Alembic tells at INFO what it sets up on every start; the hub logs at INFO.
    Unless someone chose a level for it, keep its warnings and say the rest once."""
    alembic_log = logging.getLogger("alembic")
    if alembic_log.level == logging.NOTSET:
        alembic_log.setLevel(logging.WARNING)


def _lock_for_migration(connection: Connection) -> None:
    if connection.dialect.name == "sqlite":
        # pysqlite starts no transaction before DDL; this one also takes the write lock now.
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")


def _adopt(config: Config, present: AbstractSet[str]) -> None:
    """A database made by `create_all` before migrations: it holds revision 0001."""
    from alembic import command

    missing = BASELINE_TABLES - present
    if not missing:
        log.info("database made before migrations: recording it as revision %s", BASELINE_REVISION)
        command.stamp(config, BASELINE_REVISION)
        return
    # An older LinkHub made fewer tables (create_all used to add the rest at start).
    log.info("database made before migrations, without %s: adding them", ", ".join(sorted(missing)))
    config.attributes["adopt_existing_tables"] = True
    try:
        command.upgrade(config, BASELINE_REVISION)
    finally:
        config.attributes.pop("adopt_existing_tables")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the web, the MQTT handler and CLI commands read while one writes.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """One unit of work: committed on success, rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def lock_account_settings(session: Session, account_id: int) -> None:
    """Hold an account's settings (its preferences and every device shadow of it)
    until the session's transaction ends, across every hub on this database.

    One lock per account, not per row: a preference change rewrites the desired
    document of each of the account's devices, and a device's change reads the
    preferences. An advisory lock also covers rows not made yet (a shadow made on
    first use, the first preferences). PostgreSQL's transaction-level advisory
    lock is released by the commit or rollback, or when a killed hub's connection
    drops (PostgreSQL docs, "Advisory Locks"). Take it before reading what the
    change depends on: under READ COMMITTED every later statement then sees what
    the previous holder committed.

    SQLite needs nothing here: only one hub may use a SQLite file
    (`SingleHubLock`), and within a hub the settings service's own lock
    serialises writers.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(:space, :key)"),
            {"space": _PG_SETTINGS_LOCK, "key": account_id},
        )


class SingleHubLock:
    """One hub per SQLite database file, held for the life of the hub.

    Two hubs on one SQLite file are refused rather than supported: hubs that
    share a database coordinate through PostgreSQL's row and advisory locks
    (`lock_account_settings`, the outbox's `FOR UPDATE`), which SQLite has no
    equivalent of short of taking its one write lock for every read-modify-write.
    The lock is an flock on `<database>.hub-lock`: the kernel drops it when the
    holder dies, so a killed hub never leaves a stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @classmethod
    def for_url(cls, database_url: str) -> SingleHubLock | None:
        """The lock for a SQLite file database; None for PostgreSQL or an in-memory one."""
        url = make_url(database_url)
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(Path(f"{url.database}.hub-lock"))

    def acquire(self) -> None:
        """Take the lock, or raise ConfigError saying which hub holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            database = self.path.with_suffix("")
            raise ConfigError(
                f"another hub (process {holder}) is already running on the SQLite database {database}; "
                "only one hub may use a SQLite database. Stop the other hub first, or give this one "
                "a database of its own (--data-dir, --database-url); several hubs can share a "
                "PostgreSQL database"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let go; the file stays, since removing a locked file races with the next taker."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the only descriptor releases the flock
# --- free space in the data directory ------------------------------------------------
MB = 1024 * 1024


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on `path`'s file system
    (statvfs f_bavail: root's reserve does not count, the hub should not need it)."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


class SpaceGuard:
    """Refuses new writes while the data directory has less than `min_free_bytes`.

    A full disk half-way through a write is what damages files (issue 18 §3:
    mosquitto's dynamic-security file cut short); SQLite itself survives
    SQLITE_FULL, but the hub must stop growing well before that, say why, and
    keep serving what is stored. The threshold leaves room for what is still
    written while refused: the broker's files, logs, SQLite's WAL checkpoints.
    `probe` is injected in tests; 0 bytes disables the guard.
    """

    def __init__(
        self, directory: Path, min_free_bytes: int, *, probe: Callable[[Path], int] = free_bytes
    ) -> None:
        self.directory = directory
        self.min_free_bytes = min_free_bytes
        self.probe = probe

    def shortage(self) -> str | None:
        """Why writes are refused now, or None when there is room."""
        if self.min_free_bytes <= 0:
            return None
        try:
            free = self.probe(self.directory)
        except OSError as exc:  # the directory went away or cannot be read: not a place to write
            return f"the data directory {self.directory} cannot be checked ({exc.strerror or exc})"
        if free >= self.min_free_bytes:
            return None
        return (
            f"the data directory {self.directory} has {free / MB:.1f} MB free, less than the "
            f"{self.min_free_bytes / MB:g} MB the hub keeps free; it stores nothing new until "
            "space is freed (what is stored is kept and still served)"
        )

    def check(self) -> None:
        reason = self.shortage()
        if reason is not None:
            raise StorageFull(reason)


# The guard of each engine: every session flush on it is checked (_refuse_when_full).
_GUARDS: weakref.WeakKeyDictionary[Engine, SpaceGuard] = weakref.WeakKeyDictionary()


def guard_writes(engine: Engine, guard: SpaceGuard) -> None:
    """From now on, a session on `engine` that would write raises StorageFull
    (before anything reaches the database) while `guard` reports a shortage.

    Checked at the flush, the one place every ORM write goes through, so the
    settings path, links, accounts and activity are all covered; deletes made
    by retention (hub/services/retention.py) run outside sessions and go on freeing rows.
    """
    _GUARDS[engine] = guard


@event.listens_for(Session, "before_flush")
def _refuse_when_full(session: Session, _context: Any, _instances: Any) -> None:
    try:
        bind = session.get_bind()
    except UnboundExecutionError:  # a session on no engine: nothing of ours to guard
        return
    guard = _GUARDS.get(bind.engine if isinstance(bind, Connection) else bind)
    if guard is not None:
        guard.check()
