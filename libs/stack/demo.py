"""Demo data for `harmon dev`, loaded the way an ERP loads it: by publishing master data on `erp.*.v1`.

Tenants and API keys are the gateway's own data, made by the gateway's admin command run as a process
(`python -m services.gateway.admin_cli … --json`; libs/ never imports services/). Everything
generated (tenant ids, keys, customer ids) is kept in `<data-dir>/secrets.json`, so a restart
re-publishes the same records (upserts: idempotent) and hands out the same keys.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from libs.contracts import topics
from libs.contracts.base import Message
from libs.contracts.credit import CreditAccountView, GetCreditAccount
from libs.contracts.envelope import Envelope
from libs.contracts.erp import (CreditLimitUpsert, CustomerUpsert, DeliveryRecorded, FulfilmentRecorded,
                              OrderCancellationRecorded, PaymentRecorded, PriceUpsert, ProductUpsert)
from libs.contracts.ids import CUSTOMER, new_id
from libs.contracts.money import DEFAULT_CURRENCY, TaxCategory
from libs.runtime.kafka import ensure_topics

from .supervisor import Stack, write_private_json

log = logging.getLogger("harmon.demo")

T = TypeVar("T")
VISIBLE_TIMEOUT_S = 60.0
REPLY_TOPIC = "harmon.demo.replies"


@dataclass(frozen=True)
class DemoCustomer:
    key: str  # stable name; the cus_ id is generated once per data dir
    name: str
    terms: str
    limit: int | None = None  # on the customer's own account; None for a buyer billed to a parent
    bill_to: str | None = None  # key of the parent account
    price_list_id: str | None = None


@dataclass(frozen=True)
class DemoProduct:
    sku: str
    name: str
    list_price: int
    units: dict[str, int] = field(default_factory=dict)
    tax_category: TaxCategory = TaxCategory.STANDARD
    base_uom: str = "EA"


@dataclass(frozen=True)
class DemoPrice:
    sku: str
    unit_amount: int
    customer: str | None = None  # key of the customer with this contract price
    price_list_id: str | None = None
    min_quantity: int = 1


@dataclass(frozen=True)
class DemoTenant:
    name: str
    customers: tuple[DemoCustomer, ...]
    products: tuple[DemoProduct, ...]
    prices: tuple[DemoPrice, ...] = ()


MAIN = DemoTenant(
    name="Kingston Trade Supplies (demo)",
    customers=(
        DemoCustomer("blue_mountain", "Blue Mountain Grocers", "net_30", limit=25_000_000, price_list_id="trade"),
        # JMD 50.00 of credit: less than any one product, so checkout answers over_credit_limit
        DemoCustomer("half_way_tree", "Half Way Tree Pharmacy", "net_14", limit=5_000),
        DemoCustomer("coastal", "Coastal Hotels Group (head office)", "net_30", limit=5_000_000),
        DemoCustomer("coastal_negril", "Coastal Hotels Negril", "net_30", bill_to="coastal", price_list_id="trade"),
        DemoCustomer("coastal_ocho_rios", "Coastal Hotels Ocho Rios", "net_30", bill_to="coastal",
                     price_list_id="trade"),
    ),
    products=(
        DemoProduct("RICE-2KG", "Long-grain rice 2 kg", 45_000, units={"CASE": 12}),
        DemoProduct("FLOUR-1KG", "Counter flour 1 kg", 22_000, units={"BAG": 25}),
        DemoProduct("MILK-UHT-1L", "UHT milk 1 L", 32_000, units={"CASE": 12}, tax_category=TaxCategory.ZERO_RATED),
        DemoProduct("BLEACH-3L", "Bleach 3.78 L", 54_000),
    ),
    prices=(
        DemoPrice("RICE-2KG", 39_900, customer="blue_mountain"),  # contract price
        DemoPrice("FLOUR-1KG", 19_500, price_list_id="trade"),  # price-list price
        DemoPrice("BLEACH-3L", 49_500, min_quantity=6),  # quantity break on the list price
    ),
)

OTHER = DemoTenant(
    name="Montego Bay Provisions (demo)",
    customers=(DemoCustomer("sam_sharpe", "Sam Sharpe Square Supermarket", "net_30", limit=10_000_000),),
    # the same sku as the main tenant's at another price: tenants never see each other's catalog
    products=(DemoProduct("RICE-2KG", "Parboiled rice 2 kg", 47_500, units={"CASE": 10}),),
)


@dataclass(frozen=True)
class TenantKeys:
    tenant_id: str
    secret_key: str
    publishable_key: str
    livemode: bool = False


GATEWAY_ADMIN = "services.gateway.admin_cli"  # the gateway owns tenants and keys


async def gateway_admin(gateway_dsn: str, *arguments: str) -> dict[str, Any]:
    """Run the gateway's admin command with `--json` on `gateway_dsn` and return what it printed.

    The DSN goes in the child's environment (HARMON_GATEWAY_DATABASE_URL), never on its command line."""
    env = {k: v for k, v in os.environ.items() if not (k.startswith("HARMON_") and k.endswith("DATABASE_URL"))}
    env["HARMON_GATEWAY_DATABASE_URL"] = gateway_dsn
    project_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (project_root, env.get("PYTHONPATH")) if p)
    child = await asyncio.create_subprocess_exec(sys.executable, "-m", GATEWAY_ADMIN, *arguments, "--json", env=env,
                                                 stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await child.communicate()
    if child.returncode != 0:
        # its stderr names keys by prefix and last four only; the full ones are on stdout, not shown here
        raise RuntimeError(f"gateway admin {' '.join(arguments[:2])} exited {child.returncode}: "
                           f"{err.decode(errors='replace').strip()[-2000:]}")
    return json.loads(out)


async def create_tenant_with_keys(gateway_dsn: str, name: str, livemode: bool = False, *,
                                  rate_limit: str | None = None, mint_rate_limit: str | None = None) -> TenantKeys:
    """A new tenant in the gateway's database, with one secret and one publishable key (and its own rate limits)."""
    limits = [*(("--rate-limit", rate_limit) if rate_limit else ()),
              *(("--mint-rate-limit", mint_rate_limit) if mint_rate_limit else ())]
    made = await gateway_admin(gateway_dsn, "tenants", "create", name, "--with-keys",
                               "--mode", "live" if livemode else "test", *limits)
    keys = {k["kind"]: k["key"] for k in made["keys"]}
    return TenantKeys(made["id"], keys["secret"], keys["publishable"], livemode)


async def set_tenant_rate_limits(gateway_dsn: str, tenant_id: str, rate_limit: str | None,
                                 mint_rate_limit: str | None) -> tuple[str | None, str | None]:
    """Set a tenant's rate limits (None: the deployment's default); returns the ones it had."""
    updated = await gateway_admin(gateway_dsn, "tenants", "update", tenant_id, "--rate-limit", rate_limit or "default",
                                  "--mint-rate-limit", mint_rate_limit or "default")
    return updated["previous"]["rate_limit"], updated["previous"]["mint_rate_limit"]


class ErpPublisher:
    """Publishes master data as the ERP does: an envelope per record on its erp.*.v1 topic, keyed by entity."""

    TOPICS: dict[type[Message], tuple[topics.TopicSpec, Callable[[Any], str]]] = {
        CustomerUpsert: (topics.ERP_CUSTOMERS, lambda r: r.customer_id),
        ProductUpsert: (topics.ERP_PRODUCTS, lambda r: r.sku),
        PriceUpsert: (topics.ERP_PRICES, lambda r: r.sku),
        CreditLimitUpsert: (topics.ERP_CREDIT_LIMITS, lambda r: r.customer_id),
        FulfilmentRecorded: (topics.ERP_FULFILMENTS, lambda r: r.order_id),
        DeliveryRecorded: (topics.ERP_DELIVERIES, lambda r: r.order_id),
        OrderCancellationRecorded: (topics.ERP_ORDER_CANCELLATIONS, lambda r: r.order_id),
        PaymentRecorded: (topics.ERP_PAYMENTS, lambda r: r.customer_id),  # the bill-to account
    }

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)

    async def start(self) -> None:
        await self.producer.start()

    async def stop(self) -> None:
        await self.producer.stop()

    async def publish(self, topic: topics.TopicSpec | str | None, record: Message, tenant_id: str,
                      livemode: bool = False, *, key: str | None = None, **envelope: Any) -> Envelope:
        """Send one record and return its envelope. `topic` None picks the record type's own erp topic;
        the key defaults to the record's entity id; `envelope` sets other envelope fields (message_id,
        occurred_at, …), e.g. to send a duplicate or an out-of-order record."""
        spec, key_of = self.TOPICS.get(type(record), (None, None))
        if topic is None and spec is None:
            raise ValueError(f"no erp topic for {type(record).__name__}; name one")
        name = topic if isinstance(topic, str) else (topic or spec).name  # type: ignore[union-attr]
        key = key if key is not None else key_of(record) if key_of else None
        env = Envelope(tenant_id=tenant_id, livemode=livemode, payload=record, **envelope)
        await self.producer.send_and_wait(name, env.to_bytes(), key=key.encode() if key else None)
        return env

    async def __aenter__(self) -> "ErpPublisher":
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def tenant_records(tenant: DemoTenant, ids: dict[str, str]) -> list[Message]:
    """The ERP records of one demo tenant; `ids` maps customer keys to their cus_ ids."""
    records: list[Message] = []
    for p in tenant.products:
        records.append(ProductUpsert(sku=p.sku, name=p.name, base_uom=p.base_uom, units=p.units,
                                     tax_category=p.tax_category))
        records.append(PriceUpsert(price_id=f"list-{p.sku}", sku=p.sku, unit_amount=p.list_price))
    for pr in tenant.prices:
        scope = f"cus-{ids[pr.customer]}" if pr.customer else f"pl-{pr.price_list_id}" if pr.price_list_id else "list"
        records.append(PriceUpsert(
            price_id=f"{scope}-{pr.sku}-{pr.min_quantity}", sku=pr.sku, unit_amount=pr.unit_amount,
            customer_id=ids[pr.customer] if pr.customer else None, price_list_id=pr.price_list_id,
            min_quantity=pr.min_quantity))
    for c in tenant.customers:
        records.append(CustomerUpsert(customer_id=ids[c.key], name=c.name, terms=c.terms,
                                      bill_to_id=ids[c.bill_to] if c.bill_to else None,
                                      price_list_id=c.price_list_id))
        if c.limit is not None:
            records.append(CreditLimitUpsert(customer_id=ids[c.key], limit=c.limit))
    return records


class NotYet(Exception):
    """What an attempt saw instead of the data it waits for."""


async def _poll(what: str, attempt: Callable[[], Awaitable[T]], timeout: float = VISIBLE_TIMEOUT_S) -> T:
    """Call `attempt` until it stops raising NotYet (or a connection error)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await attempt()
        except (NotYet, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"demo data not visible after {timeout:.0f} s: {what}; last answer: {last}")
        await asyncio.sleep(0.1)


class _CreditQueries:
    """GetCreditAccount over the broker: checks that credit has the limits and reads what is available."""

    def __init__(self, bootstrap: str, producer: AIOKafkaProducer) -> None:
        self.bootstrap, self._producer = bootstrap, producer
        self._consumer: AIOKafkaConsumer | None = None
        self._waiting: dict[str, asyncio.Future[Envelope]] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> "_CreditQueries":
        await ensure_topics(self.bootstrap, [REPLY_TOPIC], 1)
        self._consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                          fetch_max_wait_ms=10)
        tp = TopicPartition(REPLY_TOPIC, 0)
        self._consumer.assign([tp])
        await self._consumer.start()
        await self._consumer.seek_to_end(tp)
        await self._consumer.position(tp)  # resolve the offset now, before any request is sent
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            await self._consumer.stop()

    async def _read(self) -> None:
        assert self._consumer is not None
        async for msg in self._consumer:
            try:
                env = Envelope.from_bytes(msg.value)
            except ValueError:
                continue
            fut = self._waiting.pop(env.correlation_id or "", None)
            if fut is not None and not fut.done():
                fut.set_result(env)

    async def account(self, tenant_id: str, customer_id: str, bill_to_id: str) -> Message:
        correlation = f"demo-{secrets.token_hex(8)}"
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._waiting[correlation] = fut
        env = Envelope(tenant_id=tenant_id, livemode=False, correlation_id=correlation, reply_to=REPLY_TOPIC,
                       payload=GetCreditAccount(customer_id=customer_id))
        try:
            await self._producer.send_and_wait(topics.CREDIT_COMMANDS.name, env.to_bytes(), key=bill_to_id.encode())
            return (await asyncio.wait_for(fut, 5)).payload
        finally:
            self._waiting.pop(correlation, None)


class DemoLoader:
    def __init__(self, stack: Stack) -> None:
        assert stack.secrets is not None, "start the stack first"
        self.stack = stack
        self.store = stack.secrets
        self.state: dict[str, Any] = dict(self.store.get("demo") or {})

    async def load(self) -> dict[str, Any]:
        started = time.monotonic()
        ids: dict[str, str] = dict(self.state.get("customer_ids") or {})
        for c in (*MAIN.customers, *OTHER.customers):
            ids.setdefault(c.key, new_id(CUSTOMER))
        self.state["customer_ids"] = ids
        self.store.set("demo", self.state)

        async with aiohttp.ClientSession(self.stack.base_url, timeout=aiohttp.ClientTimeout(total=10)) as http:
            main, other = await self._tenant(http, "main", MAIN), await self._tenant(http, "other", OTHER)
            async with ErpPublisher(self.stack.bootstrap) as erp:
                for tenant, keys in ((MAIN, main), (OTHER, other)):
                    for record in tenant_records(tenant, ids):
                        await erp.publish(None, record, keys.tenant_id, livemode=False)
                log.info("demo master data published on the erp topics")
                async with _CreditQueries(self.stack.bootstrap, erp.producer) as credit:
                    available, *_ = await asyncio.gather(
                        self._credit_visible(credit, main, MAIN, ids),
                        self._credit_visible(credit, other, OTHER, ids),
                        self._gateway_visible(http, main, MAIN, ids),
                        self._gateway_visible(http, other, OTHER, ids))

        credentials = self._credentials(main, other, ids, available)
        write_private_json(self.credentials_path, credentials)
        log.info("demo data visible through the API in %.2f s", time.monotonic() - started)
        return credentials

    @property
    def credentials_path(self) -> Path:
        return self.stack.data_dir / "credentials.json"

    async def _tenant(self, http: aiohttp.ClientSession, slot: str, tenant: DemoTenant) -> TenantKeys:
        saved = (self.state.get("tenants") or {}).get(slot)
        if saved:
            keys = TenantKeys(**saved)
            # The gateway database is the truth: keys stored here but unknown there are made again.
            if await self._key_works(http, keys.secret_key) and await self._key_works(http, keys.publishable_key):
                return keys
            log.warning("stored demo keys for %s are not accepted by the gateway; creating a new tenant", tenant.name)
        keys = await create_tenant_with_keys(self.stack.dsns["gateway"], tenant.name, livemode=False)
        self.state.setdefault("tenants", {})[slot] = asdict(keys)
        self.store.set("demo", self.state)
        log.info("demo tenant %s created: %s", tenant.name, keys.tenant_id)
        return keys

    @staticmethod
    async def _key_works(http: aiohttp.ClientSession, key: str) -> bool:
        async with http.get("/v1/products", params={"limit": "1"}, headers={"Authorization": f"Bearer {key}"}) as r:
            return r.status != 401

    async def _gateway_visible(self, http: aiohttp.ClientSession, keys: TenantKeys, tenant: DemoTenant,
                               ids: dict[str, str]) -> None:
        auth = {"Authorization": f"Bearer {keys.secret_key}"}

        async def token_for(customer_id: str) -> None:
            async with http.post("/v1/shopper_tokens", json={"customer_id": customer_id}, headers=auth) as r:
                if r.status != 201:
                    raise NotYet(f"{r.status} {(await r.text())[:500]}")

        async def catalog() -> None:
            async with http.get("/v1/products", params={"limit": "100"}, headers=auth) as r:
                if r.status != 200:
                    raise NotYet(f"{r.status} {(await r.text())[:500]}")
                body = await r.json()
            missing = {p.sku for p in tenant.products} - {p.get("sku") for p in body.get("data", [])}
            if missing:
                raise NotYet(f"not listed yet: {', '.join(sorted(missing))}")

        await asyncio.gather(
            _poll(f"{tenant.name}: catalog on GET /v1/products", catalog),
            *(_poll(f"{tenant.name}: customer {c.name} on POST /v1/shopper_tokens", lambda i=ids[c.key]: token_for(i))
              for c in tenant.customers))

    async def _credit_visible(self, credit: _CreditQueries, keys: TenantKeys, tenant: DemoTenant,
                              ids: dict[str, str]) -> dict[str, int]:
        limits = {c.key: c.limit for c in tenant.customers}

        async def account(c: DemoCustomer) -> CreditAccountView:
            bill_to = c.bill_to or c.key
            reply = await credit.account(keys.tenant_id, ids[c.key], ids[bill_to])
            if isinstance(reply, CreditAccountView) and reply.bill_to_id == ids[bill_to] \
                    and reply.limit == limits[bill_to]:
                return reply
            raise NotYet(repr(reply))

        views = await asyncio.gather(*(_poll(f"{tenant.name}: credit account of {c.name}", lambda c=c: account(c))
                                       for c in tenant.customers))
        return {c.key: v.available for c, v in zip(tenant.customers, views)}

    def _credentials(self, main: TenantKeys, other: TenantKeys, ids: dict[str, str],
                     available: dict[str, int]) -> dict[str, Any]:
        return {
            "base_url": self.stack.base_url,
            "kafka_bootstrap": self.stack.bootstrap,  # where an ERP (or `harmon bench`) publishes master data
            "tenant_id": main.tenant_id,
            "livemode": False,
            "currency": DEFAULT_CURRENCY,
            "secret_key": main.secret_key,
            "publishable_key": main.publishable_key,
            "other_tenant": {"tenant_id": other.tenant_id, "secret_key": other.secret_key,
                             "customers": [{"id": ids[c.key]} for c in OTHER.customers]},
            "customers": [{"id": ids[c.key], "name": c.name, "terms": c.terms, "bill_to": ids[c.bill_to or c.key],
                           "available_credit": available[c.key]} for c in MAIN.customers],
            "products": [{"sku": p.sku, "base_uom": p.base_uom, "units": p.units,
                          "tax_category": p.tax_category.value} for p in MAIN.products],
        }


async def load_demo(stack: Stack) -> dict[str, Any]:
    """Create (or reuse) the demo tenants and keys, publish their master data, wait until the API
    shows it, and write `<data-dir>/credentials.json` (0600). Returns what was written."""
    return await DemoLoader(stack).load()
