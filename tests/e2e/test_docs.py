"""The reference: /openapi.json is valid and matches what the API answers; /docs is served by this gateway alone.

The browser test drives /docs in headless Chromium (Debian's `chromium`; skipped when there is none):
authorize with a secret key, "Try it out" on GET /v1/products, and see the 200 — with every request the
page made going to this gateway.
"""

import re
import shutil
from importlib.util import find_spec
from urllib.parse import urlsplit

import pytest
import pytest_asyncio
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from libs.contracts.ids import new_id

from .test_checkout import FLOUR_4, OIL_3, RICE_CASES

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def document(http) -> dict:
    async with http.get("/openapi.json") as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        return await r.json()


def assert_documented(doc: dict, method: str, path: str, status: int, body: dict) -> None:
    """`body` is valid against what the document says `method path` answers with `status`."""
    response = doc["paths"][path][method.lower()]["responses"][str(status)]
    schema = response["content"]["application/json"]["schema"]
    errors = list(Draft202012Validator({**schema, "components": doc["components"]}).iter_errors(body))
    assert not errors, f"{method} {path} {status}: {[e.message for e in errors]}"


async def test_the_document_is_valid_openapi_3_1(document):
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert "/v1/checkout" in document["paths"]


async def test_docs_page_and_its_assets_come_from_this_gateway(http):
    async with http.get("/docs") as r:
        assert r.status == 200
        assert r.content_type == "text/html"
        html = await r.text()
    assert not re.findall(r"https?://", html), "the page names another origin"
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets) and any(a.endswith(".css") for a in assets)
    assert '"/openapi.json"' in html
    for asset in assets:
        assert asset.startswith("/") and not asset.startswith("//"), asset
        async with http.get(asset) as r:
            assert r.status == 200, asset
            assert len(await r.read()) > 0, asset


async def test_real_answers_match_the_document(store, shop, document):
    """The flow a storefront runs, each answer checked against the schema the reference shows for it."""
    doc = document
    minted = await store.call("POST", "/v1/shopper_tokens", json={"customer_id": shop.big})
    assert_documented(doc, "POST", "/v1/shopper_tokens", 201, minted.body)
    token = minted.body["token"]
    products = await store.call("GET", "/v1/products?limit=2", token=token)
    assert_documented(doc, "GET", "/v1/products", 200, products.body)
    product = await store.call("GET", "/v1/products/RICE-1KG", key=shop.publishable_key)
    assert_documented(doc, "GET", "/v1/products/{sku}", 200, product.body)

    created = await store.call("POST", "/v1/carts", json={}, token=token)
    assert_documented(doc, "POST", "/v1/carts", 201, created.body)
    cart_id = created.body["id"]
    added = await store.add_line(token, cart_id, **RICE_CASES)
    assert_documented(doc, "POST", "/v1/carts/{cart_id}/lines", 200, added.body)
    line_id = added.body["lines"][0]["id"]
    changed = await store.call("PATCH", f"/v1/carts/{cart_id}/lines/{line_id}", json={"order_quantity": 1},
                               token=token)
    assert_documented(doc, "PATCH", "/v1/carts/{cart_id}/lines/{line_id}", 200, changed.body)
    priced = await store.price(token, cart_id)
    assert_documented(doc, "POST", "/v1/carts/{cart_id}/price", 200, priced.body)
    placed = await store.checkout(token, cart_id, key=new_id("k"), po_number="PO-7")
    assert_documented(doc, "POST", "/v1/checkout", 201, placed.body)
    order = await store.call("GET", f"/v1/orders/{placed.body['id']}", token=token)
    assert_documented(doc, "GET", "/v1/orders/{order_id}", 200, order.body)
    got = await store.call("GET", f"/v1/carts/{cart_id}", token=token)
    assert_documented(doc, "GET", "/v1/carts/{cart_id}", 200, got.body)

    again = await store.add_line(token, cart_id, **OIL_3)
    assert (again.status, again.error["code"]) == (409, "cart_checked_out")
    assert_documented(doc, "POST", "/v1/carts/{cart_id}/lines", 409, again.body)
    assert again.error["code"] in doc["paths"]["/v1/carts/{cart_id}/lines"]["post"]["responses"]["409"]["description"]

    small = await store.token(shop.small)
    cart = await store.cart_with(small, OIL_3, FLOUR_4)
    refused = await store.checkout(small, cart["id"], key=new_id("k"))
    assert refused.status == 402, refused.body
    assert_documented(doc, "POST", "/v1/checkout", 402, refused.body)
    removed = await store.call("DELETE", f"/v1/carts/{cart['id']}/lines/{cart['lines'][1]['id']}", token=small)
    assert_documented(doc, "DELETE", "/v1/carts/{cart_id}/lines/{line_id}", 200, removed.body)

    for method, path, kwargs, status in [
        ("GET", "/v1/products", {"key": "hk_test_sec_" + "x" * 43}, 401),
        ("POST", "/v1/carts", {"key": shop.publishable_key, "json": {}}, 403),
        ("POST", "/v1/carts", {"token": token, "json": {"customer_id": shop.big}}, 400),
    ]:
        reply = await store.call(method, path, **kwargs)
        assert reply.status == status, reply.body
        assert_documented(doc, method, path, status, reply.body)
        documented = doc["paths"][path][method.lower()]["responses"][str(status)]["description"].split(", ")
        assert reply.error["code"] in documented


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: `apt-get install chromium` runs this test")
@pytest.mark.skipif(find_spec("playwright") is None,
                    reason='no playwright: `pip install -e ".[browser]"` (never `playwright install`: Debian\'s '
                           "chromium is used)")
async def test_try_it_out_in_a_headless_browser(stack, shop):
    from playwright.async_api import async_playwright

    origin = stack.base_url
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            requested: list[str] = []
            page.on("request", lambda request: requested.append(request.url))
            await page.goto(f"{origin}/docs#/products/list_products")  # deep link: the operation opens

            await page.click("button.authorize")
            await page.locator(".auth-container input").first.fill(shop.secret_key)  # the first scheme: apiKey
            await page.locator(".auth-container .auth-btn-wrapper button.authorize").first.click()
            await page.click("button.btn-done")

            operation = page.locator("#operations-products-list_products")
            await operation.locator("button.try-out__btn").click()
            await operation.locator("button.execute").click()
            status = operation.locator(".live-responses-table tr.response .response-col_status").first
            await status.wait_for(timeout=15_000)
            assert (await status.inner_text()).strip() == "200"
            body = await operation.locator(".live-responses-table tr.response .microlight").first.inner_text()
            assert '"object": "list"' in body
        finally:
            await browser.close()
    api_calls = [u for u in requested if urlsplit(u).path == "/v1/products"]
    assert api_calls, requested
    foreign = [u for u in requested if not u.startswith(origin) and not u.startswith("data:")]
    assert not foreign, f"the page reached beyond this gateway: {foreign}"
