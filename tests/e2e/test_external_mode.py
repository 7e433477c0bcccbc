"""External mode, end to end: `harmon migrate` and the six services against a PostgreSQL server of their
own (TLS only, a non-superuser role and a database per service, sslmode=verify-full URLs) and the
broker in external mode, then an order. Nothing of the local stack's set-up is used but the broker."""
from __future__ import annotations

import secrets
import ssl

import asyncpg
import pytest

from libs.runtime.db import engine_args
from libs.stack.embedded import EmbeddedBroker
from libs.stack.supervisor import SERVICES
from tests.conftest import connect_unscoped, discard_data_dir, fresh_data_dir
from tests.tlscerts import make_server_certificate

from .deployed import Processes, listening_addresses, run_external_mode
from .tls_postgres import TlsPostgres, tls_server_missing

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(tls_server_missing()), reason=tls_server_missing() or "")]


async def test_migrate_and_every_service_on_a_tls_only_postgres_in_external_mode():
    data_dir = fresh_data_dir("harmon-external-")
    (data_dir / "logs").mkdir()
    (data_dir / "pg").mkdir()
    (data_dir / "pg").chmod(0o711)
    pg = TlsPostgres(data_dir / "pg")
    broker = EmbeddedBroker(data_dir / "run")
    try:
        await pg.start()
        await broker.start()
        dsns = {s: await pg.create_service_database(f"ext_{s}", secrets.token_urlsafe(24)) for s in SERVICES}
        assert all("sslmode=verify-full&sslrootcert=" in d for d in dsns.values())

        async def checks(procs: Processes) -> None:
            for launch, _ in procs.children.values():  # without HARMON_HEALTH_HOST health stays on loopback
                assert listening_addresses(launch.health_port) == {"127.0.0.1"}, launch.name
            admin = await asyncpg.connect(pg.admin_dsn)
            try:
                rows = await admin.fetch("SELECT a.usename, bool_and(s.ssl) AS tls FROM pg_stat_activity a "
                                         "JOIN pg_stat_ssl s USING (pid) WHERE a.usename LIKE 'ext\\_%' GROUP BY 1")
            finally:
                await admin.close()
            assert {r["usename"] for r in rows} == {f"ext_{s}" for s in SERVICES} and all(r["tls"] for r in rows)

        await run_external_mode(data_dir, broker.bootstrap, dsns, while_running=checks)

        orders = await connect_unscoped(dsns["orders"])
        try:
            assert await orders.fetchval("SELECT count(*) FROM orders WHERE po_number = 'PO-DEPLOY'") == 1
            assert not await orders.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        finally:
            await orders.close()
        # the server takes no connection without TLS, and verify-full refuses a certificate of another CA
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            await asyncpg.connect(dsns["cart"].split("?")[0], ssl=False)
        other_ca = make_server_certificate(data_dir / "other-ca").ca
        _, connect_args = engine_args(dsns["cart"].replace(str(pg.tls.ca), str(other_ca)))
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(dsns["cart"].split("?")[0], ssl=connect_args["ssl"])
    finally:
        await broker.stop()
        await pg.stop()
    discard_data_dir(data_dir)
