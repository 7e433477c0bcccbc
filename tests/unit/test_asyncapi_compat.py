"""v1 only grows: `harmon asyncapi` against the committed docs/asyncapi.v1.json, and the diff logic itself."""

import copy
import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from libs.contracts.asyncapi import asyncapi_document
from libs.contracts.base import Message
from libs.contracts.compat import breaking_changes
from libs.stack.cli import build_parser

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.v1.json"
REFRESH = "harmon asyncapi -o docs/asyncapi.v1.json"


def current() -> dict:
    return json.loads(json.dumps(asyncapi_document()))  # as written: tuples become lists


def test_this_version_keeps_the_v1_contract():
    breaks = breaking_changes(json.loads(COMMITTED.read_text()), current())
    assert not breaks, (
        "these changes break v1 for a consumer not yet upgraded, or an ERP built from docs/asyncapi.v1.json:\n  "
        + "\n  ".join(breaks) + "\nwithin v1 add only optional fields (with a default) and new message types; "
        "anything else is a new topic version (docs/topics.md, 'Changing a contract')")


def test_the_committed_document_is_this_version():
    # compatible additions are recorded, so the next change is checked against them too
    assert json.loads(COMMITTED.read_text()) == current(), (
        f"docs/asyncapi.v1.json is not what this version generates; refresh it: {REFRESH} (it refuses a "
        "breaking change) and commit it")


# --- the diff logic ------------------------------------------------------------------------------

BASE = current()


def changed(edit) -> list[str]:
    new = copy.deepcopy(BASE)
    edit(new["components"]["schemas"], new)
    return breaking_changes(BASE, new)


def test_the_same_document_has_no_break():
    assert breaking_changes(BASE, copy.deepcopy(BASE)) == []


def test_a_removed_field_breaks():
    def edit(s, _):
        del s["PriceUpsert"]["properties"]["min_quantity"]
    assert changed(edit) == ["PriceUpsert.min_quantity: field removed or renamed"]


def test_a_renamed_field_breaks():
    def edit(s, _):
        props = s["OrderView"]["properties"]
        props["buyer_id"] = props.pop("customer_id")
        s["OrderView"]["required"] = ["buyer_id" if r == "customer_id" else r for r in s["OrderView"]["required"]]
    breaks = changed(edit)
    assert "OrderView.customer_id: field removed or renamed" in breaks
    assert any(b.startswith("OrderView.buyer_id: new required field") for b in breaks)


def test_a_renamed_optional_field_breaks_too():
    def edit(s, _):
        props = s["PlaceOrder"]["properties"]
        props["purchase_order"] = props.pop("po_number")
    assert changed(edit) == ["PlaceOrder.po_number: field removed or renamed"]


def test_a_type_change_breaks():
    def edit(s, _):
        s["CreditLimitUpsert"]["properties"]["limit"] = {"type": "string"}
    breaks = changed(edit)
    assert "CreditLimitUpsert.limit (type): was 'integer', now 'string'" in breaks


def test_a_type_change_in_a_nested_model_breaks():
    def edit(s, _):
        s["OrderLine"]["properties"]["tax"]["type"] = "number"
    assert changed(edit) == ["OrderLine.tax (type): was 'integer', now 'number'"]


def test_a_field_pointing_at_another_model_breaks():
    def edit(s, _):
        s["OrderConfirmed"]["properties"]["order"] = {"$ref": "#/components/schemas/CartView"}
    assert changed(edit) == ["OrderConfirmed.order: was OrderView, now CartView"]


def test_a_new_required_field_breaks():
    def edit(s, _):
        s["Failure"]["properties"]["severity"] = {"type": "string"}
        s["Failure"]["required"].append("severity")
    assert changed(edit) == ["Failure.severity: new required field (older senders do not send it); give it a default"]


def test_an_optional_field_made_required_breaks():
    def edit(s, _):
        s["PlaceOrder"]["required"].append("notes")
    assert changed(edit) == ["PlaceOrder.notes: now required (older senders leave it out)"]


def test_a_required_field_made_optional_breaks():
    def edit(s, _):
        s["OrderView"]["required"].remove("total")
    assert changed(edit) == ["OrderView.total: no longer required (readers count on it)"]


def test_a_tighter_or_looser_rule_breaks():
    def tighter(s, _):
        s["CustomerUpsert"]["properties"]["name"]["maxLength"] = 100
    def looser(s, _):
        del s["CustomerUpsert"]["properties"]["name"]["pattern"]
    assert changed(tighter) == ["CustomerUpsert.name (maxLength): was 200, now 100"]
    assert [b.split(":")[0] for b in changed(looser)] == ["CustomerUpsert.name (pattern)"]


def test_a_changed_default_breaks():
    def edit(s, _):
        s["CustomerUpsert"]["properties"]["terms"]["default"] = "net_30"
    assert changed(edit) == ["CustomerUpsert.terms (default): was 'cod', now 'net_30'"]


def test_new_enum_values_break():
    def edit(s, _):
        s["TaxCategory"]["enum"].append("luxury")
    assert changed(edit) == ["TaxCategory: values changed (+'luxury'); readers and senders of v1 know only the old set"]


def test_a_removed_or_renamed_message_or_topic_breaks():
    def message(s, doc):  # renamed: the message and its payload schema
        doc["components"]["messages"]["OrderPlaced"] = doc["components"]["messages"].pop("OrderConfirmed")
        s["OrderPlaced"] = s.pop("OrderConfirmed")
    def topic(_, doc):
        doc["channels"]["orders_events_v1"]["address"] = "orders.events.v2"
    def carried(_, doc):
        doc["channels"]["credit_events_v1"]["messages"].pop("CreditReleased")
    assert changed(message) == ["OrderConfirmed: removed or renamed", "OrderConfirmed: removed or renamed"]
    assert changed(topic) == ["topic orders.events.v1: removed or renamed"]
    assert changed(carried) == ["topic credit.events.v1: no longer carries CreditReleased"]


def test_a_new_optional_field_passes():
    def edit(s, _):
        s["OrderView"]["properties"]["delivery_date"] = {"anyOf": [{"format": "date", "type": "string"},
                                                                  {"type": "null"}], "default": None}
        s["OrderLine"]["properties"]["lot"] = {"type": "string", "default": ""}
    assert changed(edit) == []


def test_new_messages_topics_and_descriptions_pass():
    def edit(s, doc):
        s["OrderShipped"] = {"type": "object", "properties": {"type": {"const": "OrderShipped"}}, "required": ["type"]}
        doc["components"]["messages"]["OrderShipped"] = {"name": "OrderShipped", "payload": {}}
        doc["channels"]["orders_events_v1"]["messages"]["OrderShipped"] = {"$ref": "#/components/messages/OrderShipped"}
        doc["channels"]["shipping_events_v1"] = {"address": "shipping.events.v1", "messages": {}}
        s["OrderView"]["description"] = "an order, now with better words"
        s["OrderView"]["properties"]["total"]["title"] = "Grand total"
    assert changed(edit) == []


class _V1(Message):
    type: Literal["Thing"] = "Thing"
    sku: str
    quantity: int = Field(ge=1)


class _V2Optional(_V1):
    note: str | None = None


class _V2Required(_V1):
    note: str


class _V2Retyped(Message):
    type: Literal["Thing"] = "Thing"
    sku: str
    quantity: str


@pytest.mark.parametrize("v2, ok", [(_V2Optional, True), (_V2Required, False), (_V2Retyped, False)])
def test_real_models_grown_and_broken(v2, ok):
    # what pydantic writes for a model and its next version, as asyncapi_document() embeds it
    def doc(model):
        return {"components": {"schemas": {"Thing": model.model_json_schema(mode="serialization")}}}
    breaks = breaking_changes(doc(_V1), doc(v2))
    assert (breaks == []) is ok, breaks


# --- `harmon asyncapi -o` keeps a committed document from being overwritten by a break ---------

async def test_refreshing_refuses_a_break_unless_told(tmp_path, capsys):
    path = tmp_path / "asyncapi.v1.json"
    older = copy.deepcopy(BASE)
    older["components"]["schemas"]["OrderView"]["properties"]["warehouse"] = {"type": "string"}  # "we removed it"
    path.write_text(json.dumps(older))
    args = build_parser().parse_args(["asyncapi", "-o", str(path)])
    assert await args.run(args) == 1
    assert "OrderView.warehouse: field removed or renamed" in capsys.readouterr().err
    assert json.loads(path.read_text()) == older  # kept
    args = build_parser().parse_args(["asyncapi", "-o", str(path), "--allow-breaking"])
    assert await args.run(args) == 0
    assert json.loads(path.read_text()) == BASE


async def test_refreshing_writes_compatible_additions(tmp_path):
    path = tmp_path / "asyncapi.v1.json"
    older = copy.deepcopy(BASE)
    del older["components"]["schemas"]["CartView"]["properties"]["order_id"]  # as if this version added it
    path.write_text(json.dumps(older))
    args = build_parser().parse_args(["asyncapi", "-o", str(path)])
    assert await args.run(args) == 0
    assert json.loads(path.read_text()) == BASE
