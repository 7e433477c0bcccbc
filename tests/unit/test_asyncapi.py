"""The AsyncAPI document is generated from the contracts, and the contracts' topic lists match what services read."""

import importlib
import json
from types import SimpleNamespace

import pytest

from libs.contracts import topics
from libs.contracts.asyncapi import _payload_types, asyncapi_document
from libs.stack.cli import build_parser

SERVICES = ("cart", "pricing", "credit", "orders", "notifier")


def test_every_topic_and_payload_is_documented():
    doc = asyncapi_document()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {spec.name for spec in topics.ALL} <= addresses
    for spec in topics.ALL:
        for name in spec.carries:
            assert name in doc["components"]["schemas"], name
            assert doc["components"]["messages"][name]["payload"]["allOf"][1]["properties"]["payload"]["$ref"].endswith(name)
    # nested models are resolvable
    refs = [ref for schema in doc["components"]["schemas"].values() for ref in _refs(schema)]
    assert all(r.split("/")[-1] in doc["components"]["schemas"] for r in refs)


def test_topics_name_only_real_payload_types():
    known = set(_payload_types())
    for spec in topics.ALL:
        assert set(spec.carries) <= known, spec.name


@pytest.mark.parametrize("service", SERVICES)
def test_what_a_service_reads_is_what_its_topics_declare(service):
    ctx = SimpleNamespace(routes={})
    importlib.import_module(f"services.{service}.entrypoint").register(ctx)
    declared = {spec.name: set(spec.carries) for spec in topics.ALL}
    for topic, handlers in ctx.routes.items():
        assert set(handlers) <= declared[topic], f"{service} reads {set(handlers) - declared[topic]} on {topic}"


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


async def test_harmon_asyncapi_writes_the_document(tmp_path):
    args = build_parser().parse_args(["asyncapi", "-o", str(tmp_path / "asyncapi.json")])
    assert await args.run(args) == 0
    assert json.loads((tmp_path / "asyncapi.json").read_text()) == json.loads(json.dumps(asyncapi_document()))


def _from_the_erp(name: str) -> bool:
    """Records the ERP publishes: master data (…Upsert) and lifecycle facts (…Recorded, and their lines)."""
    return name.endswith(("Upsert", "Recorded")) or name == "FulfilmentLine"


def test_every_payload_requires_its_type_and_only_erp_records_refuse_extra_fields():
    doc = asyncapi_document()
    schemas = doc["components"]["schemas"]
    for name in _payload_types():
        assert schemas[name]["required"][0] == "type", name  # the discriminator: without it nothing parses
        assert schemas[name]["properties"]["type"]["const"] == name
        # readers built from the document must accept a field v1 adds later; we refuse one only from the ERP
        closed = schemas[name].get("additionalProperties") is False
        assert closed == _from_the_erp(name), name
    assert all(s.get("additionalProperties") is not False for n, s in schemas.items() if not _from_the_erp(n))
    assert "ignore a field you do not know" in doc["info"]["description"]
