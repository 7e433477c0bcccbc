"""Tenant and mode scoping, tried against real PostgreSQL for every scoped table of every service.

The back-end services scope by row-level security (libs/runtime/database.py): in each service's own
migrated database (its own role), through the `Database` transactions its handlers use, rows are
written for tenant A/test, A/live and B/test, and a transaction bound to A/test must see, update and
delete only A/test rows (a bare select, a lookup by another's key, joins, subqueries), must be
refused a B row or a move to B, and a transaction bound to nobody must raise. The gateway, still on
the ORM hook (libs/runtime/scoping.py), is tried the same way through its sessions, in a scratch
schema. Tables are found by their columns, so a new table is tried without editing this file.
"""

import importlib
import itertools
import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from libs.contracts.ids import new_id
from libs.runtime.database import Database, Scope, Unscoped
from libs.runtime.db import make_engine, make_sessionmaker
from libs.runtime.scoping import ScopeError, bind, scoped_tables, unscoped_session
from libs.stack.supervisor import SERVICES

ORM_SCOPED = ("gateway",)  # every other service is scoped by row-level security
RLS_SCOPED = tuple(s for s in SERVICES if s not in ORM_SCOPED)
# the gateway's tables reached through asyncpg, scoped by row-level security like the back-end services'
GATEWAY_RLS = ("idempotency_records",)


def rls_tables(service: str, metadata: sa.MetaData) -> list[sa.Table]:
    tables = scoped_tables(metadata)
    return [t for t in tables if t.name in GATEWAY_RLS] if service == "gateway" else tables

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
    if isinstance(t, sa.ARRAY) and isinstance(t.item_type, sa.String):
        return [f"{col.name[:8]}_{n}"]
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


@pytest.mark.parametrize("service", ORM_SCOPED)
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


# ---- row-level security: the back-end services -------------------------------------------------------------

def _sql_value(col: sa.Column, value):
    t = col.type.impl_instance if isinstance(col.type, sa.TypeDecorator) else col.type
    return json.dumps(value) if isinstance(t, sa.JSON) else value


def _insert_sql(table: sa.Table, row: dict) -> tuple[str, list]:
    cols = list(row)
    names = ", ".join('"' + c + '"' for c in cols)
    places = ", ".join("$" + str(i) for i in range(1, len(cols) + 1))
    return f'INSERT INTO "{table.name}" ({names}) VALUES ({places})', [_sql_value(table.c[c], row[c]) for c in cols]


def _where_key(table: sa.Table, row: dict, start: int = 1) -> tuple[str, list]:
    pk = [c.name for c in table.primary_key.columns if c.name not in ("tenant_id", "livemode") and c.name in row]
    if not pk:  # an identity key (outbox, parked): the row's unique columns name it
        unique = [k for k in table.constraints if isinstance(k, sa.UniqueConstraint)]
        pk = [c.name for c in table.columns if c.unique and c.name in row] or (
            [c.name for c in unique[0].columns] if unique else []) or [
            c.name for c in table.columns if c.name in row and c.name not in ("tenant_id", "livemode")
            and not isinstance(c.type, sa.JSON | sa.LargeBinary)]
    return " AND ".join(f'"{c}" = ${i}' for i, c in enumerate(pk, start)), [row[c] for c in pk]


@pytest.mark.parametrize("service", SERVICES)
async def test_every_scoped_table_has_forced_row_level_security(stack, service):
    """A table with tenant_id and livemode that its migration did not put under the policy fails here."""
    metadata: sa.MetaData = importlib.import_module(f"services.{service}.tables").metadata
    names = [t.name for t in rls_tables(service, metadata)]
    conn = await asyncpg.connect(stack.dsns[service])
    try:
        rows = await conn.fetch(
            "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, "
            "EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'harmon_scope') AS policy "
            "FROM pg_class c WHERE c.relname = ANY($1::text[]) AND c.relkind = 'r' "
            "AND c.relnamespace = 'public'::regnamespace", names)
        # and every table in the database with both columns, whether tables.py declares it or not
        undeclared = await conn.fetch(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND column_name IN ('tenant_id', 'livemode') GROUP BY table_name HAVING count(*) = 2")
    finally:
        await conn.close()
    assert sorted(r["relname"] for r in rows) == sorted(names)
    assert [r["relname"] for r in rows if not (r["relrowsecurity"] and r["relforcerowsecurity"] and r["policy"])] == []
    if service not in ORM_SCOPED:
        assert sorted(r["table_name"] for r in undeclared) == sorted(names)


@pytest.mark.parametrize("service", SERVICES)
async def test_a_transaction_sees_and_touches_only_its_tenant_and_mode(stack, service):
    metadata: sa.MetaData = importlib.import_module(f"services.{service}.tables").metadata
    tables = rls_tables(service, metadata)
    assert tables, f"{service} has no scoped tables"
    db = Database(stack.dsns[service], max_size=2)
    a, b = new_id("ten"), new_id("ten")
    scopes = [(a, False), (a, True), (b, False)]
    made: dict = {}
    everyone = Unscoped("test: reading and cleaning up every tenant's rows")

    async def count_all(table: sa.Table, **where) -> int:
        clauses = " AND ".join(f'"{k}" = ${i}' for i, k in enumerate(where, 1)) or "true"
        async with db.transaction(everyone) as tx:
            return await tx.conn.fetchval(f'SELECT count(*) FROM "{table.name}" WHERE {clauses}', *where.values())

    try:
        # rows for three scopes, each written in its own scope with tenant_id/livemode left to their defaults
        for tenant_id, livemode in scopes:
            async with db.transaction(Scope(tenant_id, livemode)) as tx:
                for table in tables:
                    row = _row(table, tenant_id, livemode, made)
                    made[(table.name, tenant_id, livemode)] = row
                    unscoped_row = {k: v for k, v in row.items() if k not in ("tenant_id", "livemode")}
                    sql, args = _insert_sql(table, unscoped_row)
                    await tx.conn.execute(sql, *args)
        for table in tables:
            for tenant_id, livemode in scopes:
                assert await count_all(table, tenant_id=tenant_id, livemode=livemode) == 1, \
                    f"{service}.{table.name}: the scope's defaults filled tenant_id and livemode"

        for table in tables:
            name = f"{service}.{table.name}"
            theirs, other_mode = made[(table.name, b, False)], made[(table.name, a, True)]

            async with db.transaction(Scope(a, False)) as tx:
                # a bare select, and a lookup by the other rows' keys
                rows = await tx.conn.fetch(f'SELECT tenant_id, livemode FROM "{table.name}"')
                assert [(r["tenant_id"], r["livemode"]) for r in rows] == [(a, False)], name
                for other in (theirs, other_mode):
                    where, args = _where_key(table, other)
                    assert await tx.conn.fetchrow(f'SELECT 1 FROM "{table.name}" WHERE {where}', *args) is None, \
                        f"{name}: a lookup by another's key"
                # joins and subqueries to parents
                for col in table.columns:
                    for fk in col.foreign_keys:
                        parent = fk.column.table
                        if parent not in tables:
                            continue
                        joined = await tx.conn.fetch(
                            f'SELECT c.tenant_id, p.tenant_id AS pt, p.livemode AS pl FROM "{table.name}" c '
                            f'JOIN "{parent.name}" p ON p."{fk.column.name}" = c."{col.name}"')
                        assert [tuple(r) for r in joined] == [(a, a, False)], f"{name}: join to {parent.name}"
                        sub = await tx.conn.fetch(f'SELECT 1 FROM "{table.name}" WHERE "{col.name}" IN '
                                                  f'(SELECT "{fk.column.name}" FROM "{parent.name}")')
                        assert len(sub) == 1, f"{name}: subquery on {parent.name}"

            # an update touches only A/test
            target = _updatable(table)
            new_value = _value(target)
            async with db.transaction(Scope(a, False)) as tx:
                status = await tx.conn.execute(f'UPDATE "{table.name}" SET "{target.name}" = $1',
                                               _sql_value(target, new_value))
                assert status == "UPDATE 1", f"{name}: update"
            assert await count_all(table, tenant_id=a, livemode=False, **{target.name: new_value}) == 1, name
            assert await count_all(table, **{target.name: new_value}) == 1, name

            # a row for another tenant or mode is refused, and a row cannot be moved to another tenant
            before = await count_all(table)
            for tenant_id, livemode in ((b, False), (a, True)):
                intruder = _row(table, tenant_id, livemode, made)
                sql, args = _insert_sql(table, intruder)
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    async with db.transaction(Scope(a, False)) as tx:
                        await tx.conn.execute(sql, *args)
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                async with db.transaction(Scope(a, False)) as tx:
                    await tx.conn.execute(f'UPDATE "{table.name}" SET tenant_id = $1', b)
            assert await count_all(table) == before, f"{name}: a refused row was written"
            assert await count_all(table, tenant_id=b) == 1, f"{name}: B's row moved or changed"

            # a transaction bound to nobody raises rather than answering for any tenant
            conn = await asyncpg.connect(stack.dsns[service])
            try:
                for sql, params in ((f'SELECT * FROM "{table.name}"', []),
                                    (f'UPDATE "{table.name}" SET "{target.name}" = "{target.name}"', []),
                                    (f'DELETE FROM "{table.name}"', []),
                                    _insert_sql(table, _row(table, a, False, made))):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="no tenant scope"):
                        async with conn.transaction():
                            await conn.execute(sql, *params)

            finally:
                await conn.close()

        # deletes last, children before parents: each removes only A/test's row
        for table in reversed(tables):
            name = f"{service}.{table.name}"
            before = await count_all(table)
            async with db.transaction(Scope(a, False)) as tx:
                assert await tx.conn.execute(f'DELETE FROM "{table.name}"') == "DELETE 1", f"{name}: delete"
            assert await count_all(table) == before - 1, name
            assert await count_all(table, tenant_id=a, livemode=False) == 0, name
    finally:
        async with db.transaction(everyone) as tx:
            for table in reversed(tables):
                await tx.conn.execute(f'DELETE FROM "{table.name}" WHERE tenant_id = ANY($1::text[])', [a, b])
        await db.close()


async def test_an_upsert_cannot_overwrite_another_tenants_row(stack):
    """Ids are global: an upsert on the id alone would overwrite tenant B's row; the policy refuses it."""
    db = Database(stack.dsns["credit"], max_size=1)
    a, b = new_id("ten"), new_id("ten")
    rid = new_id("res")
    insert = ("INSERT INTO reservations (reservation_id, bill_to_id, amount, status, created_at) "
              "VALUES ($1, $2, 1, 'reserved', now())")
    try:
        async with db.transaction(Scope(b, False)) as tx:
            await tx.conn.execute(insert, rid, "cus_b")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            async with db.transaction(Scope(a, False)) as tx:
                await tx.conn.execute(insert + " ON CONFLICT (reservation_id) DO UPDATE SET bill_to_id = 'cus_a'",
                                      rid, "cus_a")
        async with db.transaction(Scope(a, False)) as tx:  # DO NOTHING: refused quietly, nothing seen
            assert await tx.conn.fetchval(insert + " ON CONFLICT (reservation_id) DO NOTHING RETURNING 1",
                                          rid, "cus_a") is None
            assert await tx.conn.fetchval("SELECT count(*) FROM reservations WHERE reservation_id = $1", rid) == 0
        async with db.transaction(Unscoped("test: reading tenant B's row")) as tx:
            row = await tx.conn.fetchrow("SELECT tenant_id, bill_to_id FROM reservations WHERE reservation_id = $1", rid)
            assert (row["tenant_id"], row["bill_to_id"]) == (b, "cus_b")
            await tx.conn.execute("DELETE FROM reservations WHERE reservation_id = $1", rid)
        with pytest.raises(ValueError):
            Unscoped("  ")  # cross-tenant work must say why
    finally:
        await db.close()


def test_only_the_database_layer_sets_the_scope():
    """A handler or repository that set `harmon.scope` itself would step outside its message's tenant."""
    root = Path(__file__).resolve().parents[2]
    allowed = {root / "libs/runtime/database.py", root / "libs/runtime/migrations.py"}
    offenders = [str(p.relative_to(root)) for base in ("services", "libs") for p in (root / base).rglob("*.py")
                 if p not in allowed and "'harmon.scope'" in p.read_text()]
    assert offenders == []
