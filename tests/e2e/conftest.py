"""E2E fixtures: a shop (catalog, customers, limits) published as the ERP would, and a storefront client."""

import asyncio
import importlib
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from libs.contracts import topics
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.ids import CUSTOMER, new_id
from libs.contracts.money import TaxCategory
from libs.runtime.db import make_engine, make_sessionmaker
from libs.stack.demo import TenantKeys
from services.gateway import admin

from .storefront import Storefront
from tests.conftest import connect_unscoped

ERP_TOPICS = {t.name for t in (topics.ERP_CUSTOMERS, topics.ERP_PRODUCTS, topics.ERP_PRICES, topics.ERP_CREDIT_LIMITS)}


def erp_readers() -> dict[str, set[str]]:
    """Consumer group (one per service) → the erp topics it reads, from the services' own routing."""
    registrars = {svc: importlib.import_module(f"services.{svc}.entrypoint").register
                  for svc in ("cart", "pricing", "credit", "orders", "notifier")}
    registrars["gateway"] = importlib.import_module("services.gateway.customers").register
    readers = {}
    for group, register in registrars.items():
        ctx = SimpleNamespace(routes={})  # subscribe() only records routes
        register(ctx)
        readers[group] = set(ctx.routes) & ERP_TOPICS
    return readers


async def erp_settled(bootstrap: str, timeout: float = 20.0) -> None:
    """Wait until every service's consumer group has committed past the end of every erp.* topic it reads.

    Master data is eventually consistent; tests wait for the exact condition instead of sleeping.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await probe.start()
    try:
        await probe.topics()
        parts = {t: [TopicPartition(t, p) for p in probe.partitions_for_topic(t) or ()] for t in ERP_TOPICS}
        readers = erp_readers()
        deadline = time.monotonic() + timeout
        while True:
            ends = await probe.end_offsets([tp for tps in parts.values() for tp in tps])
            lagging = []
            for group, read in readers.items():
                wanted = [tp for t in read for tp in parts[t] if ends[tp] > 0]
                committed = await admin.list_consumer_group_offsets(group, partitions=wanted)
                for tp in wanted:
                    meta = committed.get(tp)
                    if meta is None or meta.offset < ends[tp]:
                        lagging.append((group, tp.topic, tp.partition, meta.offset if meta else None, ends[tp]))
            if not lagging:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"ERP records not consumed within {timeout} s: {lagging[:5]}")
            await asyncio.sleep(0.05)
    finally:
        await probe.stop()
        await admin.close()


@dataclass
class Shop:
    tenant_id: str
    secret_key: str
    publishable_key: str
    big: str = field(default_factory=lambda: new_id(CUSTOMER))      # net_30, plenty of room, contract price
    small: str = field(default_factory=lambda: new_id(CUSTOMER))    # cod, limit 5,000
    parent: str = field(default_factory=lambda: new_id(CUSTOMER))   # bill-to of the two buyers
    buyer_a: str = field(default_factory=lambda: new_id(CUSTOMER))
    buyer_b: str = field(default_factory=lambda: new_id(CUSTOMER))
    tight: str = field(default_factory=lambda: new_id(CUSTOMER))    # room for exactly five single-oil carts
    inactive: str = field(default_factory=lambda: new_id(CUSTOMER))


# One bottle of oil: 899 + GCT 134.85 → 135 = 1,034; five of those fill a limit of 5,170.
OIL_CART_TOTAL = 1_034
FIVE_OIL_CARTS = 5 * OIL_CART_TOTAL


async def publish_shop(erp, shop: Shop, livemode: bool = False) -> None:
    t = shop.tenant_id
    customers = [
        CustomerUpsert(customer_id=shop.big, name="Big Shop Ltd", terms="net_30"),
        CustomerUpsert(customer_id=shop.small, name="Corner Shop", terms="cod"),
        CustomerUpsert(customer_id=shop.parent, name="Island Group HQ", terms="net_30"),
        CustomerUpsert(customer_id=shop.buyer_a, name="Island Group Kingston", terms="net_30", bill_to_id=shop.parent),
        CustomerUpsert(customer_id=shop.buyer_b, name="Island Group MoBay", terms="net_30", bill_to_id=shop.parent),
        CustomerUpsert(customer_id=shop.tight, name="Tight Ltd", terms="cod"),
        CustomerUpsert(customer_id=shop.inactive, name="Closed Ltd", active=False),
    ]
    records = [
        *customers,
        ProductUpsert(sku="RICE-1KG", name="Rice 1 kg", base_uom="EA", units={"CASE": 12}),
        ProductUpsert(sku="OIL-1L", name="Cooking oil 1 L", base_uom="EA"),
        ProductUpsert(sku="FLOUR-2KG", name="Flour 2 kg", base_uom="EA", tax_category=TaxCategory.ZERO_RATED),
        PriceUpsert(price_id="rice-list", sku="RICE-1KG", unit_amount=1_250),
        PriceUpsert(price_id=f"rice-{shop.big}", sku="RICE-1KG", unit_amount=1_100, customer_id=shop.big),
        PriceUpsert(price_id="oil-list", sku="OIL-1L", unit_amount=899),
        PriceUpsert(price_id="flour-list", sku="FLOUR-2KG", unit_amount=600),
        CreditLimitUpsert(customer_id=shop.big, limit=250_000_00),
        CreditLimitUpsert(customer_id=shop.small, limit=5_000),
        CreditLimitUpsert(customer_id=shop.parent, limit=FIVE_OIL_CARTS),
        CreditLimitUpsert(customer_id=shop.tight, limit=FIVE_OIL_CARTS),
    ]
    for record in records:
        await erp.publish(None, record, t, livemode)


async def issue_key(stack, tenant_id: str, livemode: bool, kind: str, *, scopes: tuple[str, ...] | None = None,
                    revoked: bool = False) -> str:
    """A full API key made with the gateway's admin functions (as `harmon keys create` does); optionally revoked."""
    engine = make_engine(stack.dsns["gateway"], pool_size=1)
    try:
        async with make_sessionmaker(engine)() as session:
            issued = await admin.create_api_key(session, tenant_id, livemode, kind, scopes=scopes)
            if revoked:
                assert await admin.revoke_api_key(session, issued.id)
    finally:
        await engine.dispose()
    return issued.key


def shop_of(keys: TenantKeys) -> Shop:
    return Shop(tenant_id=keys.tenant_id, secret_key=keys.secret_key, publishable_key=keys.publishable_key)


@dataclass
class Shops:
    """One tenant's test shop, the same tenant's live shop (other customers), and another tenant's test shop.

    `only_sku` is a product of the test shop alone, so a read of it from elsewhere must find nothing."""

    test: Shop
    live: Shop
    other: Shop
    only_sku: str


async def publish_shops(stack, erp, new_tenant) -> Shops:
    first, other = await new_tenant(), await new_tenant()
    live_secret = await issue_key(stack, first.tenant_id, True, "secret")
    live_publishable = await issue_key(stack, first.tenant_id, True, "publishable")
    shops = Shops(test=shop_of(first), live=Shop(first.tenant_id, live_secret, live_publishable), other=shop_of(other),
                  only_sku=f"ONLY-{new_id('sku')[-10:]}")
    await publish_shop(erp, shops.test)
    await publish_shop(erp, shops.live, livemode=True)
    await publish_shop(erp, shops.other)
    await erp.publish(None, ProductUpsert(sku=shops.only_sku, name="Only in the test shop", base_uom="EA"),
                      first.tenant_id)
    await erp.publish(None, PriceUpsert(price_id="only-list", sku=shops.only_sku, unit_amount=500), first.tenant_id)
    await erp_settled(stack.bootstrap)
    return shops


@pytest_asyncio.fixture(loop_scope="session")
async def shop(stack, erp, new_tenant) -> Shop:
    keys = await new_tenant()
    s = Shop(tenant_id=keys.tenant_id, secret_key=keys.secret_key, publishable_key=keys.publishable_key)
    await publish_shop(erp, s)
    await erp_settled(stack.bootstrap)
    return s


@pytest.fixture(scope="session")
def db(stack):
    """`await db("cart", "SELECT …", *args)`: rows of one service's own database, to check what was written."""

    async def fetch(service: str, query: str, *args) -> list[asyncpg.Record]:
        conn = await connect_unscoped(stack.dsns[service])
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return fetch


@pytest_asyncio.fixture(loop_scope="session")
async def store(http, shop) -> Storefront:
    return Storefront(http, "", shop.secret_key)
