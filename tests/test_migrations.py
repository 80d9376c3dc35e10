"""The schema's history (hub/store/migrations) on SQLite and PostgreSQL.

A database made with the first schema, rows in every table, is upgraded and
every row is found again through the hub's own services and models; one made
before migrations existed is adopted; the models and the revisions agree.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from argon2 import PasswordHasher
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, select

from hub.core.accounts import ChangeKind
from hub.core.linking import LinkState
from hub.errors import LinkHubError
from hub.services.activity import ActivityLog
from hub.services.links import CodeStatus, LinkPolicy, LinkService
from hub.services.local_accounts import AccountService
from hub.services.outbox import Outbox
from hub.services.settings import SettingsService
from hub.store.engine import (
    BASELINE_REVISION,
    BASELINE_TABLES,
    HEAD_REVISION,
    alembic_config,
    current_revision,
    head_revision,
    make_engine,
    migrate_in_child,
)
from hub.store.models import (
    Account,
    AccountPreferences,
    BrokerIdentity,
    ChangeLogEntry,
    Device,
    DeviceSettingsRecord,
    DeviceShadow,
    LinkRequestRecord,
    OutboxEntry,
    PreferencesCache,
)

NOW_S = 1_800_000_000.0
PASSWORD = "correct horse battery"
SETTINGS_TABLES = BASELINE_TABLES - {"account", "link_request", "device"}

# Every table of revision 0001 and every column, NULLs and booleans included.
# Integer keys the database makes itself (account.id, the two `seq`) are left
# out, as the hub leaves them out: PostgreSQL's sequences must move on too.
FIRST_SCHEMA_ROWS: dict[str, list[dict[str, Any]]] = {
    "account": [
        {"name": "alice", "password_hash": "", "is_owner": True, "created_at_s": NOW_S - 900},
        {"name": "bob", "password_hash": "", "is_owner": False, "created_at_s": NOW_S - 800},
    ],
    "link_request": [
        {
            "request_id": "req-linked",
            "user_code": "BCDFGHJK",
            "reply_to": "linkhub/v1/link/reply/tok-1",
            "correlation_hex": "c0ffee",
            "device_name": "Kitchen Lamp",
            "device_model": "LMP-1",
            "device_address": "192.168.1.20",
            "device_firmware": "1.0.3",
            "state": "linked",
            "created_at_s": NOW_S - 700,
            "expires_at_s": NOW_S + 200,
            "decided_at_s": NOW_S - 650,
            "account_id": 1,
            "device_id": "dev-000000000001",
            "issued_password": None,
        },
        {
            "request_id": "req-pending",
            "user_code": "LMNPQRST",
            "reply_to": "linkhub/v1/link/reply/tok-2",
            "correlation_hex": None,
            "device_name": "Desk Fan",
            "device_model": "FAN-2",
            "device_address": None,
            "device_firmware": None,
            "state": "pending",
            "created_at_s": NOW_S - 60,
            "expires_at_s": NOW_S + 840,
            "decided_at_s": None,
            "account_id": None,
            "device_id": None,
            "issued_password": None,
        },
    ],
    "device": [
        {
            "device_id": "dev-000000000001",
            "account_id": 1,
            "name": "Kitchen Lamp",
            "model": "LMP-1",
            "address": "192.168.1.20",
            "request_id": "req-linked",
            "linked_at_s": NOW_S - 650,
            "confirmed": True,
            "online": False,
            "last_seen_at_s": NOW_S - 100,
        },
        {
            "device_id": "dev-000000000002",
            "account_id": 2,
            "name": "Porch Light",
            "model": "LMP-2",
            "address": None,
            "request_id": "req-gone",
            "linked_at_s": NOW_S - 300,
            "confirmed": False,
            "online": False,
            "last_seen_at_s": None,
        },
    ],
    "preferences_cache": [{"account_id": 1, "document_json": '{"theme":"dark"}', "version": 2}],
    "device_shadow": [
        {
            "device_id": "dev-000000000001",
            "account_id": 1,
            "settings_json": '{"brightness":40}',
            "desired_json": '{"brightness":40,"theme":"dark"}',
            "desired_version": 3,
            "key_versions_json": '{"brightness":3,"theme":2}',
            "reported_json": '{"brightness":40,"theme":"dark"}',
            "applied_version": 3,
            "reported_at_s": NOW_S - 120,
            "changed_at_s": NOW_S - 130,
        },
        {
            "device_id": "dev-000000000002",
            "account_id": 2,
            "settings_json": "{}",
            "desired_json": "{}",
            "desired_version": 1,
            "key_versions_json": "{}",
            "reported_json": None,
            "applied_version": None,
            "reported_at_s": None,
            "changed_at_s": None,
        },
    ],
    "settings_outbox": [
        {
            "change_id": "chg-delivered",
            "kind": "preferences",
            "account_id": 1,
            "device_id": None,
            "patch_json": '{"theme":"dark"}',
            "version": 2,
            "origin": "web",
            "made_at_s": NOW_S - 140,
            "attempts": 1,
            "next_attempt_at_s": 0.0,
            "delivered_at_s": NOW_S - 139,
            "last_error": None,
        },
        {
            "change_id": "chg-queued",
            "kind": "device_settings",
            "account_id": 1,
            "device_id": "dev-000000000001",
            "patch_json": '{"brightness":40}',
            "version": 1,
            "origin": "cli",
            "made_at_s": NOW_S - 130,
            "attempts": 3,
            "next_attempt_at_s": NOW_S + 5,
            "delivered_at_s": None,
            "last_error": "account service unreachable",
        },
    ],
    "account_preferences": [{"account_id": 1, "document_json": '{"theme":"dark"}', "version": 2}],
    "account_device_settings": [
        {"device_id": "dev-000000000001", "account_id": 1, "document_json": "{}", "version": 0}
    ],
    "account_change_log": [
        {
            "change_id": "chg-delivered",
            "kind": "preferences",
            "account_id": 1,
            "device_id": None,
            "patch_json": '{"theme":"dark"}',
            "version": 2,
            "origin": "web",
            "made_at_s": NOW_S - 140,
            "received_at_s": NOW_S - 139,
        }
    ],
}
MODELS: dict[str, type[SQLModel]] = {
    "account": Account,
    "link_request": LinkRequestRecord,
    "device": Device,
    "preferences_cache": PreferencesCache,
    "device_shadow": DeviceShadow,
    "settings_outbox": OutboxEntry,
    "account_preferences": AccountPreferences,
    "account_device_settings": DeviceSettingsRecord,
    "account_change_log": ChangeLogEntry,
}
GENERATED_KEYS = {"account": "id", "settings_outbox": "seq", "account_change_log": "seq"}
# Tables of later revisions: 0003, 0005, 0006, 0009, 0010.
LATER_TABLES = {
    "recovery_code", "activity", "web_session", "broker_identity", "device_description",
    "oauth_app", "oauth_grant", "oauth_family", "oauth_token",
}  # fmt: skip
# Columns later revisions added to first-schema tables, and what an upgraded row holds in them.
ADDED_COLUMNS: dict[str, dict[str, Any]] = {
    "account": {
        "totp_secret": None,
        "totp_enabled_at_s": None,
        "totp_last_step": None,  # 0003
        "removed_at_s": None,  # 0004
        "sessions_ended_at_s": None,  # 0005
        "password_must_change": False,  # 0008
    },
    "link_request": {"device_public_key": None, "client_id": None},  # 0003
    "device": {"unlinked_at_s": None},  # 0003
}


@pytest.fixture(scope="module")
def password_hash() -> str:
    return PasswordHasher().hash(PASSWORD)


@pytest.fixture
def raw_engine(database_url: str) -> Iterator[Engine]:
    """An engine that migrates nothing by itself: the test says how far."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def upgrade_to(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


def revision_of(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return current_revision(connection)


def tables_of(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return set(inspect(connection).get_table_names())


def insert_first_schema_rows(engine: Engine, password_hash: str, tables: set[str] = BASELINE_TABLES) -> None:
    """Plain SQL, as a hub running the first schema would have left its rows."""
    with engine.begin() as connection:
        for table, rows in FIRST_SCHEMA_ROWS.items():
            if table not in tables:
                continue
            for row in rows:
                values = {**row, "password_hash": password_hash} if table == "account" else row
                columns = ", ".join(values)
                placeholders = ", ".join(f":{name}" for name in values)
                connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"), values)


def expected_rows(table: str, password_hash: str) -> list[dict[str, Any]]:
    """The rows inserted, each with the key the database gave it (1, 2, ... in order)."""
    rows = []
    for number, row in enumerate(FIRST_SCHEMA_ROWS[table], start=1):
        expected = {**row, "password_hash": password_hash} if table == "account" else dict(row)
        expected.update(ADDED_COLUMNS.get(table, {}))
        if table in GENERATED_KEYS:
            expected[GENERATED_KEYS[table]] = number
        rows.append(expected)
    return rows


def assert_every_row_is_there(engine: Engine, password_hash: str, tables: set[str] = BASELINE_TABLES) -> None:
    with Session(engine) as session:
        for table in sorted(tables):
            model = MODELS[table]
            found = [row.model_dump() for row in session.exec(select(model)).all()]
            key = next(iter(model.__table__.primary_key.columns)).name  # type: ignore[attr-defined]
            assert sorted(found, key=lambda row: row[key]) == expected_rows(table, password_hash), table


class _NoBroker:
    def issue_device(self, device_id: str, password: str) -> None:
        raise AssertionError("nothing is linked in this test")

    def revoke_device(self, device_id: str) -> None:
        raise AssertionError("nothing is revoked in this test")

    def device_clients(self) -> set[str]:
        raise AssertionError("the broker is not asked in this test")

    def send_reply(self, reply_to: str, reply: Any, correlation: bytes | None) -> None:
        raise AssertionError("no device is answered in this test")

    def send_to_devices(self, messages: Any) -> list[Any]:
        raise AssertionError("no device is sent settings in this test")

    def clear_device_topics(self, device_id: str) -> list[str]:
        raise AssertionError("nothing is unlinked in this test")


def services(engine: Engine) -> tuple[AccountService, LinkService, SettingsService, Outbox]:
    accounts = AccountService(engine, lambda: NOW_S)
    policy = LinkPolicy(
        code_lifetime_s=900,
        poll_interval_s=5,
        link_page_url="http://hub.test/link",
        device_broker_host="127.0.0.1",
        device_broker_port=1884,
    )
    activity = ActivityLog(engine, lambda: NOW_S)
    links = LinkService(
        engine, policy, _NoBroker(), _NoBroker(), clock=lambda: NOW_S, activity=activity, retained=_NoBroker()
    )
    settings = SettingsService(engine, _NoBroker(), clock=lambda: NOW_S, activity=activity)
    return accounts, links, settings, Outbox(engine, accounts, clock=lambda: NOW_S)


def test_an_upgrade_from_the_first_schema_finds_every_row(
    raw_engine: Engine, database_url: str, password_hash: str
) -> None:
    upgrade_to(raw_engine, BASELINE_REVISION)
    assert tables_of(raw_engine) == BASELINE_TABLES | {"alembic_version"}
    insert_first_schema_rows(raw_engine, password_hash)

    engine = make_engine(database_url)  # what a hub does at start: upgrade to head
    try:
        assert revision_of(engine) == head_revision() != BASELINE_REVISION
        assert_every_row_is_there(engine, password_hash)

        # ...and the hub's own services read them as before.
        accounts, links, settings, outbox = services(engine)
        alice = accounts.authenticate("alice", PASSWORD)
        assert alice is not None and (alice.id, alice.is_owner) == (1, True)
        assert accounts.find("bob") is not None and accounts.find("bob").id == 2  # type: ignore[union-attr]
        assert accounts.preferences(1).document == {"theme": "dark"}
        assert accounts.preferences(1).version == 2
        assert accounts.device_settings("dev-000000000001").version == 0
        (logged,) = accounts.changes()
        assert (logged.seq, logged.change.change_id, logged.change.kind) == (
            1,
            "chg-delivered",
            ChangeKind.PREFERENCES,
        )
        assert [d.name for d in links.list_devices()] == ["Kitchen Lamp", "Porch Light"]
        assert [d.device_id for d in links.list_devices(account_id=2)] == ["dev-000000000002"]
        pending = links.lookup_code("lmnp-qrst")
        assert pending.status is CodeStatus.PENDING and pending.request is not None
        assert pending.request.device_name == "Desk Fan" and pending.request.state is LinkState.PENDING
        assert links.lookup_code("BCDF-GHJK", account_id=1).status is CodeStatus.USED_BY_YOU
        assert settings.preferences(1).document == {"theme": "dark"}
        lamp = settings.device_view("dev-000000000001")
        assert lamp is not None and lamp.synced and lamp.settings == {"brightness": 40}
        assert lamp.desired == {"brightness": 40, "theme": "dark"}
        assert outbox.pending() == 1

        # The devices' broker identities are known from the devices already linked (0006).
        with Session(engine) as session:
            identities = {
                row.device_id: (row.request_id, row.linked_at_s, row.revoked_at_s)
                for row in session.exec(select(BrokerIdentity)).all()
            }
        assert identities == {
            "dev-000000000001": ("req-linked", NOW_S - 650, None),
            "dev-000000000002": ("req-gone", NOW_S - 300, None),
        }

        # New rows still get new keys (PostgreSQL's sequences were not left behind).
        carol = accounts.create("carol", PASSWORD)
        assert carol.id == 3 and not carol.is_owner
    finally:
        engine.dispose()


def test_a_database_made_before_migrations_is_adopted(
    raw_engine: Engine, database_url: str, password_hash: str
) -> None:
    # What `SQLModel.metadata.create_all` made before migrations: revision 0001's
    # tables and no alembic_version.
    upgrade_to(raw_engine, BASELINE_REVISION)
    with raw_engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    insert_first_schema_rows(raw_engine, password_hash)

    engine = make_engine(database_url)
    try:
        assert revision_of(engine) == head_revision()
        assert_every_row_is_there(engine, password_hash)
        assert models_differences(engine) == []
    finally:
        engine.dispose()


def test_a_database_from_before_the_settings_tables_gets_them(
    raw_engine: Engine, database_url: str, password_hash: str
) -> None:
    """The first hubs made only account, link_request and device; create_all
    added the others at start, so adopting must add them too."""
    upgrade_to(raw_engine, BASELINE_REVISION)
    with raw_engine.begin() as connection:
        for table in [*SETTINGS_TABLES, "alembic_version"]:
            connection.execute(text(f"DROP TABLE {table}"))
    early = BASELINE_TABLES - SETTINGS_TABLES
    insert_first_schema_rows(raw_engine, password_hash, tables=early)

    engine = make_engine(database_url)
    try:
        assert revision_of(engine) == head_revision()
        assert tables_of(engine) == BASELINE_TABLES | LATER_TABLES | {"alembic_version"}
        assert_every_row_is_there(engine, password_hash, tables=early)
        assert models_differences(engine) == []
    finally:
        engine.dispose()


def models_differences(engine: Engine) -> list[Any]:
    """What `alembic check` would report: the models against the database."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, SQLModel.metadata)


def test_the_models_and_the_migrations_agree(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        assert models_differences(engine) == []
    finally:
        engine.dispose()


def test_the_check_sees_a_model_change_without_a_revision(raw_engine: Engine) -> None:
    """The comparison has teeth: at 0002 what 0003 adds is reported missing."""
    upgrade_to(raw_engine, "0002")
    found: set[tuple[str, str]] = set()
    for difference in models_differences(raw_engine):
        if isinstance(difference, list):  # column changes come grouped
            continue
        kind = difference[0]
        if kind == "add_table":
            found.add((kind, difference[1].name))
        elif kind == "add_column":
            found.add((kind, f"{difference[2]}.{difference[3].name}"))
    assert {
        ("add_table", "activity"),
        ("add_table", "recovery_code"),
        ("add_column", "account.totp_secret"),
        ("add_column", "link_request.device_public_key"),
        ("add_column", "device.unlinked_at_s"),
    } <= found


def test_downgrade_to_nothing_and_up_again(raw_engine: Engine, database_url: str) -> None:
    make_engine(database_url).dispose()
    with raw_engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert tables_of(raw_engine) <= {"alembic_version"}
    make_engine(database_url).dispose()
    assert revision_of(raw_engine) == head_revision()
    assert models_differences(raw_engine) == []


def test_processes_starting_at_once_upgrade_once(database_url: str, raw_engine: Engine) -> None:
    """The hub, a CLI command and an account service may open a new database
    together: the migration lock lets one create the tables, the others wait."""
    script = "import sys; from hub.store.engine import make_engine; make_engine(sys.argv[1]).dispose()"
    processes = [
        subprocess.Popen([sys.executable, "-c", script, database_url], stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
    assert revision_of(raw_engine) == head_revision()
    assert tables_of(raw_engine) == BASELINE_TABLES | LATER_TABLES | {"alembic_version"}


def test_the_head_known_without_alembic_is_alembics_head() -> None:
    """`make_engine` skips Alembic when the database is at HEAD_REVISION: a new
    revision without a new HEAD_REVISION would never be applied."""
    assert head_revision() == HEAD_REVISION


def test_an_up_to_date_database_opens_without_importing_alembic(database_url: str) -> None:
    """Alembic costs 11 MB for the life of a process (docs/performance.md)."""
    make_engine(database_url).dispose()  # now at head
    script = (
        "import sys; from hub.store.engine import make_engine; make_engine(sys.argv[1]).dispose(); "
        "print('alembic' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script, database_url], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_migrate_in_child_upgrades_and_reports_failure(raw_engine: Engine, database_url: str) -> None:
    migrate_in_child(database_url)
    assert revision_of(raw_engine) == head_revision()
    with pytest.raises(LinkHubError) as failed:
        migrate_in_child(f"postgresql+psycopg://nobody@127.0.0.1:{closed_port()}/none")
    message = str(failed.value)
    # The error itself and what to do, not SQLAlchemy's help link (issue 18 §6).
    assert "sqlalche.me" not in message and "Background on this error" not in message
    assert message.startswith("upgrading the postgresql database to schema revision")
    assert "Connection refused" in message
    assert "Check that the database answers" in message and "Nothing was changed" in message


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_migration_that_fails_says_why_and_changes_nothing(raw_engine: Engine, database_url: str) -> None:
    """A revision that fails half-way (here: its table is in the way) names the
    database's own error, and the database stays at the revision it was."""
    upgrade_to(raw_engine, "0004")
    with raw_engine.begin() as connection:
        connection.execute(text("CREATE TABLE broker_identity (in_the_way INTEGER)"))
    with pytest.raises(LinkHubError) as failed:
        migrate_in_child(database_url)
    message = str(failed.value)
    assert "sqlalche.me" not in message and "[SQL:" not in message
    assert "broker_identity" in message and "already exists" in message
    assert "Nothing was changed" in message
    assert revision_of(raw_engine) == "0004"
