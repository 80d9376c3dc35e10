"""Security (issue 5): two-factor sign-in, recovery codes, unlink, sealed
credentials and the recent-activity log.

- account: totp_secret, totp_enabled_at_s, totp_last_step (NULL = no second factor)
- recovery_code: one-time sign-in codes, hashed
- link_request: device_public_key (X25519, base64) and client_id (the MQTT client that asked)
- device: unlinked_at_s (the row and its settings history stay after an unlink)
- activity: one row per event a person may want to review

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("totp_secret", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("totp_enabled_at_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("totp_last_step", sa.Integer(), nullable=True))
    op.create_table(
        "recovery_code",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(length=255), nullable=False),
        sa.Column("used_at_s", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_recovery_code_account_id"), "recovery_code", ["account_id"], unique=False)
    with op.batch_alter_table("link_request") as batch:
        batch.add_column(sa.Column("device_public_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("client_id", sa.String(length=128), nullable=True))
    with op.batch_alter_table("device") as batch:
        batch.add_column(sa.Column("unlinked_at_s", sa.Float(), nullable=True))
        batch.create_index(batch.f("ix_device_unlinked_at_s"), ["unlinked_at_s"], unique=False)
    op.create_table(
        "activity",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("at_s", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("device_id", sa.String(length=40), nullable=True),
        sa.Column("detail", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_activity_account_id"), "activity", ["account_id"], unique=False)
    op.create_index(op.f("ix_activity_at_s"), "activity", ["at_s"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_activity_at_s"), table_name="activity")
    op.drop_index(op.f("ix_activity_account_id"), table_name="activity")
    op.drop_table("activity")
    with op.batch_alter_table("device") as batch:
        batch.drop_index(batch.f("ix_device_unlinked_at_s"))
        batch.drop_column("unlinked_at_s")
    with op.batch_alter_table("link_request") as batch:
        batch.drop_column("client_id")
        batch.drop_column("device_public_key")
    op.drop_index(op.f("ix_recovery_code_account_id"), table_name="recovery_code")
    op.drop_table("recovery_code")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("totp_last_step")
        batch.drop_column("totp_enabled_at_s")
        batch.drop_column("totp_secret")
