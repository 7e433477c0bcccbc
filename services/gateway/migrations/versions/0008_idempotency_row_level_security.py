"""idempotency records scoped by row-level security (the store is on plain asyncpg); a lookup by key

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 18:40:00
"""
from alembic import op

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TABLES = ["idempotency_records"]


def upgrade() -> None:
    enable_row_scoping_v1(op, TABLES)
    op.create_index("idempotency_records_by_key", "idempotency_records", ["key"])


def downgrade() -> None:
    op.drop_index("idempotency_records_by_key", table_name="idempotency_records")
    disable_row_scoping_v1(op, TABLES)
