"""libpq's TLS parameters in a database URL become asyncpg's `ssl`: SQLAlchemy passes URL query
parameters to asyncpg.connect as keywords, and asyncpg has no `sslmode` keyword."""
import ssl
from pathlib import Path

import pytest

from libs.runtime.db import engine_args, make_engine, tls_option
from libs.runtime.migrations import alembic_config
from tests.tlscerts import make_server_certificate

DSN = "postgresql://svc_cart:pw@127.0.0.1:5432/cart"


@pytest.fixture(scope="module")
def ca(tmp_path_factory) -> str:
    return str(make_server_certificate(tmp_path_factory.mktemp("tls")).ca)


def test_verify_full_checks_the_chain_against_sslrootcert_and_the_host_name(ca):
    url, connect_args = engine_args(f"{DSN}?sslmode=verify-full&sslrootcert={ca}")
    assert url == "postgresql+asyncpg://svc_cart:pw@127.0.0.1:5432/cart"
    context = connect_args["ssl"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "harmon test CA"),),)]


def test_sslrootcert_system_trusts_the_systems_certificate_authorities():
    context = tls_option("verify-full", "system")
    assert isinstance(context, ssl.SSLContext) and context.check_hostname is True
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_verify_ca_checks_the_chain_but_not_the_name(ca):
    context = engine_args(f"{DSN}?sslmode=verify-ca&sslrootcert={ca}")[1]["ssl"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is False
    # as libpq: require with a root certificate verifies the chain
    assert tls_option("require", ca).verify_mode == ssl.CERT_REQUIRED


def test_modes_without_verification_are_left_to_asyncpg():
    assert engine_args(f"{DSN}?sslmode=disable")[1] == {"ssl": False}
    assert engine_args(f"{DSN}?sslmode=require")[1] == {"ssl": "require"}
    assert engine_args(f"{DSN}?sslmode=prefer&application_name=cart") == (
        "postgresql+asyncpg://svc_cart:pw@127.0.0.1:5432/cart?application_name=cart", {"ssl": "prefer"})


def test_a_url_without_tls_parameters_is_unchanged():
    assert engine_args(DSN) == ("postgresql+asyncpg://svc_cart:pw@127.0.0.1:5432/cart", {})
    # a password with URL-escaped characters survives the round trip
    assert engine_args("postgresql://u:p%40ss%2Fw@h/db?sslmode=require")[0] == "postgresql+asyncpg://u:p%40ss%2Fw@h/db"


def test_wrong_tls_parameters_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="sslmode must be one of"):
        engine_args(f"{DSN}?sslmode=verify")
    with pytest.raises(ValueError, match="is not a file"):
        engine_args(f"{DSN}?sslmode=verify-full&sslrootcert={tmp_path / 'missing.crt'}")
    with pytest.raises(ValueError, match="once"):
        engine_args(f"{DSN}?sslmode=require&sslmode=disable")


def test_engines_and_migrations_get_the_ssl_argument_not_sslmode(ca):
    dsn = f"{DSN}?sslmode=verify-full&sslrootcert={ca}"
    engine = make_engine(dsn)
    assert "sslmode" not in engine.url.query and "sslrootcert" not in engine.url.query
    cargs, cparams = engine.dialect.create_connect_args(engine.url)
    assert "sslmode" not in cparams
    # alembic's env.py builds its engine from this URL with the same translation (libs/runtime/migrations.py)
    url = alembic_config(Path("."), dsn).get_main_option("sqlalchemy.url")
    assert engine_args(url)[1]["ssl"].check_hostname is True
