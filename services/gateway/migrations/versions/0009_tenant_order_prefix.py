"""tenants: the prefix of their order numbers (`ACME-000042`, docs/api.md "Orders"), sent with PlaceOrder

Revision ID: 0009
Revises: 0008
Create Date: 2027-02-01 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: a gateway of the previous version may still create tenants during a rolling deploy (orders then
    # uses "ORD"); existing tenants get the default `harmon tenants create` derives (admin.default_order_prefix)
    op.add_column('tenants', sa.Column('order_prefix', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.execute("""
        UPDATE tenants SET order_prefix = COALESCE(
            NULLIF(left(upper(regexp_replace(name, '[^A-Za-z0-9]+', '', 'g')), 6), ''), 'ORD')""")


def downgrade() -> None:
    op.drop_column('tenants', 'order_prefix')
