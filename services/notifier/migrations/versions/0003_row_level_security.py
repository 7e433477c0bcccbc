"""row-level security: every table scoped to the transaction's tenant and mode

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 18:00:00
"""
from alembic import op

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# the notifier only inserts (no lookup by business key yet): no new index
TABLES = ["events", "outbox", "inbox", "parked"]


def upgrade() -> None:
    enable_row_scoping_v1(op, TABLES)


def downgrade() -> None:
    disable_row_scoping_v1(op, TABLES)
