"""Database tables (SQLModel). Times are UTC epoch seconds (`*_s`), so SQLite and
PostgreSQL store the same thing and tests can move a clock without time zones."""

from __future__ import annotations

from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=64)
    password_hash: str = Field(max_length=255)
    is_owner: bool = False
    created_at_s: float


class LinkRequestRecord(SQLModel, table=True):
    """One device's link request, from its first message to its final outcome.

    Kept after the outcome, so a late poll gets a clear answer and the page can
    tell "expired" from "already used" from "unknown".
    """

    __tablename__ = "link_request"

    request_id: str = Field(primary_key=True, max_length=64)
    user_code: str = Field(index=True, max_length=8)
    reply_to: str = Field(max_length=128)
    # MQTT 5 correlation data (hex), echoed on every reply; None for MQTT 3.1.1.
    correlation_hex: str | None = Field(default=None, max_length=256)
    device_name: str = Field(max_length=64)
    device_model: str = Field(max_length=64)
    device_address: str | None = Field(default=None, max_length=64)
    device_firmware: str | None = Field(default=None, max_length=32)
    state: str = Field(index=True, max_length=16)
    created_at_s: float
    expires_at_s: float
    decided_at_s: float | None = None
    account_id: int | None = Field(default=None, foreign_key="account.id")
    device_id: str | None = Field(default=None, index=True, max_length=40)
    # Held only between approval and the device's first connection (see linking.py).
    issued_password: str | None = Field(default=None, max_length=128)


class Device(SQLModel, table=True):
    device_id: str = Field(primary_key=True, max_length=40)
    account_id: int = Field(foreign_key="account.id", index=True)
    name: str = Field(max_length=64)
    model: str = Field(max_length=64)
    address: str | None = Field(default=None, max_length=64)
    request_id: str = Field(max_length=64)
    linked_at_s: float
    confirmed: bool = False
    online: bool = False
    last_seen_at_s: float | None = None
