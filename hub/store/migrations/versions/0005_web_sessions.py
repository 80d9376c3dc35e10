"""Sessions that end when their owner signs out (issue 19, item 3).

- web_session: one row per signed-in web session (a hash of its token), so that
  signing out ends it on the hub, not only in the browser that signed out.
- account: sessions_ended_at_s, set by "sign out everywhere": the sessions signed
  in before it end, on every hub that uses the account service.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("account") as batch:
        batch.add_column(sa.Column("sessions_ended_at_s", sa.Float(), nullable=True))
    op.create_table(
        "web_session",
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
    )
    op.create_index("ix_web_session_account_id", "web_session", ["account_id"])
    op.create_index("ix_web_session_expires_at_s", "web_session", ["expires_at_s"])


def downgrade() -> None:
    op.drop_index("ix_web_session_expires_at_s", table_name="web_session")
    op.drop_index("ix_web_session_account_id", table_name="web_session")
    op.drop_table("web_session")
    with op.batch_alter_table("account") as batch:
        batch.drop_column("sessions_ended_at_s")
