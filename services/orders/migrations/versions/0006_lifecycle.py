"""the order's lifecycle, order and invoice numbers, invoices and payments (issue 14)

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 12:00:00

Orders gain their number (`<prefix>-NNNNNN`, from a per-tenant, per-mode counter), the reservation they hold,
status transitions, fulfilments (JSON on the order: they are part of the aggregate) and the cancellation; lines
what was shipped and what their invoices bill so far. New tables, each scoped by row-level security: invoices,
payments (each allocated once; `remaining` is the account's unapplied credit) and counters. An order of an
earlier version keeps no number (`order_number` NULL) and starts its transitions with `confirmed` at creation.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

TABLES = ["invoices", "payments", "counters"]
_str = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.add_column('checkouts', sa.Column('order_prefix', _str(), nullable=True))
    for column in ('order_number', 'order_prefix', 'reservation_id', 'cancellation_reason', 'cancelled_by'):
        op.add_column('orders', sa.Column(column, _str(), nullable=True))
    op.add_column('orders', sa.Column('status_transitions', sa.JSON(), nullable=True))
    op.add_column('orders', sa.Column('fulfilments', sa.JSON(), nullable=True))
    op.execute("""UPDATE orders SET status_transitions = json_build_array(json_build_object(
                      'status', 'confirmed', 'at', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')))
                  WHERE status_transitions IS NULL""")
    op.execute("""UPDATE orders o SET reservation_id = c.reservation_id FROM checkouts c
                  WHERE c.id = o.checkout_id AND o.reservation_id IS NULL""")
    op.create_index('orders_number', 'orders', ['tenant_id', 'livemode', 'order_number'], unique=True)
    op.create_index('orders_by_number', 'orders', ['order_number'])
    for column in ('quantity_fulfilled', 'invoiced_subtotal', 'invoiced_tax'):
        op.add_column('order_lines', sa.Column(column, sa.BigInteger(), server_default='0', nullable=False))

    op.create_table('invoices',
    sa.Column('id', _str(), nullable=False),
    sa.Column('tenant_id', _str(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('invoice_number', _str(), nullable=False),
    sa.Column('order_id', _str(), nullable=False),
    sa.Column('order_number', _str(), nullable=True),
    sa.Column('customer_id', _str(), nullable=False),
    sa.Column('bill_to_id', _str(), nullable=False),
    sa.Column('fulfilment_id', _str(), nullable=False),
    sa.Column('reservation_id', _str(), nullable=True),
    sa.Column('status', _str(), nullable=False),
    sa.Column('terms', _str(), nullable=False),
    sa.Column('currency', _str(), nullable=False),
    sa.Column('subtotal', sa.BigInteger(), nullable=False),
    sa.Column('tax', sa.BigInteger(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('amount_paid', sa.BigInteger(), nullable=False),
    sa.Column('amount_due', sa.BigInteger(), nullable=False),
    sa.Column('overdue', sa.Boolean(), nullable=False),
    sa.Column('lines', sa.JSON(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('paid_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('voided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('invoices_number', 'invoices', ['tenant_id', 'livemode', 'invoice_number'], unique=True)
    op.create_index('invoices_by_order', 'invoices', ['order_id'])
    op.create_index('invoices_by_customer', 'invoices', ['customer_id', 'id'])
    op.create_index('invoices_open_by_bill_to', 'invoices', ['bill_to_id'], postgresql_where=sa.text("status = 'open'"))
    op.create_index('invoices_to_sweep', 'invoices', ['due_at'],
                    postgresql_where=sa.text("status = 'open' AND NOT overdue"))

    op.create_table('payments',
    sa.Column('tenant_id', _str(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('payment_id', _str(), nullable=False),
    sa.Column('bill_to_id', _str(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('currency', _str(), nullable=False),
    sa.Column('invoice_id', _str(), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('method', _str(), nullable=False),
    sa.Column('reference', _str(), nullable=True),
    sa.Column('digest', _str(), nullable=False),
    sa.Column('remaining', sa.BigInteger(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'livemode', 'payment_id')
    )
    op.create_index('payments_unapplied', 'payments', ['bill_to_id', 'received_at'],
                    postgresql_where=sa.text('remaining > 0'))

    op.create_table('counters',
    sa.Column('tenant_id', _str(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('kind', _str(), nullable=False),
    sa.Column('next', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'livemode', 'kind')
    )
    enable_row_scoping_v1(op, TABLES)


def downgrade() -> None:
    disable_row_scoping_v1(op, TABLES)
    op.drop_table('counters')
    op.drop_index('payments_unapplied', table_name='payments', postgresql_where=sa.text('remaining > 0'))
    op.drop_table('payments')
    for index in ('invoices_to_sweep', 'invoices_open_by_bill_to', 'invoices_by_customer', 'invoices_by_order',
                  'invoices_number'):
        op.drop_index(index, table_name='invoices')
    op.drop_table('invoices')
    for column in ('invoiced_tax', 'invoiced_subtotal', 'quantity_fulfilled'):
        op.drop_column('order_lines', column)
    op.drop_index('orders_by_number', table_name='orders')
    op.drop_index('orders_number', table_name='orders')
    for column in ('fulfilments', 'status_transitions', 'cancelled_by', 'cancellation_reason', 'reservation_id',
                   'order_prefix', 'order_number'):
        op.drop_column('orders', column)
    op.drop_column('checkouts', 'order_prefix')
