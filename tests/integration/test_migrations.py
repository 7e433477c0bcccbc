"""Every service's migrations build exactly the schema its tables declare: a model change without a
migration fails here, not in production."""

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from libs.runtime.db import make_engine
from libs.stack.supervisor import SERVICES


@pytest.mark.parametrize("service", SERVICES)
async def test_migrated_schema_matches_the_tables(stack, service):
    metadata = importlib.import_module(f"services.{service}.tables").metadata
    engine = make_engine(stack.dsns[service])
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    assert diff == [], f"{service}: tables and migrations differ: {diff}"


@pytest.mark.parametrize("service", SERVICES)
def test_every_table_carries_tenant_and_mode(service):
    metadata = importlib.import_module(f"services.{service}.tables").metadata
    for table in metadata.sorted_tables:
        if table.name == "tenants":  # a tenant row is the tenant
            continue
        assert {"tenant_id", "livemode"} <= set(table.columns.keys()), f"{service}.{table.name} lacks tenant_id/livemode"
