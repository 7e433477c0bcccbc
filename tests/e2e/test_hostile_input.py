"""Hostile bytes at the gateway: malformed headers, forged log lines, hostile JSON, PostgreSQL out of reach.

Each answer is the one error shape with a Request-Id, never aiohttp's plain text or a 500, and neither the
answer nor the gateway's log holds the key or token that was sent. Headers go over a raw socket: an HTTP
client would refuse to send most of them.
"""

import asyncio
import json
import re
from urllib.parse import urlsplit

import asyncpg
import pytest

from libs.contracts.ids import new_id
from tests.logscan import assert_json_logs, read_records

pytestmark = pytest.mark.e2e

FORGED = "2026-12-01 13:00:00,000 INFO gateway FORGED"


async def exchange(stack, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to the gateway; (status, headers with lower-case names, body) of its one answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.gateway_port)
    try:
        writer.write(raw)
        await writer.drain()
        head, _, body = (await asyncio.wait_for(reader.read(), 15)).partition(b"\r\n\r\n")
    finally:
        writer.close()
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def malformed_requests(key: str, token: str) -> dict[str, bytes]:
    """What a hostile-input probe sends: every case carries the real key or token, which must not come back."""
    auth = f"Authorization: Bearer {key}\r\n"
    shopper = f"X-Storefront-Shopper-Token: {token}\r\n"
    get = "GET /v1/products HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    post = "POST /v1/carts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    cases = {
        "control character after the key": f"{get}Authorization: Bearer {key}\x01\r\n\r\n",
        "NUL after the token": f"{get}{auth}X-Storefront-Shopper-Token: {token}\x00\r\n\r\n",
        "a header over 8 KB": f"{get}{auth}X-Storefront-Shopper-Token: {token}{'a' * 9000}\r\n\r\n",
        "bare CR": f"{get}Authorization: Bearer {key}\rX-Other: 1\r\n\r\n",
        "bare LF": f"{get}Authorization: Bearer {key}\nX-Other: 1\r\n\r\n",
        "obs-fold": f"{get}Authorization: Bearer\r\n {key}\r\n\r\n",
        "duplicate Content-Length": f"{post}{auth}{shopper}Content-Length: 2\r\nContent-Length: 2\r\n\r\n{{}}",
        "Content-Length with Transfer-Encoding":
            f"{post}{auth}{shopper}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "1,000 headers": get + auth + shopper + "".join(f"X-Probe-{i}: 1\r\n" for i in range(1000)) + "\r\n",
    }
    return {name: raw.encode("latin-1") for name, raw in cases.items()}


def gateway_log(stack) -> str:
    return stack.log_path("gateway").read_bytes().decode(errors="replace")


def records_of(stack, request_id: str) -> list[dict]:
    """The gateway's log records of one request (its JSON field: a record without it is none of them)."""
    return [r for r in read_records(stack.log_path("gateway")) if r.get("request_id") == request_id]


async def test_malformed_headers_are_400_header_invalid_without_echoing_or_logging_the_bytes(store, shop, stack,
                                                                                           until):
    key, token = shop.secret_key, await store.token(shop.big)
    secret_part = key.split("_", 3)[3]
    request_ids = {}
    for name, raw in malformed_requests(key, token).items():
        status, headers, body = await exchange(stack, raw)
        assert status == 400, (name, status, body[:200])
        assert headers["content-type"].startswith("application/json"), (name, headers)
        error = json.loads(body)["error"]
        assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "header_invalid", None), \
            name
        assert error["request_id"] == headers["request-id"] and re.fullmatch(r"req_\w+", error["request_id"]), name
        text = body.decode("latin-1")
        assert secret_part not in text and secret_part[:16] not in text and token[:40] not in text, name
        request_ids[name] = error["request_id"]
    assert len(set(request_ids.values())) == len(request_ids), "a fresh Request-Id for each"

    # one record each, naming the error's class only
    for name, request_id in request_ids.items():
        [record] = await until(lambda: records_of(stack, request_id), timeout=10, message=f"{name} logged")
        assert re.fullmatch(r"refused a malformed request from 127\.0\.0\.1 \((BadHttpMessage|LineTooLong|"
                            r"BadStatusLine|InvalidHeader)\)", record["message"]), (name, record)
    assert_json_logs(stack.log_path("gateway"))  # every line a record, no key or token in any field
    log = gateway_log(stack)
    assert secret_part not in log and secret_part[:16] not in log and token[:40] not in log
    assert "Error handling request" not in log, "aiohttp.server logged a refused request with its bytes"


async def test_a_forged_newline_in_the_path_stays_inside_its_log_line(store, shop, stack, until):
    token = await store.token(shop.big)
    forged_path = "/v1/carts/cart_X%0a" + FORGED.replace(" ", "%20")
    raw = (f"GET {forged_path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {shop.secret_key}\r\n"
           f"X-Storefront-Shopper-Token: {token}\r\nConnection: close\r\n\r\n")
    status, headers, body = await exchange(stack, raw.encode())
    assert (status, json.loads(body)["error"]["code"]) == (404, "resource_missing")

    records = await until(lambda: records_of(stack, headers["request-id"]), timeout=10, message="the request logged")
    # the newline is inside the record's message (JSON-escaped in the file), not a record of its own
    assert any(r["message"].startswith(f"GET /v1/carts/cart_X\n{FORGED} 404 ") for r in records), records
    assert not any(line.startswith(FORGED) for line in gateway_log(stack).split("\n"))
    assert_json_logs(stack.log_path("gateway"))


async def test_hostile_json_is_json_invalid_and_writes_nothing(store, shop, db):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    path = f"/v1/carts/{cart['id']}/lines"
    bodies = {
        "20,000 levels deep": b"[" * 20_000 + b"]" * 20_000,
        "6,000 objects deep": b'{"a":' * 6_000 + b"1" + b"}" * 6_000,
        "a repeated key": b'{"sku": "OIL-1L", "quantity": 1, "quantity": 999999}',
    }
    for name, raw in bodies.items():
        key = new_id("k")
        r = await store.call("POST", path, data=raw, token=token, headers={"Idempotency-Key": key})
        assert (r.status, r.error.get("code")) == (400, "json_invalid"), (name, r.status, r.body)
        assert r.error["request_id"] == r.headers["Request-Id"]
        stored = await db("gateway", "SELECT key FROM idempotency_records WHERE tenant_id = $1 AND key = $2",
                          shop.tenant_id, key)
        assert stored == [], f"{name}: a refused body was stored as the key's answer"
    after = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
    assert (after.body["version"], after.body["lines"]) == (cart["version"], cart["lines"])


async def test_a_body_that_does_not_decode_is_body_invalid_and_writes_nothing(store, shop, stack, db):
    token = await store.token(shop.big)
    cart = await store.cart_with(token, {"sku": "OIL-1L", "quantity": 1})
    key = new_id("k")
    garbage = b"not gzip at all"
    raw = (f"POST /v1/carts/{cart['id']}/lines HTTP/1.1\r\nHost: 127.0.0.1\r\n"
           f"Authorization: Bearer {shop.secret_key}\r\nX-Storefront-Shopper-Token: {token}\r\n"
           f"Idempotency-Key: {key}\r\nContent-Type: application/json\r\n"
           f"Content-Encoding: gzip\r\nContent-Length: {len(garbage)}\r\nConnection: close\r\n\r\n").encode() + garbage
    status, headers, body = await exchange(stack, raw)
    error = json.loads(body)["error"]
    assert (status, error["type"], error["code"]) == (400, "invalid_request_error", "body_invalid"), body
    assert error["request_id"] == headers["request-id"]
    assert await db("gateway", "SELECT key FROM idempotency_records WHERE tenant_id = $1 AND key = $2",
                    shop.tenant_id, key) == []
    after = await store.call("GET", f"/v1/carts/{cart['id']}", token=token)
    assert (after.body["version"], after.body["lines"]) == (cart["version"], cart["lines"])


async def test_postgresql_out_of_reach_is_503_service_unavailable_never_500(store, shop, stack, until):
    """The gateway's role may not log in and its connections are terminated: every request that needs the
    database is 503 with Retry-After, logged once at WARNING with the error class; then all is restored."""
    token = await store.token(shop.big)
    role = urlsplit(stack.dsns["gateway"]).username
    assert role and re.fullmatch(r"[a-z_][a-z0-9_]*", role), role
    admin = await asyncpg.connect(stack.admin_dsn)

    async def no_connections() -> bool:
        await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role)
        return not await admin.fetch("SELECT 1 FROM pg_stat_activity WHERE usename = $1", role)

    answers = []
    try:
        await admin.execute(f'ALTER ROLE "{role}" NOLOGIN')
        await until(no_connections, timeout=10, message="the gateway's connections are gone")
        for method, path, body in (("GET", "/v1/products", None), ("POST", "/v1/carts", {}),
                                   ("GET", "/v1/carts/cart_NOSUCH", None), ("GET", "/v1/products", None)):
            answers.append(await store.call(method, path, json=body, token=token))
    finally:
        await admin.execute(f'ALTER ROLE "{role}" LOGIN')
        await admin.close()

    async def gateway_serves_again():
        return (await store.call("GET", "/v1/products", token=token)).status == 200
    await until(gateway_serves_again, timeout=30, message="the gateway answers from its database again")

    for r in answers:
        assert r.status == 503, (r.status, r.body)
        assert (r.error["type"], r.error["code"]) == ("api_error", "service_unavailable"), r.body
        assert 1 <= int(r.headers["Retry-After"]) <= 10
        assert r.error["request_id"] == r.headers["Request-Id"]
    for r in answers:
        records = await until(lambda: records_of(stack, r.headers["Request-Id"]), timeout=10, message="logged")
        warnings = [record for record in records if record["level"] == "WARNING"]
        assert len(warnings) == 1, records
        assert re.search(r"a dependency is unavailable \(\w+( ← \w+)?\); answered 503$", warnings[0]["message"]), \
            warnings
        assert not [record for record in records if record["level"] in ("ERROR", "CRITICAL") or "exc_info" in record
                    or "Traceback" in record["message"]], records
