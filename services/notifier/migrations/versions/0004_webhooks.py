"""webhooks: endpoints, sealed secrets, pending deliveries and their attempts (issue 15), row-scoped

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10 12:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel

from libs.runtime.migrations import disable_row_scoping_v1, enable_row_scoping_v1

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

TABLES = ["webhook_endpoints", "webhook_secrets", "webhook_deliveries", "webhook_attempts"]
S = sqlmodel.sql.sqltypes.AutoString
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table('webhook_endpoints',
    sa.Column('id', S(), nullable=False),
    sa.Column('tenant_id', S(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('url', S(), nullable=False),
    sa.Column('enabled_events', sa.ARRAY(sa.Text()), nullable=False),
    sa.Column('description', S(), nullable=True),
    sa.Column('status', S(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('failing_since', TS, nullable=True),
    sa.Column('leased_until', TS, nullable=True),
    sa.Column('lease_owner', S(), nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_webhook_endpoints_tenant_id'), 'webhook_endpoints', ['tenant_id'], unique=False)
    op.create_table('webhook_secrets',
    sa.Column('id', S(), nullable=False),
    sa.Column('tenant_id', S(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('sealed', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('expires_at', TS, nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index(op.f('ix_webhook_secrets_endpoint_id'), 'webhook_secrets', ['endpoint_id'], unique=False)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('tenant_id', S(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('event_id', S(), nullable=False),
    sa.Column('event_type', S(), nullable=False),
    sa.Column('status', S(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('next_attempt_at', TS, nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'livemode', 'endpoint_id', 'event_id'))
    op.create_index('webhook_deliveries_due', 'webhook_deliveries', ['endpoint_id', 'next_attempt_at'], unique=False,
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_table('webhook_attempts',
    sa.Column('id', S(), nullable=False),
    sa.Column('tenant_id', S(), nullable=False),
    sa.Column('livemode', sa.Boolean(), nullable=False),
    sa.Column('delivery_id', sa.BigInteger(), nullable=False),
    sa.Column('endpoint_id', S(), nullable=False),
    sa.Column('event_id', S(), nullable=False),
    sa.Column('event_type', S(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('attempted_at', TS, nullable=False),
    sa.Column('outcome', S(), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('error', S(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('response_body', S(), nullable=False),
    sa.Column('next_attempt_at', TS, nullable=True),
    sa.PrimaryKeyConstraint('id'))
    op.create_index('webhook_attempts_endpoint', 'webhook_attempts', ['endpoint_id', 'id'], unique=False)
    enable_row_scoping_v1(op, TABLES)


def downgrade() -> None:
    disable_row_scoping_v1(op, TABLES)
    op.drop_index('webhook_attempts_endpoint', table_name='webhook_attempts')
    op.drop_table('webhook_attempts')
    op.drop_index('webhook_deliveries_due', table_name='webhook_deliveries', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('webhook_deliveries')
    op.drop_index(op.f('ix_webhook_secrets_endpoint_id'), table_name='webhook_secrets')
    op.drop_table('webhook_secrets')
    op.drop_index(op.f('ix_webhook_endpoints_tenant_id'), table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
