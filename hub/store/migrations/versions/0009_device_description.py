"""What a linked device has (issue 15): its description, to check its state and
commands against and to tell Home Assistant about.

- device_description: one row per device that described itself, the message's
  JSON as the hub accepted it, and when. Its state is not stored: the broker
  retains each device's last state message, and every hub reads it again when
  it starts (docs/protocol.md, "Components, state and commands").

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_description",
        sa.Column("device_id", sa.String(length=40), primary_key=True),
        sa.Column("description_json", sa.String(), nullable=False),
        sa.Column("described_at_s", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("device_description")
