"""Which keys sign shopper tokens: the deployment's secrets by kid (rotation) and tenants' own RS256/ES256
public keys. The kid picks the key and the key alone picks the algorithm: no token crosses that line."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from libs.contracts.ids import new_id
from services.gateway.admin import check_public_key
from services.gateway.auth import ShopperTokens, TenantKey, audience, key_id_for, load_public_key
from services.gateway.config import Settings
from services.gateway.errors import ApiError

OLD = "old-secret-Qm2vX9pL4sR8tW1yZ6bN3cF5gH0jKq-unit-test"
NEW = "new-secret-7Hc2Lp9Xw4Rt8Vb1Nz6Qm3Ks5Jd0Fg-unit-test"
TENANT = "ten_01JTENANT"
CUSTOMER = "cus_ALICE"


def _pem(private_key) -> str:
    return private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def rsa_key(rsa_private) -> TenantKey:
    return TenantKey(id="tsk_1", tenant_id=TENANT, livemode=False, kid="backend-rsa-1", algorithm="RS256",
                     public_key=_pem(rsa_private))


@pytest.fixture(scope="module")
def ec_key(ec_private) -> TenantKey:
    return TenantKey(id="tsk_2", tenant_id=TENANT, livemode=False, kid="backend-ec-1", algorithm="ES256",
                     public_key=_pem(ec_private))


@pytest.fixture
def tokens() -> ShopperTokens:
    return ShopperTokens(NEW, issuer="harmon", ttl_s=900, previous_secrets=[OLD], tenant_max_lifetime_s=3600)


def claims(*, iss: str = TENANT, aud: str | None = None, sub: str = CUSTOMER, iat_ago: int = 10,
           lifetime: int = 600) -> dict:
    now = int(time.time())
    return {"iss": iss, "aud": aud or audience(TENANT, False), "sub": sub, "iat": now - iat_ago,
            "exp": now - iat_ago + lifetime, "jti": new_id("jti")}


def signed(private_key, key: TenantKey, **overrides) -> str:
    """A token as the tenant's backend signs it."""
    return jwt.encode(claims(**overrides), private_key, algorithm=key.algorithm, headers={"kid": key.kid})


def refused(tokens: ShopperTokens, token: str, tenant_key: TenantKey | None = None, *, tenant: str = TENANT,
            livemode: bool = False) -> ApiError:
    with pytest.raises(ApiError) as info:
        tokens.verify(token, tenant, livemode, tenant_key)
    assert info.value.status == 401 and info.value.type == "authentication_error"
    assert token not in info.value.message
    return info.value


# --- the deployment's keys: rotation -------------------------------------------------------------

def test_current_secret_signs_and_previous_one_still_verifies(tokens):
    minted = tokens.mint(TENANT, False, CUSTOMER)
    assert jwt.get_unverified_header(minted.token)["kid"] == key_id_for(NEW)
    assert tokens.verify(minted.token, TENANT, False).customer_id == CUSTOMER

    before_rotation = ShopperTokens(OLD, issuer="harmon", ttl_s=900).mint(TENANT, False, CUSTOMER).token
    assert jwt.get_unverified_header(before_rotation)["kid"] == key_id_for(OLD)
    assert tokens.verify(before_rotation, TENANT, False).customer_id == CUSTOMER


def test_a_dropped_secret_is_an_unknown_kid(tokens):
    before_rotation = ShopperTokens(OLD, issuer="harmon", ttl_s=900).mint(TENANT, False, CUSTOMER).token
    after_ttl = ShopperTokens(NEW, issuer="harmon", ttl_s=900)  # OLD removed once its tokens expired
    err = refused(after_ttl, before_rotation)
    assert err.code == "shopper_token_invalid" and "unknown signing key" in err.message
    assert after_ttl.verify(tokens.mint(TENANT, False, CUSTOMER).token, TENANT, False).customer_id == CUSTOMER


def test_previous_secret_cannot_be_used_under_the_current_kid(tokens):
    forged = jwt.encode(claims(iss="harmon"), OLD, algorithm="HS256", headers={"kid": key_id_for(NEW)})
    assert refused(tokens, forged).code == "shopper_token_invalid"


def test_settings_read_previous_secrets_from_the_environment(monkeypatch):
    monkeypatch.setenv("HARMON_GATEWAY_SIGNING_SECRET", NEW)
    monkeypatch.setenv("HARMON_GATEWAY_PREVIOUS_SIGNING_SECRETS", f"{OLD}, {OLD[::-1]}")
    settings = Settings(database_url="postgresql://u@h/d")
    assert [s.get_secret_value() for s in settings.previous_signing_secrets] == [OLD, OLD[::-1]]
    assert OLD not in repr(settings)
    assert settings.tenant_token_max_lifetime_s == 3600
    monkeypatch.delenv("HARMON_GATEWAY_PREVIOUS_SIGNING_SECRETS")
    assert Settings(database_url="postgresql://u@h/d").previous_signing_secrets == []


@pytest.mark.parametrize("previous", ["changeme", "short-but-not-enough", "a" * 40])
def test_weak_previous_secret_stops_start_up(monkeypatch, previous):
    monkeypatch.setenv("HARMON_GATEWAY_SIGNING_SECRET", NEW)
    monkeypatch.setenv("HARMON_GATEWAY_PREVIOUS_SIGNING_SECRETS", f"{OLD},{previous}")
    with pytest.raises(ValidationError) as info:
        Settings(database_url="postgresql://u@h/d")
    assert "secret #2 is weak" in str(info.value) and OLD not in str(info.value)


# --- tenants' keys: happy paths ------------------------------------------------------------------

def test_rs256_token_of_the_tenants_backend_verifies(tokens, rsa_private, rsa_key):
    token = signed(rsa_private, rsa_key)
    shopper = tokens.verify(token, TENANT, False, rsa_key)
    assert shopper.customer_id == CUSTOMER
    assert int(shopper.expires_at.timestamp()) == jwt.decode(token, options={"verify_signature": False})["exp"]


def test_es256_token_of_the_tenants_backend_verifies(tokens, ec_private, ec_key):
    assert tokens.verify(signed(ec_private, ec_key), TENANT, False, ec_key).customer_id == CUSTOMER


def test_live_key_verifies_live_tokens(tokens, ec_private, ec_key):
    live = TenantKey(**{**ec_key.__dict__, "livemode": True})
    token = signed(ec_private, live, aud=audience(TENANT, True))
    assert tokens.verify(token, TENANT, True, live).customer_id == CUSTOMER


def test_lifetime_up_to_the_maximum_is_fine(tokens, rsa_private, rsa_key):
    assert tokens.verify(signed(rsa_private, rsa_key, lifetime=3600), TENANT, False, rsa_key)


# --- tenants' keys: refusals ---------------------------------------------------------------------

def test_hs256_signed_with_the_public_key_pem_is_refused(tokens, rsa_key, ec_key):
    # the classic confusion: a verifier that trusts the header's alg would use the PEM as an HMAC secret
    for key in (rsa_key, ec_key):
        head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
        body = _b64(json.dumps(claims()).encode())
        sig = _b64(hmac.new(key.public_key.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest())
        assert refused(tokens, f"{head}.{body}.{sig}", key).code == "shopper_token_invalid"


def test_the_other_asymmetric_algorithm_is_refused(tokens, rsa_private, ec_private, rsa_key, ec_key):
    # a key registered for RS256 accepts RS256 only, even a token its own private key signed with PS256
    ps256 = jwt.encode(claims(), rsa_private, algorithm="PS256", headers={"kid": rsa_key.kid})
    assert refused(tokens, ps256, rsa_key).code == "shopper_token_invalid"
    es_under_rsa_kid = jwt.encode(claims(), ec_private, algorithm="ES256", headers={"kid": rsa_key.kid})
    assert refused(tokens, es_under_rsa_kid, rsa_key).code == "shopper_token_invalid"
    rs_under_ec_kid = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": ec_key.kid})
    assert refused(tokens, rs_under_ec_kid, ec_key).code == "shopper_token_invalid"


@pytest.mark.parametrize("kid", ["backend-rsa-1", key_id_for(NEW)])
def test_alg_none_is_refused(tokens, rsa_key, kid):
    unsigned = f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT', 'kid': kid}).encode())}." \
               f"{_b64(json.dumps(claims()).encode())}."
    assert refused(tokens, unsigned, rsa_key).code == "shopper_token_invalid"


def test_tenant_signed_token_under_a_deployment_kid_is_refused(tokens, rsa_private):
    token = jwt.encode(claims(iss="harmon"), rsa_private, algorithm="RS256", headers={"kid": key_id_for(NEW)})
    assert refused(tokens, token).code == "shopper_token_invalid"


def test_wrong_kid_is_refused(tokens, rsa_private, rsa_key):
    other = jwt.encode(claims(), rsa_private, algorithm="RS256", headers={"kid": "not-registered"})
    err = refused(tokens, other, rsa_key)  # the looked-up key must be the one the kid names
    assert "unknown signing key" in err.message
    assert "unknown signing key" in refused(tokens, signed(rsa_private, rsa_key)).message  # kid not found at all
    no_kid = jwt.encode(claims(), rsa_private, algorithm="RS256")
    assert "unknown signing key" in refused(tokens, no_kid, rsa_key).message
    # the right kid, signed by someone else's private key
    impostor = jwt.encode(claims(), rsa.generate_private_key(public_exponent=65537, key_size=2048),
                          algorithm="RS256", headers={"kid": rsa_key.kid})
    assert refused(tokens, impostor, rsa_key).code == "shopper_token_invalid"


def test_another_tenants_or_modes_key_is_refused(tokens, rsa_private, rsa_key):
    token = signed(rsa_private, rsa_key)
    other_tenant = TenantKey(**{**rsa_key.__dict__, "tenant_id": "ten_OTHER"})
    assert "unknown signing key" in refused(tokens, token, other_tenant).message
    live = TenantKey(**{**rsa_key.__dict__, "livemode": True})
    assert "unknown signing key" in refused(tokens, token, live).message
    # the token of a live key, presented with a test-mode API key
    live_token = signed(rsa_private, live, aud=audience(TENANT, True))
    assert refused(tokens, live_token, live, livemode=False).code == "shopper_token_invalid"


def test_over_long_lifetime_is_refused(tokens, rsa_private, rsa_key):
    err = refused(tokens, signed(rsa_private, rsa_key, lifetime=365 * 86400), rsa_key)
    assert err.code == "shopper_token_invalid" and "longer than 3600 s" in err.message
    assert refused(tokens, signed(rsa_private, rsa_key, lifetime=3601), rsa_key).code == "shopper_token_invalid"


def test_issued_in_the_future_is_refused(tokens, rsa_private, rsa_key):
    assert refused(tokens, signed(rsa_private, rsa_key, iat_ago=-600), rsa_key).code == "shopper_token_invalid"


def test_expired_is_expired(tokens, ec_private, ec_key):
    err = refused(tokens, signed(ec_private, ec_key, iat_ago=700, lifetime=600), ec_key)
    assert err.code == "shopper_token_expired"


@pytest.mark.parametrize("aud", [f"harmon:{TENANT}:live", "harmon:ten_OTHER:test", "harmon"])
def test_wrong_audience_is_refused(tokens, rsa_private, rsa_key, aud):
    err = refused(tokens, signed(rsa_private, rsa_key, aud=aud), rsa_key)
    assert err.code == "shopper_token_invalid" and "another tenant or mode" in err.message


@pytest.mark.parametrize("iss", ["harmon", "ten_OTHER", ""])
def test_issuer_must_be_the_tenant(tokens, rsa_private, rsa_key, iss):
    assert refused(tokens, signed(rsa_private, rsa_key, iss=iss), rsa_key).code == "shopper_token_invalid"


@pytest.mark.parametrize("missing", ["exp", "iat", "jti", "sub", "aud", "iss"])
def test_every_claim_is_required(tokens, rsa_private, rsa_key, missing):
    body = claims()
    del body[missing]
    token = jwt.encode(body, rsa_private, algorithm="RS256", headers={"kid": rsa_key.kid})
    assert refused(tokens, token, rsa_key).code == "shopper_token_invalid"


def test_claims_of_the_wrong_type_are_refused_not_crashed(tokens, rsa_private, rsa_key):
    for bad in ({"exp": "soon"}, {"iat": "then"}, {"sub": 42}, {"sub": "admin"}):
        token = jwt.encode(claims() | bad, rsa_private, algorithm="RS256", headers={"kid": rsa_key.kid})
        assert refused(tokens, token, rsa_key).code == "shopper_token_invalid", bad


# --- registering a public key --------------------------------------------------------------------

def test_registered_key_is_stored_as_its_public_pem(rsa_private, ec_private):
    pkcs1 = rsa_private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
    assert check_public_key(pkcs1, "RS256") == _pem(rsa_private)
    assert check_public_key(_pem(ec_private), "ES256") == _pem(ec_private)


def test_private_keys_are_refused_without_echoing_them(rsa_private):
    private = rsa_private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()).decode()
    with pytest.raises(ValueError) as info:
        check_public_key(private, "RS256")
    assert "private key" in str(info.value) and private.splitlines()[1] not in str(info.value)


def test_keys_that_do_not_fit_the_algorithm_are_refused(rsa_private, ec_private):
    small_rsa = _pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    p384 = _pem(ec.generate_private_key(ec.SECP384R1()))
    cases = [
        (small_rsa, "RS256", "2048"), (_pem(ec_private), "RS256", "RSA"), (_pem(rsa_private), "ES256", "P-256"),
        (p384, "ES256", "P-256"), ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "RS256", "PEM"),
        ("hello", "ES256", "PEM"), (_pem(rsa_private), "HS256", "algorithm"), (_pem(rsa_private), "none", "algorithm"),
    ]
    for pem, alg, why in cases:
        with pytest.raises(ValueError, match=why):
            load_public_key(pem, alg)
    with pytest.raises(ValueError, match="PEM"):
        check_public_key(b"\xff\xfe binary", "RS256")
    with pytest.raises(ValueError, match="at most"):
        check_public_key("x" * 20_000, "RS256")


# --- times: integers, and a lifetime within the limit, whoever signed ----------------------------------

def deployment_signed(secret: str = NEW, **overrides) -> str:
    """A token under the deployment's kid, with claims a minted one would not have."""
    return jwt.encode(claims(iss="harmon") | overrides, secret, algorithm="HS256", headers={"kid": key_id_for(secret)})


def test_a_deployment_token_living_longer_than_the_ttl_is_refused(tokens):
    now = int(time.time())
    century = deployment_signed(iat=now - 10, exp=now + 100 * 365 * 86400)
    err = refused(tokens, century)
    assert err.code == "shopper_token_invalid" and "longer than 900 s" in err.message
    assert refused(tokens, deployment_signed(iat=now - 10, exp=now + 891)).code == "shopper_token_invalid"
    assert tokens.verify(deployment_signed(iat=now - 10, exp=now + 890), TENANT, False).customer_id == CUSTOMER
    assert refused(tokens, deployment_signed(OLD, iat=now, exp=now + 86400)).code == "shopper_token_invalid"


@pytest.mark.parametrize("bad", [
    lambda now: {"exp": str(now + 300)}, lambda now: {"iat": str(now - 10)}, lambda now: {"exp": now + 300.5},
    lambda now: {"iat": float(now - 10)}, lambda now: {"iat": True}, lambda now: {"exp": [now + 300]},
])
def test_times_that_are_not_integers_are_refused_whoever_signed(tokens, rsa_private, rsa_key, bad):
    now = int(time.time())
    err = refused(tokens, deployment_signed(**bad(now)))
    assert err.code == "shopper_token_invalid", err.message
    tenant_token = jwt.encode(claims() | bad(now), rsa_private, algorithm="RS256", headers={"kid": rsa_key.kid})
    assert refused(tokens, tenant_token, rsa_key).code == "shopper_token_invalid"


def test_minted_tokens_still_verify_and_carry_integer_times(tokens):
    minted = tokens.mint(TENANT, False, CUSTOMER)
    body = jwt.decode(minted.token, options={"verify_signature": False})
    assert type(body["exp"]) is int and body["exp"] - body["iat"] == 900
    assert tokens.verify(minted.token, TENANT, False).expires_at == minted.expires_at
