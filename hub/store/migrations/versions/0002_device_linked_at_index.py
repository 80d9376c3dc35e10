"""An index on device.linked_at_s: the devices list is read in link order.

`LinkService.list_devices` (the /devices page, `linkhub devices`, the control
API) orders every device by `linked_at_s`; with this index the database walks it
in order instead of sorting the whole table each time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-05-01
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_device_linked_at_s"), "device", ["linked_at_s"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_device_linked_at_s"), table_name="device")
