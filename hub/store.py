"""The database engine: SQLite (WAL) by default, PostgreSQL by URL.

The schema is Alembic's (hub/migrations): every engine brings its database to
the newest revision before anything else touches it, so a hub upgraded in place
upgrades its data too.

Alembic is imported only when a database is behind: it costs 11 MB of resident
memory for the life of the process (docs/performance.md), and a Pi Zero has
512 MB. `linkhub run` goes further and upgrades in a child process
(`migrate_in_child`), so the long-running hub never imports it at all.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, create_engine

from hub import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from hub.errors import LinkHubError

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# The newest revision in hub/migrations/versions, known without importing Alembic
# (tests/test_migrations.py checks that it is Alembic's head).
HEAD_REVISION = "0005"
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


def make_engine(database_url: str) -> Engine:
    """An engine whose database is at the newest schema: whoever opens it first
    (the hub, a CLI command, the account service) upgrades it."""
    if database_url.startswith("sqlite"):
        engine = create_engine(database_url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(database_url, pool_pre_ping=True)
    if _stored_revision(engine) != HEAD_REVISION:
        migrate(engine)
    return engine


def migrate_in_child(database_url: str) -> None:
    """Upgrade the database from a short-lived child process, so that this
    process never imports Alembic (see the module docstring)."""
    script = "import sys; from hub.store import make_engine; make_engine(sys.argv[1]).dispose()"
    result = subprocess.run(
        [sys.executable, "-c", script, database_url],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines()
        raise LinkHubError(f"upgrading the database failed: {lines[-1] if lines else 'no message'}")


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


def _adopt(config: Config, present: set[str]) -> None:
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
