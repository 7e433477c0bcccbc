"""A tenant's backend signs shopper tokens with its own key: registered (public half only) with the admin
functions or `harmon signing-keys`, then used on the real gateway. Only that tenant, that mode, that kid."""

import base64
import hashlib
import hmac
import io
import json
import os
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from libs.contracts.ids import new_id
from libs.runtime.db import make_engine, make_sessionmaker
from services.gateway import admin
from services.gateway.admin_cli import build_parser

pytestmark = pytest.mark.e2e


def public_pem(private_key) -> bytes:
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def backend_token(private_key, algorithm: str, kid: str, tenant_id: str, customer_id: str, *,
                  mode: str = "test", lifetime: int = 300) -> str:
    """What the tenant's backend does: claims for its signed-in customer, signed with its private key."""
    now = int(time.time())
    claims = {"iss": tenant_id, "aud": f"harmon:{tenant_id}:{mode}", "sub": customer_id, "iat": now,
              "exp": now + lifetime, "jti": new_id("jti")}
    return jwt.encode(claims, private_key, algorithm=algorithm, headers={"kid": kid})


class Gateway:
    """The gateway's database through the admin functions, as `harmon signing-keys` uses them."""

    def __init__(self, dsn: str):
        self.dsn = dsn

    async def run(self, op, *args, **kwargs):
        engine = make_engine(self.dsn, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session:
                return await op(session, *args, **kwargs)
        finally:
            await engine.dispose()


@pytest.fixture
def gateway_db(stack) -> Gateway:
    return Gateway(stack.dsns["gateway"])


async def create_cart(store, token: str):
    return await store.call("POST", "/v1/carts", json={}, token=token)


async def test_tenant_signed_rs256_and_es256_tokens_open_carts(store, shop, gateway_db, rsa_private, ec_private):
    rsa_row = await gateway_db.run(admin.add_signing_key, shop.tenant_id, False, "shop-rsa-1", "RS256",
                                   public_pem(rsa_private))
    ec_row = await gateway_db.run(admin.add_signing_key, shop.tenant_id, False, "shop-ec-1", "ES256",
                                  public_pem(ec_private))
    assert rsa_row.id.startswith("tsk_") and ec_row.id.startswith("tsk_")

    for private, alg, kid in ((rsa_private, "RS256", "shop-rsa-1"), (ec_private, "ES256", "shop-ec-1")):
        token = backend_token(private, alg, kid, shop.tenant_id, shop.big)
        r = await create_cart(store, token)
        assert r.status == 201, (alg, r.body)
        assert (await store.call("GET", f"/v1/carts/{r.body['id']}", token=token)).status == 200

        # the customer checks still hold: an inactive customer's token opens nothing
        r = await create_cart(store, backend_token(private, alg, kid, shop.tenant_id, shop.inactive))
        assert (r.status, r.error["code"]) == (401, "shopper_token_invalid"), alg
        # nor does a year-long token
        r = await create_cart(store, backend_token(private, alg, kid, shop.tenant_id, shop.big,
                                                   lifetime=365 * 86400))
        assert (r.status, r.error["code"]) == (401, "shopper_token_invalid"), alg
        assert "longer than" in r.error["message"]

    # a token claiming HS256 under the tenant's kid, MACed with the public key PEM, is refused
    # (PyJWT's own encoder refuses a PEM as an HMAC secret, so the MAC is built by hand)
    claims = jwt.decode(backend_token(rsa_private, "RS256", "shop-rsa-1", shop.tenant_id, shop.big),
                        options={"verify_signature": False})
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "shop-rsa-1"}).encode())
    body = _b64(json.dumps(claims).encode())
    mac = _b64(hmac.new(public_pem(rsa_private), f"{head}.{body}".encode(), hashlib.sha256).digest())
    r = await create_cart(store, f"{head}.{body}.{mac}")
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")


async def test_revoked_key_is_refused_within_a_second(store, shop, gateway_db, ec_private, until):
    row = await gateway_db.run(admin.add_signing_key, shop.tenant_id, False, "to-revoke", "ES256",
                               public_pem(ec_private))
    token = backend_token(ec_private, "ES256", "to-revoke", shop.tenant_id, shop.big)
    assert (await create_cart(store, token)).status == 201
    assert (await create_cart(store, token)).status == 201  # the gateway remembers the key now
    assert await gateway_db.run(admin.revoke_signing_key, row.id) is True

    async def refused():  # every gateway hears of it through NOTIFY (services/gateway/cache.py)
        r = await create_cart(store, token)
        return r if r.status == 401 else None
    r = await until(refused, timeout=1.0, interval=0.01, message="the revoked signing key refused")
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")
    assert "unknown signing key" in r.error["message"]
    with pytest.raises(ValueError, match="never reused"):
        await gateway_db.run(admin.add_signing_key, shop.tenant_id, False, "to-revoke", "ES256",
                             public_pem(ec_private))


async def test_another_tenants_key_and_the_other_modes_key_are_refused(store, shop, gateway_db, new_tenant,
                                                                      rsa_private, ec_private):
    other = await new_tenant()
    await gateway_db.run(admin.add_signing_key, other.tenant_id, False, "other-tenant-key", "RS256",
                         public_pem(rsa_private))
    # signed by the other tenant's backend for this shop's audience: its kid means nothing here
    r = await create_cart(store, backend_token(rsa_private, "RS256", "other-tenant-key", shop.tenant_id, shop.big))
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")
    assert "unknown signing key" in r.error["message"]

    await gateway_db.run(admin.add_signing_key, shop.tenant_id, True, "live-only", "ES256", public_pem(ec_private))
    for mode in ("test", "live"):  # the shop's test secret key: the live key is not looked up at all
        token = backend_token(ec_private, "ES256", "live-only", shop.tenant_id, shop.big, mode=mode)
        r = await create_cart(store, token)
        assert (r.status, r.error["code"]) == (401, "shopper_token_invalid"), mode

    r = await create_cart(store, backend_token(ec_private, "ES256", "never-registered", shop.tenant_id, shop.big))
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")
    r = await create_cart(store, backend_token(ec_private, "ES256", "x" * 200, shop.tenant_id, shop.big))
    assert (r.status, r.error["code"]) == (401, "shopper_token_invalid")


async def test_bad_registrations_are_refused_and_write_nothing(shop, gateway_db, rsa_private):
    private_pem = rsa_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
    small = public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    bad = [
        (shop.tenant_id, "k1", "RS256", private_pem, "private key"),
        (shop.tenant_id, "k2", "RS256", small, "2048"),
        (shop.tenant_id, "k3", "ES256", public_pem(rsa_private), "P-256"),
        (shop.tenant_id, "k4", "HS256", public_pem(rsa_private), "algorithm"),
        (shop.tenant_id, "hs256-0123456789abcdef", "RS256", public_pem(rsa_private), "kid"),
        (shop.tenant_id, "has space", "RS256", public_pem(rsa_private), "kid"),
    ]
    for tenant_id, kid, alg, pem, why in bad:
        with pytest.raises(ValueError, match=why):
            await gateway_db.run(admin.add_signing_key, tenant_id, False, kid, alg, pem)
    with pytest.raises(LookupError):
        await gateway_db.run(admin.add_signing_key, "ten_NOBODY", False, "k5", "RS256", public_pem(rsa_private))
    assert await gateway_db.run(admin.list_signing_keys, shop.tenant_id) == []


async def test_harmon_signing_keys_cli(stack, store, shop, rsa_private, ec_private, tmp_path: Path, monkeypatch,
                                      until):
    """The gateway's own command, which `harmon signing-keys` runs, here in this process."""
    for name in [n for n in os.environ if n.startswith("HARMON_")]:
        monkeypatch.delenv(name)

    async def harmon(*args: str) -> tuple[int, str, str]:
        parsed = build_parser().parse_args([*args, "--database-url", stack.dsns["gateway"]])
        out, err = io.StringIO(), io.StringIO()
        with redirect_stdout(out), redirect_stderr(err):
            code = await parsed.run(parsed)
        return code, out.getvalue(), err.getvalue()

    rsa_file, ec_file, private_file = tmp_path / "rsa.pub.pem", tmp_path / "ec.pub.pem", tmp_path / "private.pem"
    rsa_file.write_bytes(public_pem(rsa_private))
    ec_file.write_bytes(public_pem(ec_private))
    private_file.write_bytes(ec_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                      serialization.NoEncryption()))

    code, out, err = await harmon("signing-keys", "add", "--tenant", shop.tenant_id, "--kid", "cli-rsa",
                                  "--alg", "RS256", "--public-key", str(rsa_file))
    assert code == 0, err
    rsa_id = out.strip()
    assert rsa_id.startswith("tsk_") and f"iss={shop.tenant_id}" in err
    code, out, err = await harmon("signing-keys", "add", "--tenant", shop.tenant_id, "--live", "--kid", "cli-ec",
                                  "--alg", "ES256", "--public-key", str(ec_file))
    assert code == 0, err

    code, out, _ = await harmon("signing-keys", "list", "--tenant", shop.tenant_id, "--json")
    listed = {k["kid"]: k for k in json.loads(out)}
    assert {k: (v["algorithm"], v["mode"], v["status"]) for k, v in listed.items()} == {
        "cli-rsa": ("RS256", "test", "active"), "cli-ec": ("ES256", "live", "active")}
    assert listed["cli-rsa"]["fingerprint"].startswith("sha256:") and "BEGIN" not in out

    token = backend_token(rsa_private, "RS256", "cli-rsa", shop.tenant_id, shop.big)
    assert (await create_cart(store, token)).status == 201
    code, out, _ = await harmon("signing-keys", "revoke", rsa_id)
    assert code == 0 and "revoked" in out

    async def refused():
        return (await create_cart(store, token)).status == 401
    await until(refused, timeout=1.0, interval=0.01, message="the revoked signing key refused within a second")
    code, out, _ = await harmon("signing-keys", "revoke", rsa_id)
    assert code == 0 and "already revoked" in out
    code, _, _ = await harmon("signing-keys", "list", "--tenant", shop.tenant_id)
    assert code == 0

    # refusals: a private key (never echoed), a kid already used, an unknown tenant or key, an unreadable file
    code, out, err = await harmon("signing-keys", "add", "--tenant", shop.tenant_id, "--kid", "cli-private",
                                  "--alg", "ES256", "--public-key", str(private_file))
    secret_line = private_file.read_text().splitlines()[1]
    assert code == 2 and "private key" in err and secret_line not in out + err
    code, _, err = await harmon("signing-keys", "add", "--tenant", shop.tenant_id, "--kid", "cli-rsa",
                                "--alg", "RS256", "--public-key", str(rsa_file))
    assert code == 2 and "never reused" in err
    code, _, err = await harmon("signing-keys", "add", "--tenant", "ten_NOBODY", "--kid", "k",
                                "--alg", "RS256", "--public-key", str(rsa_file))
    assert code == 1 and "ten_NOBODY" in err
    code, _, err = await harmon("signing-keys", "revoke", "tsk_NOBODY")
    assert code == 1
    code, _, err = await harmon("signing-keys", "add", "--tenant", shop.tenant_id, "--kid", "k",
                                "--alg", "RS256", "--public-key", str(tmp_path / "missing.pem"))
    assert code == 2 and "cannot read" in err
