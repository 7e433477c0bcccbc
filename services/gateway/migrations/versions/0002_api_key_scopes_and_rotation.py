"""api keys: scopes (restricted keys), a name, and expires_at (the end of a rotated key's overlap)

Revision ID: 0002
Revises: 0001
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # all nullable: existing keys stay unrestricted, unnamed and without an end
    op.add_column('api_keys', sa.Column('scopes', sa.JSON(), nullable=True))
    op.add_column('api_keys', sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=True))
    op.add_column('api_keys', sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.drop_column('api_keys', 'expires_at')
    op.drop_column('api_keys', 'name')
    op.drop_column('api_keys', 'scopes')
