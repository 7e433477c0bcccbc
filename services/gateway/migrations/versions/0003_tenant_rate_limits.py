"""tenants: their own rate limits per API key (requests, shopper-token mints)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: existing tenants keep the deployment's defaults
    op.add_column('tenants', sa.Column('rate_limit', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('tenants', sa.Column('mint_rate_limit', sqlmodel.sql.sqltypes.AutoString(), nullable=True))


def downgrade() -> None:
    op.drop_column('tenants', 'mint_rate_limit')
    op.drop_column('tenants', 'rate_limit')
