"""Tenant and mode scoping, written once: every query of a session sees only its (tenant_id, livemode).

A session is bound to one scope — by the unit of work from the incoming envelope, by the gateway
from the API key — and then every ORM SELECT, UPDATE and DELETE on a table that has `tenant_id`
and `livemode` columns gets `tenant_id = :t AND livemode = :m` added (joins and subqueries too),
and every row it inserts must carry that tenant and mode, or it is refused before it is written.
Scoped tables are found by their columns, so a new table is scoped without anyone remembering to.

Fail closed: a scoped table touched by a session with no scope raises `ScopeError`. The few
queries that are cross-tenant on purpose say so, with a reason, and can be found with
`grep -rn "unscoped(" services libs`: `unscoped(statement, reason)` for one statement,
`unscoped_session(session, reason)` for a whole session (operator tooling, sweepers).
"""

from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, registry as Registry, with_loader_criteria
from sqlalchemy.sql import util as sql_util
from sqlalchemy.sql.dml import Insert, Update, Delete

SCOPE_COLUMNS = ("tenant_id", "livemode")
_INFO_KEY = "harmon.orm_scope"
_UNSCOPED_OPTION = "harmon_unscoped"

S = TypeVar("S", bound=sa.Executable)


class ScopeError(RuntimeError):
    """A query that would cross tenants or modes, or that has no scope to apply: a bug, never data."""


@dataclass(frozen=True)
class Scope:
    tenant_id: str
    livemode: bool


@dataclass(frozen=True)
class Unscoped:
    reason: str


def bind(session: Session | Any, tenant_id: str, livemode: bool) -> Scope:
    """Bind a session (sync or async) to one tenant and mode for the rest of its life."""
    if not tenant_id or not isinstance(livemode, bool):
        raise ScopeError("a scope needs a tenant id and a boolean livemode")
    scope = Scope(tenant_id, livemode)
    current = session.info.get(_INFO_KEY)
    if current is not None and current != scope:
        raise ScopeError("this session is already bound to another scope")
    session.info[_INFO_KEY] = scope
    return scope


def unscoped_session(session: Session | Any, reason: str) -> None:
    """Deliberately cross-tenant: the whole session sees every tenant and mode. Say why."""
    if not reason.strip():
        raise ValueError("say why this session is cross-tenant")
    if isinstance(session.info.get(_INFO_KEY), Scope):
        raise ScopeError("a session bound to a tenant cannot be made cross-tenant")
    session.info[_INFO_KEY] = Unscoped(reason)


def unscoped(statement: S, reason: str) -> S:
    """Deliberately cross-tenant: this one statement runs without the session's scope. Say why."""
    if not reason.strip():
        raise ValueError("say why this statement is cross-tenant")
    return statement.execution_options(**{_UNSCOPED_OPTION: reason})


def scope_of(session: Session | Any) -> Scope | Unscoped | None:
    return session.info.get(_INFO_KEY)


def is_scoped_table(table: Any) -> bool:
    """A table (or alias of one) with both scope columns: every query on it is scoped."""
    cols = getattr(table, "c", None)
    return cols is not None and all(name in cols for name in SCOPE_COLUMNS)


def scoped_tables(metadata: sa.MetaData) -> list[sa.Table]:
    return [t for t in metadata.sorted_tables if is_scoped_table(t)]


class ScopedSession(Session):
    """The runtime's session class: tenant and mode scoping is applied by the listeners below."""


# The criteria are built once per registry (one service's tables) with two named parameters, and
# each statement only supplies their values: no per-query expression building, and one cached
# compiled form per statement shape for every tenant.
_TENANT_PARAM, _LIVEMODE_PARAM = "harmon_scope_tenant_id", "harmon_scope_livemode"
_criteria: dict[Registry, tuple[int, tuple]] = {}  # registry → (mapper count, loader criteria options)


def _criteria_of(reg: Registry) -> tuple:
    count, options = _criteria.get(reg, (-1, ()))
    if count != len(reg.mappers):  # first use, or a class mapped since
        options = tuple(
            with_loader_criteria(m.class_, sa.and_(m.class_.tenant_id == sa.bindparam(_TENANT_PARAM),
                                                   m.class_.livemode == sa.bindparam(_LIVEMODE_PARAM)),
                                 include_aliases=True)
            for m in reg.mappers if is_scoped_table(m.local_table))
        _criteria[reg] = (len(reg.mappers), options)
    return options


def _touched_scoped_tables(statement: Any) -> list:
    tables = sql_util.find_tables(statement, include_aliases=True, include_joins=True, include_crud=True)
    return [t for t in tables if is_scoped_table(t)]


def _key(k: Any) -> str:
    return getattr(k, "key", k)


def _value(v: Any) -> Any:
    if isinstance(v, sa.BindParameter):
        return v.effective_value
    raise ScopeError("tenant_id/livemode of an inserted row must be plain values")


def _check_row(row: dict, scope: Scope, where: str) -> None:
    for name, expected in (("tenant_id", scope.tenant_id), ("livemode", scope.livemode)):
        if name not in row:
            raise ScopeError(f"{where}: a row without {name} (this session is bound to one tenant and mode)")
        if row[name] != expected:
            raise ScopeError(f"{where}: a row for another tenant or mode is refused")


def _check_insert(state: ORMExecuteState, stmt: Insert, scope: Scope) -> None:
    where = f"INSERT INTO {stmt.table.name}"
    if getattr(stmt, "select", None) is not None:
        raise ScopeError(f"{where} … SELECT cannot be checked; mark it unscoped() with a reason")
    rows: list[dict] = []
    if stmt._multi_values:
        for batch in stmt._multi_values:
            rows.extend({_key(k): v for k, v in row.items()} if isinstance(row, dict) else
                        dict(zip((c.key for c in stmt.table.c), row)) for row in batch)
    values = {_key(k): v for k, v in (stmt._values or {}).items()}
    params = state.parameters
    param_rows = params if isinstance(params, list) else [params or {}]
    if not rows:
        rows = [values]
    for row in rows:
        fixed = {k: _value(row[k]) for k in SCOPE_COLUMNS if k in row}
        for p in param_rows:
            _check_row({**{k: p[k] for k in SCOPE_COLUMNS if k in p}, **fixed}, scope, where)
    upsert = stmt._post_values_clause
    if upsert is not None and hasattr(upsert, "update_values_to_set"):  # ON CONFLICT DO UPDATE
        target = {_key(e) for e in (upsert.inferred_target_elements or ())}
        if not set(SCOPE_COLUMNS) <= target:
            # a conflict on a key without the tenant would update another tenant's row
            raise ScopeError(f"{where} … ON CONFLICT DO UPDATE must name tenant_id and livemode in its target")
        to_set = upsert.update_values_to_set  # a dict (2.1) or a list of pairs (2.0)
        if {_key(k) for k in (to_set if isinstance(to_set, dict) else dict(to_set))} & set(SCOPE_COLUMNS):
            raise ScopeError(f"{where} … ON CONFLICT DO UPDATE may not change tenant_id or livemode")


def _check_update_values(stmt: Update, scope: Scope) -> None:
    for k, v in (stmt._values or {}).items():
        if _key(k) in SCOPE_COLUMNS and _value(v) != getattr(scope, _key(k)):
            raise ScopeError(f"UPDATE {stmt.table.name}: moving a row to another tenant or mode is refused")


@event.listens_for(ScopedSession, "do_orm_execute")
def _scope_statement(state: ORMExecuteState) -> None:
    scope = state.session.info.get(_INFO_KEY)
    if isinstance(scope, Unscoped) or state.execution_options.get(_UNSCOPED_OPTION):
        return
    stmt = state.statement
    if isinstance(stmt, sa.TextClause):
        raise ScopeError("raw SQL through a session is not scoped; use a statement, or mark it unscoped()")
    if scope is None:
        touched = _touched_scoped_tables(stmt)
        if touched:
            raise ScopeError(f"{touched[0].name} has tenant_id and livemode, but this session is bound to no "
                             "tenant: bind it (libs.runtime.scoping.bind) or mark the query unscoped() with a reason")
        return
    if isinstance(stmt, Insert):
        if is_scoped_table(stmt.table):
            _check_insert(state, stmt, scope)
        return
    if isinstance(stmt, Update):
        _check_update_values(stmt, scope)
    if state.is_orm_statement:
        if (state.is_update or state.is_delete) and state.is_executemany and is_scoped_table(stmt.table):
            raise ScopeError("bulk UPDATE by primary key is not scoped; update the loaded objects instead")
        # the statement's first entity names the registry (one per service); all_mappers costs more
        mapper = state.bind_mapper or next(iter(state.all_mappers), None)
        options = _criteria_of(mapper.registry) if mapper is not None else ()
        if options:
            state.statement = stmt.options(*options)
            state.parameters = {**(state.parameters or {}), _TENANT_PARAM: scope.tenant_id,
                                _LIVEMODE_PARAM: scope.livemode}
        elif _touched_scoped_tables(stmt):
            raise ScopeError("cannot tell which entities this statement reads; select a mapped class")
        return
    # Core statements (plain Table objects: the outbox and inbox)
    if isinstance(stmt, (Update, Delete)):
        if is_scoped_table(stmt.table):
            t = stmt.table
            state.statement = stmt.where(t.c.tenant_id == scope.tenant_id, t.c.livemode == scope.livemode)
        return
    touched = _touched_scoped_tables(stmt)
    if touched:
        raise ScopeError(f"a Core SELECT on {touched[0].name} is not scoped: select the mapped class, "
                         "or mark it unscoped() with a reason")


@event.listens_for(ScopedSession, "before_flush")
def _scope_flush(session: Session, flush_context: Any, instances: Any) -> None:
    scope = session.info.get(_INFO_KEY)
    if isinstance(scope, Unscoped):
        return
    for obj in session.new:
        table = sa.inspect(obj).mapper.local_table
        if not is_scoped_table(table):
            continue
        if scope is None:
            raise ScopeError(f"a {table.name} row added by a session bound to no tenant")
        if obj.tenant_id is None:
            obj.tenant_id = scope.tenant_id
        if obj.livemode is None:
            obj.livemode = scope.livemode
        _check_row({"tenant_id": obj.tenant_id, "livemode": obj.livemode}, scope, f"INSERT INTO {table.name}")
    for obj in (*session.dirty, *session.deleted):
        table = sa.inspect(obj).mapper.local_table
        if not is_scoped_table(table):
            continue
        if scope is None:
            raise ScopeError(f"a {table.name} row changed by a session bound to no tenant")
        _check_row({"tenant_id": obj.tenant_id, "livemode": obj.livemode}, scope, f"UPDATE {table.name}")
