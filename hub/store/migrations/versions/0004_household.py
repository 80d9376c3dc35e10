"""Households (issue 5): the owner removes a member's account.

- account: removed_at_s (NULL = in use). A removed account keeps its row, so its
  id is never given to a new account: SQLite hands out the highest rowid plus
  one, and would reuse a deleted last row's id, and with it the activity,
  preferences and settings history kept under that id.
- account: the unique index on name covers the accounts in use only, so a
  removed member's name can be given to a new account (with a new id).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_IN_USE = sa.text("removed_at_s IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("removed_at_s", sa.Float(), nullable=True))
    op.drop_index("ix_account_name", table_name="account")
    op.create_index(
        "ix_account_name",
        "account",
        ["name"],
        unique=True,
        sqlite_where=_IN_USE,
        postgresql_where=_IN_USE,
    )


def downgrade() -> None:
    # Removed accounts cannot come back as in use: their rows go, and with them
    # any clash with a newer account of the same name. Their history stays
    # under their (now unused) ids, as in any database before this revision.
    op.execute(sa.text("DELETE FROM account WHERE removed_at_s IS NOT NULL"))
    op.drop_index("ix_account_name", table_name="account")
    op.create_index("ix_account_name", "account", ["name"], unique=True)
    with op.batch_alter_table("account") as batch:
        batch.drop_column("removed_at_s")
