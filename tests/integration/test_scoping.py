"""Tenant and mode scoping, tried against real PostgreSQL for every scoped table of every service.

Each service's tables are created in a scratch schema of that service's own database (its own
role), rows are written for tenant A/test, A/live and B/test, and a session bound to A/test must
see, update and delete only A/test rows, must be refused a B row, and an unbound session must
raise. Tables are found by their columns, so a new table is tried without editing this file.
"""

import importlib
import itertools
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.contracts.ids import new_id
from libs.runtime.db import make_engine, make_sessionmaker
from libs.runtime.scoping import ScopeError, bind, scoped_tables, unscoped_session
from libs.stack.supervisor import SERVICES

_serial = itertools.count(1)


def _value(col: sa.Column):
    """A fresh value of the column's type; a new column type without one fails loudly here."""
    n, t = next(_serial), col.type
    t = t.impl_instance if isinstance(t, sa.TypeDecorator) else t  # sqlmodel AutoString is a String
    if isinstance(t, sa.Boolean):
        return True
    if isinstance(t, sa.Integer):
        return n
    if isinstance(t, sa.String):
        return f"{col.name[:8]}_{n}"
    if isinstance(t, sa.DateTime):
        return datetime.now(UTC)
    if isinstance(t, sa.JSON):
        return {"n": n}
    if isinstance(t, sa.LargeBinary):
        return b"v%d" % n
    pytest.fail(f"no test value for {col.table.name}.{col.name} of type {t!r}: teach _value() about it")


def _row(table: sa.Table, tenant_id: str, livemode: bool, made: dict) -> dict:
    """One row of `table` for a scope; a foreign key points at the row made for the same scope."""
    row: dict = {}
    for col in table.columns:
        if col.identity is not None:
            continue
        if col.name == "tenant_id":
            row[col.name] = tenant_id
        elif col.name == "livemode":
            row[col.name] = livemode
        elif col.foreign_keys:
            ref = next(iter(col.foreign_keys)).column
            row[col.name] = made[(ref.table.name, tenant_id, livemode)][ref.name]
        else:
            row[col.name] = _value(col)
    return row


def _updatable(table: sa.Table) -> sa.Column:
    for col in table.columns:
        if not (col.primary_key or col.foreign_keys or col.identity is not None or col.unique
                or col.name in ("tenant_id", "livemode")):
            return col
    pytest.fail(f"{table.name} has no column this test can update")


@pytest.mark.parametrize("service", SERVICES)
async def test_a_session_sees_and_touches_only_its_tenant_and_mode(stack, service):
    module = importlib.import_module(f"services.{service}.tables")
    metadata: sa.MetaData = module.metadata
    classes = {m.local_table.name: m.class_ for m in module.Base._sa_registry.mappers}
    tables = scoped_tables(metadata)
    assert tables, f"{service} has no scoped tables"
    schema = f"scoping_{new_id('t').lower()[-12:]}"
    engine = make_engine(stack.dsns[service], pool_size=2).execution_options(schema_translate_map={None: schema})
    sessions = make_sessionmaker(engine)
    a, b = new_id("ten"), new_id("ten")
    scopes = [(a, False), (a, True), (b, False)]
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.CreateSchema(schema))
            await conn.run_sync(metadata.create_all)

        made: dict = {}
        # parents that are not scoped (the gateway's tenants): one row per tenant, named by it
        async with sessions() as s:
            unscoped_session(s, "test set-up: parent rows")
            for table in metadata.sorted_tables:
                if table not in tables:
                    for tenant_id in (a, b):
                        row = {c.name: (tenant_id if c.primary_key else _value(c)) for c in table.columns}
                        await s.execute(sa.insert(table).values(**row))
                        for livemode in (False, True):
                            made[(table.name, tenant_id, livemode)] = row
            await s.commit()
        for tenant_id, livemode in scopes:
            async with sessions() as s:
                bind(s, tenant_id, livemode)
                for table in tables:
                    row = _row(table, tenant_id, livemode, made)
                    made[(table.name, tenant_id, livemode)] = row
                    await s.execute(sa.insert(table).values(**row))
                await s.commit()

        async def count_all(table: sa.Table, **where) -> int:
            async with sessions() as s:
                unscoped_session(s, "test: counting every tenant's rows")
                stmt = sa.select(sa.func.count()).select_from(table)
                for k, v in where.items():
                    stmt = stmt.where(table.c[k] == v)
                return await s.scalar(stmt)

        for table in tables:
            name = f"{service}.{table.name}"
            mine, theirs = made[(table.name, a, False)], made[(table.name, b, False)]
            other_mode = made[(table.name, a, True)]
            cls = classes.get(table.name)

            # selects see only A/test: a bare select, a lookup by the other rows' keys, joins to parents
            async with sessions() as s:
                bind(s, a, False)
                if cls is not None:
                    rows = (await s.execute(sa.select(cls))).scalars().all()
                    assert [(r.tenant_id, r.livemode) for r in rows] == [(a, False)], name
                    assert await s.scalar(sa.select(sa.func.count()).select_from(cls)) == 1, name
                    for other in (theirs, other_mode):
                        pk = tuple(other[c.name] for c in table.primary_key.columns)
                        assert await s.get(cls, pk if len(pk) > 1 else pk[0]) is None, f"{name}: get by another's key"
                    for col in table.columns:
                        for fk in col.foreign_keys:
                            parent = classes.get(fk.column.table.name)
                            if parent is None or fk.column.table not in tables:
                                continue
                            joined = (await s.execute(
                                sa.select(cls.tenant_id, parent.tenant_id, parent.livemode)
                                .join(parent, getattr(parent, fk.column.name) == getattr(cls, col.name))
                            )).all()
                            assert joined == [(a, a, False)], f"{name}: join to {fk.column.table.name}"
                            inner = sa.select(getattr(parent, fk.column.name))
                            sub = (await s.execute(sa.select(cls).where(getattr(cls, col.name).in_(inner)))).all()
                            assert len(sub) == 1, f"{name}: subquery on {fk.column.table.name}"
                else:
                    # a table without a mapped class (outbox, inbox): a Core SELECT cannot be scoped, so it is refused
                    with pytest.raises(ScopeError):
                        await s.execute(sa.select(table))

            # an update and a delete touch only A/test
            target = _updatable(table)
            new_value = _value(target)
            async with sessions() as s:
                bind(s, a, False)
                entity = cls if cls is not None else table
                stmt = sa.update(entity).values({target.name: new_value})
                if cls is not None:
                    stmt = stmt.execution_options(synchronize_session=False)
                assert (await s.execute(stmt)).rowcount == 1, f"{name}: update"
                await s.commit()
            assert await count_all(table, **{target.name: new_value}) == 1, name
            assert await count_all(table, tenant_id=a, livemode=False, **{target.name: new_value}) == 1, name

            # a row for another tenant or mode is refused, by INSERT and by the ORM, and nothing is written
            before = await count_all(table)
            for tenant_id, livemode in ((b, False), (a, True)):
                intruder = _row(table, tenant_id, livemode, made)
                async with sessions() as s:
                    bind(s, a, False)
                    with pytest.raises(ScopeError):
                        await s.execute(sa.insert(table).values(**intruder))
                    if cls is not None:
                        s.add(cls(**intruder))
                        with pytest.raises(ScopeError):
                            await s.flush()
                        await s.rollback()
                    await s.commit()
            assert await count_all(table) == before, f"{name}: a refused row was written"

            # a session bound to nobody raises rather than answering for every tenant
            async with sessions() as s:
                for stmt in (sa.select(cls) if cls is not None else sa.select(table),
                             sa.update(cls or table).values({target.name: new_value}),
                             sa.delete(cls or table),
                             sa.insert(table).values(**_row(table, a, False, made))):
                    with pytest.raises(ScopeError):
                        await s.execute(stmt)
                if cls is not None:
                    s.add(cls(**_row(table, a, False, made)))
                    with pytest.raises(ScopeError):
                        await s.flush()


        # deletes last, children before parents
        for table in reversed(tables):
            name, cls = f"{service}.{table.name}", classes.get(table.name)
            before = await count_all(table)
            async with sessions() as s:
                bind(s, a, False)
                stmt = sa.delete(cls if cls is not None else table)
                if cls is not None:
                    stmt = stmt.execution_options(synchronize_session=False)
                assert (await s.execute(stmt)).rowcount == 1, f"{name}: delete"
                await s.commit()
            assert await count_all(table) == before - 1, name
            assert await count_all(table, tenant_id=a, livemode=False) == 0, name
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.DropSchema(schema, cascade=True))
        await engine.dispose()


async def test_writes_that_could_cross_tenants_are_refused(stack):
    from services.cart.tables import Cart, Product, metadata

    schema = f"scoping_{new_id('t').lower()[-12:]}"
    engine = make_engine(stack.dsns["cart"], pool_size=1).execution_options(schema_translate_map={None: schema})
    sessions = make_sessionmaker(engine)
    a, b = new_id("ten"), new_id("ten")
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.CreateSchema(schema))
            await conn.run_sync(metadata.create_all)
        async with sessions() as s:
            bind(s, b, False)
            s.add(Cart(id="cart_1", tenant_id=b, livemode=False, customer_id="cus_b", created_at=now, updated_at=now))
            await s.commit()

        async with sessions() as s:
            bind(s, a, False)
            # ids are global: an upsert on the id alone would overwrite tenant B's cart
            mine = pg_insert(Cart).values(id="cart_1", tenant_id=a, livemode=False, customer_id="cus_a",
                                          created_at=now, updated_at=now)
            with pytest.raises(ScopeError, match="ON CONFLICT"):
                await s.execute(mine.on_conflict_do_update(index_elements=[Cart.id],
                                                           set_={"customer_id": mine.excluded.customer_id}))
            product = pg_insert(Product).values(tenant_id=a, livemode=False, sku="S", base_uom="EA", units={})
            with pytest.raises(ScopeError, match="ON CONFLICT"):
                await s.execute(product.on_conflict_do_update(
                    index_elements=[Product.tenant_id, Product.livemode, Product.sku], set_={"tenant_id": b}))
            await s.execute(product.on_conflict_do_update(  # the right shape is accepted
                index_elements=[Product.tenant_id, Product.livemode, Product.sku],
                set_={"base_uom": product.excluded.base_uom}))
            with pytest.raises(ScopeError, match="another tenant"):
                await s.execute(sa.update(Product).values(tenant_id=b))
            with pytest.raises(ScopeError, match="raw SQL"):
                await s.execute(sa.text("SELECT count(*) FROM carts"))
            with pytest.raises(ScopeError):
                bind(s, b, False)
            with pytest.raises(ScopeError):
                unscoped_session(s, "cannot widen a bound session")
            # a loaded row moved to another tenant is refused at flush
            (await s.execute(sa.select(Product))).scalar_one().tenant_id = b
            with pytest.raises(ScopeError):
                await s.flush()
            await s.rollback()

        async with sessions() as s:
            unscoped_session(s, "test: reading every tenant's carts")
            carts = (await s.execute(sa.select(Cart))).scalars().all()
            assert [(c.tenant_id, c.customer_id) for c in carts] == [(b, "cus_b")]
            assert (await s.execute(sa.select(Product))).scalars().all() == []
    finally:
        async with engine.begin() as conn:
            await conn.execute(sa.schema.DropSchema(schema, cascade=True))
        await engine.dispose()
