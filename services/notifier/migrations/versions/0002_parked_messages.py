"""parked messages: transient failures kept in key order until they succeed or are dead-lettered

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 15:00:00
"""
from alembic import op

from libs.runtime.migrations import create_parked_table

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_parked_table(op)


def downgrade() -> None:
    op.drop_index('parked_key', table_name='parked')
    op.drop_table('parked')
