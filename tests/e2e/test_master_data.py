"""Master data from the ERP: a malformed record is dead-lettered with a reason and the stream goes on."""

import json

import pytest
from aiokafka import AIOKafkaConsumer

from libs.contracts import topics
from libs.contracts.erp import ProductUpsert
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
