"""notify changes: every write to api_keys, tenants, tenant_signing_keys or customers sends NOTIFY
harmon_gateway_changes with the table's name, so each gateway drops what it remembered of that table

Revision ID: 0007
Revises: 0006
Create Date: 2027-01-10 10:00:00
"""
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

CHANNEL = 'harmon_gateway_changes'  # services/gateway/cache.py listens on it
TABLES = ('api_keys', 'tenants', 'tenant_signing_keys', 'customers')


def upgrade() -> None:
    # one notification per statement and table (PostgreSQL folds equal ones within a transaction), sent at commit
    op.execute(f"""
        CREATE FUNCTION harmon_gateway_notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('{CHANNEL}', TG_TABLE_NAME);
            RETURN NULL;
        END
        $$""")
    for table in TABLES:
        op.execute(f"""
            CREATE TRIGGER {table}_notify_change
            AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {table}
            FOR EACH STATEMENT EXECUTE FUNCTION harmon_gateway_notify_change()""")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP TRIGGER {table}_notify_change ON {table}")
    op.execute("DROP FUNCTION harmon_gateway_notify_change()")
