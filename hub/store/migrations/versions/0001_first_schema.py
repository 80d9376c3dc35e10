"""The first schema: every table as `hub/store/models.py` had it before migrations.

Written out table by table (not `metadata.create_all`), so it stays what it was
when the models change; each later change is a revision of its own.

A database made before migrations by `create_all` holds exactly this and is
stamped at 0001 by `hub.store.engine.migrate`. One made by an older LinkHub may hold
only some of these tables (the first hubs had no settings tables); for it,
migrate runs this revision with `adopt_existing_tables` set, and the tables
already there are left as they are.

Revision ID: 0001
Revises:
Create Date: 2026-05-01
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from alembic import context, op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _account() -> None:
    op.create_table(
        "account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("is_owner", sa.Boolean(), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_account_name"), "account", ["name"], unique=True)


def _link_request() -> None:
    op.create_table(
        "link_request",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("user_code", sa.String(length=8), nullable=False),
        sa.Column("reply_to", sa.String(length=128), nullable=False),
        sa.Column("correlation_hex", sa.String(length=256), nullable=True),
        sa.Column("device_name", sa.String(length=64), nullable=False),
        sa.Column("device_model", sa.String(length=64), nullable=False),
        sa.Column("device_address", sa.String(length=64), nullable=True),
        sa.Column("device_firmware", sa.String(length=32), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("decided_at_s", sa.Float(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("device_id", sa.String(length=40), nullable=True),
        sa.Column("issued_password", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("request_id"),
    )
    op.create_index(op.f("ix_link_request_device_id"), "link_request", ["device_id"], unique=False)
    op.create_index(op.f("ix_link_request_state"), "link_request", ["state"], unique=False)
    op.create_index(op.f("ix_link_request_user_code"), "link_request", ["user_code"], unique=False)


def _device() -> None:
    op.create_table(
        "device",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("linked_at_s", sa.Float(), nullable=False),
        sa.Column("confirmed", sa.Boolean(), nullable=False),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("last_seen_at_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(op.f("ix_device_account_id"), "device", ["account_id"], unique=False)


def _preferences_cache() -> None:
    op.create_table(
        "preferences_cache",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("document_json", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )


def _device_shadow() -> None:
    op.create_table(
        "device_shadow",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("settings_json", sa.String(), nullable=False),
        sa.Column("desired_json", sa.String(), nullable=False),
        sa.Column("desired_version", sa.Integer(), nullable=False),
        sa.Column("key_versions_json", sa.String(), nullable=False),
        sa.Column("reported_json", sa.String(), nullable=True),
        sa.Column("applied_version", sa.Integer(), nullable=True),
        sa.Column("reported_at_s", sa.Float(), nullable=True),
        sa.Column("changed_at_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(op.f("ix_device_shadow_account_id"), "device_shadow", ["account_id"], unique=False)


def _settings_outbox() -> None:
    op.create_table(
        "settings_outbox",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=True),
        sa.Column("patch_json", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("made_at_s", sa.Float(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at_s", sa.Float(), nullable=False),
        sa.Column("delivered_at_s", sa.Float(), nullable=True),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("change_id"),
    )
    op.create_index(
        op.f("ix_settings_outbox_delivered_at_s"), "settings_outbox", ["delivered_at_s"], unique=False
    )


def _account_preferences() -> None:
    op.create_table(
        "account_preferences",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("document_json", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("account_id"),
    )


def _account_device_settings() -> None:
    op.create_table(
        "account_device_settings",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("document_json", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(
        op.f("ix_account_device_settings_account_id"), "account_device_settings", ["account_id"], unique=False
    )


def _account_change_log() -> None:
    op.create_table(
        "account_change_log",
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=40), nullable=True),
        sa.Column("patch_json", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("made_at_s", sa.Float(), nullable=False),
        sa.Column("received_at_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("change_id"),
    )


# In creation order; hub.store.engine.BASELINE_TABLES names the same tables.
_TABLES: dict[str, Callable[[], None]] = {
    "account": _account,
    "link_request": _link_request,
    "device": _device,
    "preferences_cache": _preferences_cache,
    "device_shadow": _device_shadow,
    "settings_outbox": _settings_outbox,
    "account_preferences": _account_preferences,
    "account_device_settings": _account_device_settings,
    "account_change_log": _account_change_log,
}


def upgrade() -> None:
    keep: set[str] = set()
    if context.config.attributes.get("adopt_existing_tables"):
        keep = set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in _TABLES.items():
        if name not in keep:
            create()


def downgrade() -> None:
    for name in reversed(_TABLES):
        op.drop_table(name)
