"""Every service's migrations build exactly the schema its tables declare: a model change without a
migration fails here, not in production."""

import importlib

import pytest
import sqlalchemy as sa
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


# Money, and every quantity that multiplies into money: named so in every service's tables.
MONEY_AND_QUANTITIES = {"amount", "unit_amount", "unit_price", "subtotal", "tax", "total", "credit_limit",
                        "order_quantity", "base_quantity", "factor", "min_quantity"}


def test_money_and_quantities_are_bigint_in_every_table():
    """An order over 2**31 - 1 cents must be storable wherever money or quantities are (the migrated schema
    equals these tables, above)."""
    found, narrow = [], []
    for service in SERVICES:
        for table in importlib.import_module(f"services.{service}.tables").metadata.sorted_tables:
            for col in table.columns:
                if col.name in MONEY_AND_QUANTITIES:
                    found.append(f"{service}.{table.name}.{col.name}")
                    if not isinstance(col.type, sa.BigInteger):
                        narrow.append(f"{service}.{table.name}.{col.name}: {col.type}")
    assert len(found) >= 16, found
    assert narrow == [], narrow
