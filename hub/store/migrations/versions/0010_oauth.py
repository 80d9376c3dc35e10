"""Apps linked over HTTP (issue 16): the OAuth 2.0 device authorization grant.

- oauth_app: the apps the owner registered (client_id, name, allowed scopes).
- oauth_grant: each device authorization request, by its device_code's hash.
- oauth_family: a linked app, one per approval; revoking it ends its tokens.
- oauth_token: access and refresh tokens, by their hash.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oauth_app",
        sa.Column("client_id", sa.String(length=128), primary_key=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("registered_at_s", sa.Float(), nullable=False),
    )
    op.create_table(
        "oauth_grant",
        sa.Column("device_code_hash", sa.String(length=64), primary_key=True),
        sa.Column("user_code", sa.String(length=8), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("app_name", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("interval_s", sa.Integer(), nullable=False),
        sa.Column("last_poll_s", sa.Float(), nullable=True),
        sa.Column("account_id", sa.Integer(), nullable=True),
        sa.Column("decided_at_s", sa.Float(), nullable=True),
        sa.Column("family_id", sa.String(length=40), nullable=True),
    )
    op.create_index("ix_oauth_grant_user_code", "oauth_grant", ["user_code"])
    op.create_index("ix_oauth_grant_state", "oauth_grant", ["state"])
    op.create_table(
        "oauth_family",
        sa.Column("family_id", sa.String(length=40), primary_key=True),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("app_name", sa.String(length=64), nullable=True),
        sa.Column("scopes", sa.String(length=255), nullable=False),
        sa.Column("linked_at_s", sa.Float(), nullable=False),
        sa.Column("last_used_s", sa.Float(), nullable=True),
        sa.Column("revoked_at_s", sa.Float(), nullable=True),
        sa.Column("revoked_why", sa.String(length=32), nullable=True),
    )
    op.create_index("ix_oauth_family_account_id", "oauth_family", ["account_id"])
    op.create_table(
        "oauth_token",
        sa.Column("token_hash", sa.String(length=64), primary_key=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("family_id", sa.String(length=40), nullable=False),
        sa.Column("issued_at_s", sa.Float(), nullable=False),
        sa.Column("expires_at_s", sa.Float(), nullable=False),
        sa.Column("used_at_s", sa.Float(), nullable=True),
    )
    op.create_index("ix_oauth_token_family_id", "oauth_token", ["family_id"])
    op.create_index("ix_oauth_token_expires_at_s", "oauth_token", ["expires_at_s"])


def downgrade() -> None:
    for table in ("oauth_token", "oauth_family", "oauth_grant", "oauth_app"):
        op.drop_table(table)
