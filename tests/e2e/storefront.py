"""A storefront backend's view of the API: what the e2e tests drive, over real HTTP."""

from dataclasses import dataclass

import aiohttp


@dataclass
class Reply:
    status: int
    body: dict
    headers: dict

    @property
    def error(self) -> dict:
        return self.body.get("error", {})


class Storefront:
    def __init__(self, http: aiohttp.ClientSession, base_url: str, secret_key: str):
        self.http = http
        self.base_url = base_url
        self.key = secret_key

    async def call(self, method: str, path: str, *, json: object = None, data: bytes | None = None,
                   token: str | None = None, key: str | None = None, headers: dict | None = None) -> Reply:
        h = {"Authorization": f"Bearer {key or self.key}"}
        if token:
            h["X-Storefront-Shopper-Token"] = token
        if data is not None:
            h["Content-Type"] = "application/json"
        h.update(headers or {})
        async with self.http.request(method, self.base_url + path, json=json, data=data, headers=h) as r:
            body = await r.json(content_type=None) if r.content_length != 0 else {}
            return Reply(r.status, body or {}, dict(r.headers))

    async def token(self, customer_id: str) -> str:
        r = await self.call("POST", "/v1/shopper_tokens", json={"customer_id": customer_id})
        assert r.status == 201, r.body
        return r.body["token"]

    async def new_cart(self, token: str) -> dict:
        r = await self.call("POST", "/v1/carts", json={}, token=token)
        assert r.status in (200, 201), r.body
        return r.body

    async def add_line(self, token: str, cart_id: str, **line) -> Reply:
        return await self.call("POST", f"/v1/carts/{cart_id}/lines", json=line, token=token)

    async def cart_with(self, token: str, *lines: dict) -> dict:
        cart = await self.new_cart(token)
        for line in lines:
            r = await self.add_line(token, cart["id"], **line)
            assert r.status in (200, 201), r.body
            cart = r.body
        return cart

    async def price(self, token: str, cart_id: str) -> Reply:
        return await self.call("POST", f"/v1/carts/{cart_id}/price", json={}, token=token)

    async def checkout(self, token: str, cart_id: str, key: str | None = None, **extra) -> Reply:
        headers = {"Idempotency-Key": key} if key else None
        return await self.call("POST", "/v1/checkout", json={"cart_id": cart_id, **extra}, token=token, headers=headers)

    # the order's lifecycle, invoices and credit (issue 14)

    async def order(self, token: str, order_id: str) -> dict:
        r = await self.call("GET", f"/v1/orders/{order_id}", token=token)
        assert r.status == 200, r.body
        return r.body

    async def invoices(self, token: str, **filters: object) -> list[dict]:
        """The token's customer's invoices (newest first), every page, with `status` / `order_id` filters."""
        found: list[dict] = []
        after: str | None = None
        while True:
            query = "&".join(f"{k}={v}" for k, v in {"limit": 100, **filters, "starting_after": after}.items()
                             if v is not None)
            r = await self.call("GET", f"/v1/invoices?{query}", token=token)
            assert r.status == 200, r.body
            found += r.body["data"]
            if not r.body["has_more"]:
                return found
            after = found[-1]["id"]

    async def invoice(self, token: str, invoice_id: str) -> dict:
        r = await self.call("GET", f"/v1/invoices/{invoice_id}", token=token)
        assert r.status == 200, r.body
        return r.body

    async def credit(self, token: str) -> dict:
        r = await self.call("GET", "/v1/credit", token=token)
        assert r.status == 200, r.body
        return r.body

    async def cancel(self, token: str, order_id: str, **body: object) -> Reply:
        return await self.call("POST", f"/v1/orders/{order_id}/cancel", json=body, token=token)
