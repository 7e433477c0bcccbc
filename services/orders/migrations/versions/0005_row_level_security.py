"""row-level security on every table; the checkout saga of fewer hops: what a checkout has received, bill-to,
terms and reservation fixed when it is placed, and lookups by business key

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 19:00:00

The saga (services/orders/domain.py) now waits for pricing's CheckoutPriced and credit's answer in either
order. State values are kept ('freezing', 'pricing', 'reserving' stay the active ones), but 'pricing' now
means "credit answered first"; a checkout of the three-step saga still waiting for LinesPriced is moved
back to 'freezing', and the resume after the restart asks again from the cart (every step is idempotent).
Downgrading leaves 'pricing' checkouts waiting for a LinesPriced that will not come: they expire and are
compensated.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TABLES = ["customers", "checkouts", "orders", "order_lines", "outbox", "inbox", "parked"]
ACTIVE = sa.text("state IN ('freezing', 'pricing', 'reserving')")


def upgrade() -> None:
    # CreditReserved, once received (CheckoutPriced goes into frozen_lines and priced, as LinesPriced did)
    op.add_column('checkouts', sa.Column('reserved_bill_to_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('checkouts', sa.Column('reserved_amount', sa.BigInteger(), nullable=True))
    op.execute("UPDATE checkouts SET state = 'freezing', frozen_lines = NULL WHERE state = 'pricing'")
    # bill-to, terms and the reservation id are fixed at PlaceOrder now (they were set at pricing)
    op.execute("""
        UPDATE checkouts c SET
            bill_to_id = coalesce(c.bill_to_id, (SELECT cu.bill_to_id FROM customers cu WHERE cu.tenant_id = c.tenant_id
                                                 AND cu.livemode = c.livemode AND cu.customer_id = c.customer_id),
                                  c.customer_id),
            terms = coalesce(c.terms, (SELECT cu.terms FROM customers cu WHERE cu.tenant_id = c.tenant_id
                                       AND cu.livemode = c.livemode AND cu.customer_id = c.customer_id), 'cod'),
            reservation_id = coalesce(c.reservation_id, 'res_' || substr(c.id, 5) || 'a' || c.attempt)
        WHERE c.bill_to_id IS NULL OR c.terms IS NULL OR c.reservation_id IS NULL""")
    for column in ('bill_to_id', 'terms', 'reservation_id'):
        op.alter_column('checkouts', column, nullable=False)

    enable_row_scoping_v1(op, TABLES)
    # the scope is not in the SQL any more, so lookups need indexes that do not start with tenant_id
    op.create_index('customers_by_customer', 'customers', ['customer_id'])
    op.create_index('checkouts_by_key', 'checkouts', ['idempotency_key'],
                    postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.create_index('checkouts_active_by_cart', 'checkouts', ['cart_id'], postgresql_where=ACTIVE)
    op.create_index('orders_by_cart', 'orders', ['cart_id'])
    op.create_index('orders_by_customer', 'orders', ['customer_id', 'id'])
    op.drop_index('orders_customer', table_name='orders')  # led by tenant_id: orders_by_customer serves its query


def downgrade() -> None:
    op.create_index('orders_customer', 'orders', ['tenant_id', 'livemode', 'customer_id', 'id'])
    op.drop_index('orders_by_customer', table_name='orders')
    op.drop_index('orders_by_cart', table_name='orders')
    op.drop_index('checkouts_active_by_cart', table_name='checkouts', postgresql_where=ACTIVE)
    op.drop_index('checkouts_by_key', table_name='checkouts', postgresql_where=sa.text('idempotency_key IS NOT NULL'))
    op.drop_index('customers_by_customer', table_name='customers')
    disable_row_scoping_v1(op, TABLES)
    for column in ('bill_to_id', 'terms', 'reservation_id'):
        op.alter_column('checkouts', column, nullable=True)
    op.drop_column('checkouts', 'reserved_amount')
    op.drop_column('checkouts', 'reserved_bill_to_id')
