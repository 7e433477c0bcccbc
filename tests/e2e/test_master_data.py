"""Master data from the ERP: a malformed record is dead-lettered with a reason and the stream goes on."""

import json

import pytest
from aiokafka import AIOKafkaConsumer

from libs.contracts import topics
from libs.contracts.erp import CreditLimitUpsert, CustomerUpsert, PriceUpsert, ProductUpsert
from libs.contracts.fields import MAX_AMOUNT
from libs.contracts.ids import new_id

from .conftest import erp_settled

pytestmark = pytest.mark.e2e


async def test_malformed_records_land_on_the_dead_letter_topic(stack, erp, shop, store, until):
    garbage_key = new_id("bad").encode()
    invalid_key = new_id("bad").encode()
    await erp.producer.send_and_wait(topics.ERP_PRODUCTS.name, b"{not json", key=garbage_key)
    invalid = {"tenant_id": shop.tenant_id, "livemode": False,
               "payload": {"type": "ProductUpsert", "sku": "X", "name": "x", "base_uom": "EA", "units": {"CASE": 0}}}
    await erp.producer.send_and_wait(topics.ERP_PRODUCTS.name, json.dumps(invalid).encode(), key=invalid_key)
    # the stream goes on: a good record after the bad ones is applied
    await erp.publish(None, ProductUpsert(sku="SUGAR-1KG", name="Sugar 1 kg", base_uom="EA"), shop.tenant_id)
    await erp_settled(stack.bootstrap)

    consumer = AIOKafkaConsumer(topics.ERP_PRODUCTS.dlt, bootstrap_servers=stack.bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: dict[bytes, dict] = {}
    try:
        async def both_found():
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for rec in records:
                    if rec.key in (garbage_key, invalid_key):
                        found[rec.key] = {k: v.decode() for k, v in rec.headers}
            return len(found) == 2
        await until(both_found, timeout=15, message="both bad records on erp.products.v1.dlt")
    finally:
        await consumer.stop()
    for key in (garbage_key, invalid_key):
        headers = found[key]
        assert headers["harmon-dlt-source-topic"] == topics.ERP_PRODUCTS.name
        assert "invalid message" in headers["harmon-dlt-reason"]
    assert "units" in found[invalid_key]["harmon-dlt-reason"]

    token = await store.token(shop.big)
    r = await store.call("GET", "/v1/products/SUGAR-1KG", token=token)
    assert r.status == 200 and r.body["sku"] == "SUGAR-1KG"


async def test_records_the_fields_refuse_go_to_the_dead_letter_topic_at_once(stack, erp, shop, store, until):
    """A NUL the database would refuse, or money past the 10**15 bound, never reaches a handler: the record
    is dead-lettered on its first read (attempts 1), not retried, and the records after it are applied."""
    # model_construct: built as a faulty ERP would send them, without our validation
    bad = {
        "sku": ProductUpsert.model_construct(sku="RICE\u00002KG", name="Rice 2 kg", base_uom="EA"),
        "name": ProductUpsert.model_construct(sku="RICE-2KG", name="Rice\u00002 kg", base_uom="EA"),
        "customer_id": CustomerUpsert.model_construct(customer_id="cus_A\u0000B", name="Shop"),
        "unit_amount": PriceUpsert.model_construct(price_id="oil-list", sku="OIL-1L", unit_amount=MAX_AMOUNT + 1),
        "limit": CreditLimitUpsert.model_construct(customer_id=shop.small, limit=MAX_AMOUNT + 1),
    }
    sent = {}
    for field, record in bad.items():
        env = await erp.publish(None, record, shop.tenant_id)
        sent[env.message_id] = field
    # the same keys go on: a price at the bound is fine
    await erp.publish(None, PriceUpsert(price_id="oil-list", sku="OIL-1L", unit_amount=MAX_AMOUNT), shop.tenant_id)
    await erp_settled(stack.bootstrap)

    dlts = sorted({t.dlt for t in (topics.ERP_PRODUCTS, topics.ERP_CUSTOMERS, topics.ERP_PRICES,
                                   topics.ERP_CREDIT_LIMITS)})
    consumer = AIOKafkaConsumer(*dlts, bootstrap_servers=stack.bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: dict[str, dict] = {}
    try:
        async def all_found():
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for rec in records:
                    try:
                        message_id = json.loads(rec.value).get("message_id")
                    except ValueError:  # other tests' garbage
                        continue
                    if message_id in sent:
                        found.setdefault(message_id, {k: v.decode() for k, v in rec.headers})
            return len(found) == len(sent)
        await until(all_found, timeout=15, message="every refused record on its topic's .dlt")
    finally:
        await consumer.stop()
    for message_id, field in sent.items():
        headers = found[message_id]
        assert headers["harmon-dlt-attempts"] == "1", (field, headers)
        assert "invalid message" in headers["harmon-dlt-reason"] and field in headers["harmon-dlt-reason"], headers

    token = await store.token(shop.big)
    oil = await store.call("GET", "/v1/products/OIL-1L", token=token)
    assert (oil.status, oil.body["unit_price"]) == (200, MAX_AMOUNT)
    assert (await store.call("GET", "/v1/products/RICE-2KG", token=token)).status == 404  # its record was refused
    # the corner shop's limit is still 5,000, not the refused 10**15 + 1
    small = await store.token(shop.small)
    cart = await store.cart_with(small, {"sku": "FLOUR-2KG", "quantity": 9})  # 5,400, zero-rated
    refused = await store.checkout(small, cart["id"], key=new_id("k"))
    assert (refused.status, refused.body.get("credit", {}).get("limit")) == (402, 5_000), refused.body
