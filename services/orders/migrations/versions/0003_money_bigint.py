"""money and quantities as BIGINT: an order over 2**31 - 1 minor units could be priced but not stored

Revision ID: 0003_money_bigint
Revises: 0002
Create Date: 2026-12-01 10:00:00
"""
from alembic import op


revision = '0003_money_bigint'
down_revision = '0002'
branch_labels = None
depends_on = None

COLUMNS = {
    "orders": ("subtotal", "tax", "total"),
    "order_lines": ("order_quantity", "factor", "base_quantity", "unit_price", "subtotal", "tax", "total"),
}


def _retype(sql_type: str) -> None:
    # one ALTER TABLE per table: PostgreSQL rewrites the table once, not once per column
    for table, columns in COLUMNS.items():
        op.execute(f"ALTER TABLE {table} " + ", ".join(f"ALTER COLUMN {c} TYPE {sql_type}" for c in columns))


def upgrade() -> None:
    _retype("BIGINT")


def downgrade() -> None:
    _retype("INTEGER")  # fails, as it should, while a stored value is above 2**31 - 1
