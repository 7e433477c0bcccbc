"""lifecycle: captured reservations, the account version, invoice copies and the unapplied-credit ledger (issue 14)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLES = ["invoice_copies", "unapplied_credit"]


def upgrade() -> None:
    op.add_column('reservations', sa.Column('captured', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('accounts', sa.Column('version', sa.BigInteger(), server_default='0', nullable=False))
    # a reservation fully captured by its invoices holds nothing: out of the index exposure reads
    op.drop_index('reservations_open_by_bill_to', table_name='reservations')
    op.create_index('reservations_holding_by_bill_to', 'reservations', ['bill_to_id'],
                    postgresql_where=sa.text("status = 'reserved' AND captured < amount"))
    op.create_table('invoice_copies',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('invoice_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('bill_to_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('invoice_number', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('total', sa.BigInteger(), nullable=False),
    sa.Column('amount_due', sa.BigInteger(), nullable=False),
    sa.Column('issued_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('overdue', sa.Boolean(), nullable=False),
    sa.Column('version', sa.BigInteger(), nullable=False),
    sa.Column('reservation_id', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('captured', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id', 'livemode', 'invoice_id')
    )
    op.create_index('invoice_copies_by_id', 'invoice_copies', ['invoice_id'])
    op.create_index('invoice_copies_open_by_bill_to', 'invoice_copies', ['bill_to_id'],
                    postgresql_where=sa.text("status = 'open'"))
    op.create_table('unapplied_credit',
    sa.Column('tenant_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('payment_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('invoice_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('bill_to_id', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('amount', sa.BigInteger(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'livemode', 'payment_id', 'invoice_id')
    )
    op.create_index('unapplied_credit_by_bill_to', 'unapplied_credit', ['bill_to_id', 'payment_id'])
    enable_row_scoping_v1(op, TABLES)


def downgrade() -> None:
    disable_row_scoping_v1(op, TABLES)
    op.drop_index('unapplied_credit_by_bill_to', table_name='unapplied_credit')
    op.drop_table('unapplied_credit')
    op.drop_index('invoice_copies_open_by_bill_to', table_name='invoice_copies')
    op.drop_index('invoice_copies_by_id', table_name='invoice_copies')
    op.drop_table('invoice_copies')
    op.drop_index('reservations_holding_by_bill_to', table_name='reservations')
    op.create_index('reservations_open_by_bill_to', 'reservations', ['bill_to_id'],
                    postgresql_where=sa.text("status = 'reserved'"))
    op.drop_column('accounts', 'version')
    op.drop_column('reservations', 'captured')
