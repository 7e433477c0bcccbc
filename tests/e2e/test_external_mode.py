"""External mode, end to end: `harmon migrate` and the six services against a PostgreSQL server of their
own (TLS only, a non-superuser role and a database per service, sslmode=verify-full URLs) and the
broker in external mode, then an order. Nothing of the local stack's set-up is used but the broker."""
from __future__ import annotations

import os
import secrets
import ssl
import sys
from pathlib import Path

import asyncpg
import pytest

from libs.runtime.db import engine_args
from libs.stack.embedded import EmbeddedBroker
from libs.stack.processes import free_port
from libs.stack.supervisor import SERVICES
from tests.conftest import discard_data_dir, fresh_data_dir
from tests.tlscerts import make_server_certificate

from .deployed import Launch, Processes, listening_addresses, place_order
from .tls_postgres import TlsPostgres, tls_server_missing

pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(tls_server_missing()), reason=tls_server_missing() or "")]

PARTITIONS = 2


def _harmon() -> list[str]:
    script = Path(sys.executable).with_name("harmon")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from libs.stack.cli import main; main()"]


def _base_env() -> dict[str, str]:
    # no HARMON_* from the caller's environment: only what an operator would set
    return {k: v for k, v in os.environ.items() if not k.startswith("HARMON_")} | {"PYTHONUNBUFFERED": "1"}


async def test_migrate_and_every_service_on_a_tls_only_postgres_in_external_mode():
    data_dir = fresh_data_dir("harmon-external-")
    (data_dir / "logs").mkdir()
    pg = TlsPostgres(data_dir / "pg")
    (data_dir / "pg").mkdir()
    (data_dir / "pg").chmod(0o711)
    broker = EmbeddedBroker(data_dir / "run")
    procs = Processes(data_dir / "logs")
    try:
        await pg.start()
        await broker.start()
        dsns = {s: await pg.create_service_database(f"ext_{s}", secrets.token_urlsafe(24)) for s in SERVICES}
        assert all("sslmode=verify-full&sslrootcert=" in d for d in dsns.values())

        common = {"HARMON_BROKER_MODE": "external", "HARMON_KAFKA_BOOTSTRAP": broker.bootstrap,
                  "HARMON_PARTITIONS": str(PARTITIONS)}
        dsn_vars = {f"HARMON_{s.upper()}_DATABASE_URL": dsn for s, dsn in dsns.items()}
        await procs.run_to_end(Launch("migrate", "migrate", [*_harmon(), "migrate"],
                                      _base_env() | common | dsn_vars, data_dir))
        for service in SERVICES:
            port = free_port()
            env = _base_env() | common | {f"HARMON_{service.upper()}_DATABASE_URL": dsns[service],
                                          "HARMON_INSTANCE_ID": f"ext-{service}"}
            if service == "gateway":
                env |= {"HARMON_GATEWAY_PORT": str(port), "HARMON_GATEWAY_SIGNING_SECRET": secrets.token_urlsafe(48)}
            else:
                env[f"HARMON_{service.upper()}_HEALTH_PORT"] = str(port)
            procs.start(Launch(service, service, [sys.executable, "-m", f"services.{service}"], env, data_dir, port))
        await procs.wait_ready()
        for launch, _ in procs.children.values():  # without HARMON_HEALTH_HOST health stays on loopback
            assert listening_addresses(launch.health_port) == {"127.0.0.1"}, launch.name

        gateway_port = procs.children["gateway"][0].health_port
        await place_order(f"http://127.0.0.1:{gateway_port}", dsns["gateway"], broker.bootstrap)

        admin = await asyncpg.connect(pg.admin_dsn)
        try:
            rows = await admin.fetch("SELECT a.usename, bool_and(s.ssl) AS tls, count(*) AS n FROM pg_stat_activity a "
                                     "JOIN pg_stat_ssl s USING (pid) WHERE a.usename LIKE 'ext\\_%' GROUP BY 1")
            orders = await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = 'ext_orders'")
        finally:
            await admin.close()
        assert {r["usename"] for r in rows} == {f"ext_{s}" for s in SERVICES} and all(r["tls"] for r in rows), rows
        assert orders == 1
        order_conn = await asyncpg.connect(dsns["orders"])
        try:
            assert await order_conn.fetchval("SELECT count(*) FROM orders WHERE po_number = 'PO-DEPLOY'") == 1
            assert not await order_conn.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        finally:
            await order_conn.close()

        # the server takes no connection without TLS, and verify-full refuses a certificate of another CA
        with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError, match="no encryption"):
            await asyncpg.connect(dsns["cart"].split("?")[0], ssl=False)
        other_ca = make_server_certificate(data_dir / "other-ca").ca
        _, connect_args = engine_args(dsns["cart"].replace(str(pg.tls.ca), str(other_ca)))
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncpg.connect(dsns["cart"].split("?")[0], ssl=connect_args["ssl"])

        codes = await procs.stop()
        assert codes == {s: 0 for s in SERVICES}, codes
    finally:
        await procs.kill()
        await broker.stop()
        await pg.stop()
    discard_data_dir(data_dir)
