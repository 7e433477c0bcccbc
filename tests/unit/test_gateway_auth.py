"""Shopper JWTs and API keys, without a network: what is accepted, and in which words the rest is refused."""

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from pydantic import ValidationError

from services.gateway.auth import (
    API_KEY_PATTERN, ShopperTokens, audience, bearer_key, generate_api_key, hash_api_key, key_id_for, key_prefix,
    parse_api_key,
)
from services.gateway.config import Settings
from services.gateway.errors import ApiError

SECRET = "k7Qm2vX9pL4sR8tW1yZ6bN3cF5gH0jKq-unit-test-only-k7Qm2vX9pL4sR8tW1yZ6bN3c"
TENANT = "ten_01JTEST"


@pytest.fixture
def tokens() -> ShopperTokens:
    return ShopperTokens(SECRET, issuer="harmon", ttl_s=900)


def refused(fn, *args) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args)
    assert info.value.status == 401 and info.value.type == "authentication_error"
    return info.value


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# --- shopper tokens ---------------------------------------------------------------------------

def test_minted_token_verifies_for_its_tenant_and_mode(tokens):
    minted = tokens.mint(TENANT, False, "cus_ALICE")
    shopper = tokens.verify(minted.token, TENANT, False)
    assert shopper.customer_id == "cus_ALICE"
    assert shopper.expires_at == minted.expires_at
    claims = jwt.decode(minted.token, options={"verify_signature": False})
    assert claims["iss"] == "harmon" and claims["aud"] == f"harmon:{TENANT}:test" and claims["sub"] == "cus_ALICE"
    assert claims["exp"] - claims["iat"] == 900 and claims["jti"].startswith("jti_")
    assert jwt.get_unverified_header(minted.token) == {"alg": "HS256", "kid": key_id_for(SECRET), "typ": "JWT"}


def test_audience_names_tenant_and_mode():
    assert audience("ten_1", True) == "harmon:ten_1:live"
    assert audience("ten_1", False) == "harmon:ten_1:test"


def test_expired_token_is_expired(tokens):
    minted = tokens.mint(TENANT, False, "cus_ALICE", now=datetime.now(UTC) - timedelta(seconds=900 + 60))
    assert refused(tokens.verify, minted.token, TENANT, False).code == "shopper_token_expired"


def test_expiry_has_five_seconds_leeway(tokens):
    minted = tokens.mint(TENANT, False, "cus_ALICE", now=datetime.now(UTC) - timedelta(seconds=900 + 2))
    assert tokens.verify(minted.token, TENANT, False).customer_id == "cus_ALICE"


@pytest.mark.parametrize("tenant, livemode", [("ten_OTHER", False), (TENANT, True)])
def test_wrong_audience_is_invalid(tokens, tenant, livemode):
    minted = tokens.mint(TENANT, False, "cus_ALICE")
    err = refused(tokens.verify, minted.token, tenant, livemode)
    assert err.code == "shopper_token_invalid"


def test_other_issuer_is_invalid(tokens):
    other = ShopperTokens(SECRET, issuer="someone-else", ttl_s=900)
    token = other.mint(TENANT, False, "cus_A").token
    assert refused(tokens.verify, token, TENANT, False).code == "shopper_token_invalid"


def test_wrong_signature_is_invalid(tokens):
    minted = tokens.mint(TENANT, False, "cus_ALICE")
    head, body, _ = minted.token.split(".")
    forged_sig = jwt.encode(jwt.decode(minted.token, options={"verify_signature": False}), "x" * 40,
                            algorithm="HS256").split(".")[2]
    assert refused(tokens.verify, f"{head}.{body}.{forged_sig}", TENANT, False).code == "shopper_token_invalid"


def test_tampered_claims_are_invalid(tokens):
    minted = tokens.mint(TENANT, False, "cus_ALICE")
    head, _, sig = minted.token.split(".")
    claims = jwt.decode(minted.token, options={"verify_signature": False}) | {"sub": "cus_MALLORY"}
    assert refused(tokens.verify, f"{head}.{_b64(claims)}.{sig}", TENANT, False).code == "shopper_token_invalid"


def test_alg_none_is_invalid(tokens):
    claims = jwt.decode(tokens.mint(TENANT, False, "cus_ALICE").token, options={"verify_signature": False})
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': key_id_for(SECRET)})}.{_b64(claims)}."
    assert refused(tokens.verify, unsigned, TENANT, False).code == "shopper_token_invalid"


def test_other_hmac_algorithm_is_invalid(tokens):
    claims = jwt.decode(tokens.mint(TENANT, False, "cus_ALICE").token, options={"verify_signature": False})
    hs512 = jwt.encode(claims, SECRET, algorithm="HS512", headers={"kid": key_id_for(SECRET)})
    assert refused(tokens.verify, hs512, TENANT, False).code == "shopper_token_invalid"


def test_unknown_kid_is_invalid(tokens):
    claims = jwt.decode(tokens.mint(TENANT, False, "cus_ALICE").token, options={"verify_signature": False})
    for headers in ({"kid": "hs256-0000000000000000"}, {}):
        token = jwt.encode(claims, SECRET, algorithm="HS256", headers=headers)
        err = refused(tokens.verify, token, TENANT, False)
        assert err.code == "shopper_token_invalid" and "signing key" in err.message


def test_rotated_secret_refuses_old_tokens(tokens):
    old = tokens.mint(TENANT, False, "cus_ALICE").token
    rotated = ShopperTokens("another-secret-entirely-0123456789abcdef", issuer="harmon", ttl_s=900)
    assert refused(rotated.verify, old, TENANT, False).code == "shopper_token_invalid"


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 5000])
def test_garbage_is_invalid(tokens, token):
    assert refused(tokens.verify, token, TENANT, False).code == "shopper_token_invalid"


def test_missing_claims_are_invalid(tokens):
    now = int(datetime.now(UTC).timestamp())
    claims = {"iss": "harmon", "aud": f"harmon:{TENANT}:test", "sub": "cus_A", "iat": now, "exp": now + 60}  # no jti
    token = jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": key_id_for(SECRET)})
    assert refused(tokens.verify, token, TENANT, False).code == "shopper_token_invalid"


def test_error_messages_never_carry_the_token(tokens):
    token = tokens.mint(TENANT, False, "cus_ALICE").token
    err = refused(tokens.verify, token, "ten_OTHER", False)
    assert token not in json.dumps(err.body("req_1"))


# --- API keys ---------------------------------------------------------------------------------

@pytest.mark.parametrize("livemode, kind, prefix", [
    (False, "secret", "hk_test_sec"), (True, "secret", "hk_live_sec"),
    (False, "publishable", "hk_test_pub"), (True, "publishable", "hk_live_pub"),
])
def test_generated_keys_have_the_documented_shape(livemode, kind, prefix):
    key = generate_api_key(livemode, kind)
    assert key.startswith(prefix + "_") and key_prefix(livemode, kind) == prefix
    assert API_KEY_PATTERN.match(key) and len(key) - len(prefix) - 1 >= 32
    assert parse_api_key(key) == (livemode, kind)
    assert generate_api_key(livemode, kind) != key


def test_key_hash_is_sha256_hex():
    key = generate_api_key(False, "secret")
    assert hash_api_key(key) == hashlib.sha256(key.encode()).hexdigest()
    assert len(hash_api_key(key)) == 64


@pytest.mark.parametrize("key", [
    "", "hk_test_sec_", "hk_test_sec_short", "hk_prod_sec_" + "a" * 40, "hk_test_adm_" + "a" * 40,
    "sk_test_" + "a" * 40, "hk_test_sec_" + "a" * 31, "hk_test_sec_" + "a" * 40 + "!",
])
def test_malformed_keys_do_not_parse(key):
    assert parse_api_key(key) is None


@pytest.mark.parametrize("header", [None, "", "Basic Zm9vOmJhcg==", "Bearer", "Bearer   "])
def test_missing_bearer_is_api_key_missing(header):
    with pytest.raises(ApiError) as info:
        bearer_key(header)
    assert (info.value.status, info.value.code) == (401, "api_key_missing")


def test_bearer_scheme_is_case_insensitive():
    assert bearer_key("bearer hk_test_sec_x") == "hk_test_sec_x"


# --- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("secret", ["short", "changeme", "a" * 64])
def test_weak_signing_secret_is_refused(secret):
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql://u@h/d", signing_secret=secret)


def test_missing_signing_secret_is_refused(monkeypatch):
    monkeypatch.delenv("HARMON_GATEWAY_SIGNING_SECRET", raising=False)
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql://u@h/d")


def test_lease_must_outlive_requests():
    with pytest.raises(ValidationError):
        Settings(database_url="postgresql://u@h/d", signing_secret=SECRET, checkout_timeout_s=30,
                 idempotency_lease_s=20)


def test_secret_is_not_in_settings_repr():
    s = Settings(database_url="postgresql://u@h/d", signing_secret=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s.model_dump())
