"""Unfinished clearings of an unlinked device's retained topics survive a restart
(issue 19, item 9).

- broker_identity.retained_cleared_at_s: when the hub last finished emptying
  the unlinked device's retained topics. NULL on an identity revoked by an
  unlink means the clearing is not finished: the hub retries it as a job,
  after a restart too. Identities revoked before this revision count as
  cleared (at their revocation): the hubs before it cleared them then, and a
  leftover status is still cleared when seen.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("broker_identity") as batch:
        batch.add_column(sa.Column("retained_cleared_at_s", sa.Float(), nullable=True))
    op.execute(
        sa.text(
            "UPDATE broker_identity SET retained_cleared_at_s = revoked_at_s WHERE revoked_at_s IS NOT NULL"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("broker_identity") as batch:
        batch.drop_column("retained_cleared_at_s")
