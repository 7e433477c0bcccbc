"""row-level security: every table scoped to the transaction's tenant and mode; lookups by business key

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

TABLES = ["accounts", "reservations", "outbox", "inbox", "parked"]


def upgrade() -> None:
    enable_row_scoping_v1(op, TABLES)
    # the scope is not in the SQL any more, so lookups need indexes that do not start with tenant_id
    op.create_index("accounts_by_customer", "accounts", ["customer_id"])
    op.create_index("reservations_open_by_bill_to", "reservations", ["bill_to_id"],
                    postgresql_where="status = 'reserved'")


def downgrade() -> None:
    op.drop_index("reservations_open_by_bill_to", table_name="reservations")
    op.drop_index("accounts_by_customer", table_name="accounts")
    disable_row_scoping_v1(op, TABLES)
