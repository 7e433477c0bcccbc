"""cart uniqueness per tenant and mode: another tenant naming the same cart id must not collide with it

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 21:30:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('freezing', 'pricing', 'reserving')")


def upgrade() -> None:
    op.drop_index('checkouts_active_cart', table_name='checkouts', postgresql_where=ACTIVE)
    op.create_index('checkouts_active_cart', 'checkouts', ['tenant_id', 'livemode', 'cart_id'], unique=True,
                    postgresql_where=ACTIVE)
    op.drop_constraint('orders_cart_id_key', 'orders', type_='unique')
    op.create_index('orders_cart', 'orders', ['tenant_id', 'livemode', 'cart_id'], unique=True)


def downgrade() -> None:
    op.drop_index('orders_cart', table_name='orders')
    op.create_unique_constraint('orders_cart_id_key', 'orders', ['cart_id'])
    op.drop_index('checkouts_active_cart', table_name='checkouts', postgresql_where=ACTIVE)
    op.create_index('checkouts_active_cart', 'checkouts', ['cart_id'], unique=True, postgresql_where=ACTIVE)
