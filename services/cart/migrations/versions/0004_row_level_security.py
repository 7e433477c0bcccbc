"""row-level security: every table scoped to the transaction's tenant and mode; lookups by business key

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 18:30:00
"""
from alembic import op

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLES = ["carts", "cart_lines", "products", "outbox", "inbox", "parked"]


def upgrade() -> None:
    enable_row_scoping_v1(op, TABLES)
    # the scope is not in the SQL any more, so a product is looked up by an index that does not start with
    # tenant_id (carts and lines are found by their ids and cart_id, already indexed so)
    op.create_index("products_by_sku", "products", ["sku"])


def downgrade() -> None:
    op.drop_index("products_by_sku", table_name="products")
    disable_row_scoping_v1(op, TABLES)
