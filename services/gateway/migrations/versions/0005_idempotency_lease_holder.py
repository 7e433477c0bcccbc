"""idempotency records: the gateway instance holding a lease, so a restarted instance releases its own at once

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: leases taken before this revision name no holder and lapse as before
    op.add_column('idempotency_records', sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    op.drop_column('idempotency_records', 'holder')
