"""row-level security: every table scoped to the transaction's tenant and mode; lookups by business key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:00:00
"""
from alembic import op

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLES = ["products", "prices", "customers", "outbox", "inbox", "parked"]


def upgrade() -> None:
    enable_row_scoping_v1(op, TABLES)
    # the scope is not in the SQL any more, so lookups need indexes that do not start with tenant_id
    op.create_index("products_by_sku", "products", ["sku"])
    op.drop_index("prices_by_sku", table_name="prices")
    op.create_index("prices_by_sku", "prices", ["sku"])
    op.create_index("customers_by_id", "customers", ["customer_id"])


def downgrade() -> None:
    op.drop_index("customers_by_id", table_name="customers")
    op.drop_index("prices_by_sku", table_name="prices")
    op.create_index("prices_by_sku", "prices", ["tenant_id", "livemode", "sku"])
    op.drop_index("products_by_sku", table_name="products")
    disable_row_scoping_v1(op, TABLES)
