"""A password the owner set must be replaced by its person (issue 14, item 5).

- account.password_must_change: set when the owner (or the hub's operator)
  gives a member a new password; the member chooses their own at the next
  sign-in before any page opens. False for every account before this revision.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(
            sa.Column("password_must_change", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    # The default only filled the rows already there; new rows get the model's own.
    with op.batch_alter_table("account") as batch:
        batch.alter_column("password_must_change", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.drop_column("password_must_change")
