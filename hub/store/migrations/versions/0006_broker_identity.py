"""Broker identities recorded before they are made (issue 18 §4, issue 19 item 17).

- broker_identity: one row per device login the hub asked the broker for,
  written (committed) before the broker is asked, so a hub killed between the
  two leaves a row the reconciler finds, not a login nothing names. Filled here
  from the devices already linked, so their logins are known too.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_identity",
        sa.Column("device_id", sa.String(length=40), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("issued_at_s", sa.Float(), nullable=False),
        sa.Column("linked_at_s", sa.Float(), nullable=True),
        sa.Column("revoked_at_s", sa.Float(), nullable=True),
        sa.Column("revoked_reason", sa.String(length=32), nullable=True),
        sa.PrimaryKeyConstraint("device_id"),
    )
    op.create_index(
        op.f("ix_broker_identity_revoked_at_s"), "broker_identity", ["revoked_at_s"], unique=False
    )
    op.execute(
        sa.text(
            "INSERT INTO broker_identity (device_id, request_id, issued_at_s, linked_at_s, revoked_at_s, "
            "revoked_reason) SELECT device_id, request_id, linked_at_s, linked_at_s, unlinked_at_s, "
            "CASE WHEN unlinked_at_s IS NULL THEN NULL ELSE 'unlinked' END FROM device"
        )
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_broker_identity_revoked_at_s"), table_name="broker_identity")
    op.drop_table("broker_identity")
