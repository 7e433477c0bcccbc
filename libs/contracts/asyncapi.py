"""An AsyncAPI 3.0 document of every topic and payload, generated from the contracts (for ERP integrators)."""

from typing import Any, get_args

from . import topics
from .envelope import AnyMessage, Envelope

_REF = "#/components/schemas/{model}"
COMPATIBILITY = (
    "Every message is an Envelope (tenant_id, livemode, ids, times) around a typed payload, whose `type` "
    "names it. Version 1 changes only by adding optional fields and new message types: ignore a field you "
    "do not know, and skip a message type you do not know. Nothing is removed, renamed or retyped within v1. "
    "Records you publish on erp.*.v1 must not carry fields this document does not list: such a record is "
    "dead-lettered (a misspelt optional field would otherwise take its default)."
)


def _payload_types() -> dict[str, type]:
    union = get_args(AnyMessage)[0]
    return {cls.model_fields["type"].default: cls for cls in get_args(union)}


def asyncapi_document(version: str = "1") -> dict[str, Any]:
    """Channels = topics (with their `.dlt`), messages = the envelope around each payload type."""
    types = _payload_types()
    schemas: dict[str, Any] = {}
    for name, cls in types.items():
        schema = cls.model_json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    for name in types:  # after the loop: a payload nested in another (OrderView in OrderList) comes as a $def too
        # the discriminator: a payload without it is refused, although the field has a default in Python
        schemas[name]["required"] = ["type", *(r for r in schemas[name].get("required", []) if r != "type")]
    envelope = Envelope.model_json_schema(ref_template=_REF, mode="serialization")
    envelope.pop("$defs", None)
    envelope["properties"]["payload"] = {"description": "the typed payload; its `type` equals the envelope's"}
    schemas["Envelope"] = envelope

    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    for spec in topics.ALL:
        for name in spec.carries:
            messages[name] = {
                "name": name,
                "contentType": "application/json",
                "payload": {"allOf": [{"$ref": _REF.format(model="Envelope")},
                                      {"properties": {"payload": {"$ref": _REF.format(model=name)}}}]},
            }
        channel_id = spec.name.replace(".", "_")
        channels[channel_id] = {
            "address": spec.name,
            "description": f"Kafka key: {spec.key}. A message that cannot be handled goes to `{spec.dlt}`.",
            "messages": {n: {"$ref": f"#/components/messages/{n}"} for n in spec.carries},
        }
        operations[f"publish_{channel_id}"] = {"action": "send", "channel": {"$ref": f"#/channels/{channel_id}"}}
    channels["gateway_replies"] = {
        "address": topics.GATEWAY_REPLIES_PREFIX + "{instance}",
        "description": "replies to HTTP-driven commands, one topic per gateway instance, keyed by correlation id",
        "parameters": {"instance": {"description": "HARMON_INSTANCE_ID of the gateway"}},
    }
    return {
        "asyncapi": "3.0.0",
        "info": {"title": "Harmon Storefront topics", "version": version,
                 "description": COMPATIBILITY},
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }
