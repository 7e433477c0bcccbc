"""Whether a new AsyncAPI document (`asyncapi.asyncapi_document`) still keeps v1's promise to an old one.

v1 may only grow: new optional fields, new message types, new topics. Anything else breaks someone
built from the old document — a reader of our events, an ERP publishing records, a service instance
not yet upgraded: a topic, message, schema or field removed or renamed, a field's type or rules
changed (a bound, a pattern, an enum's values, a default), a field made required or no longer
required, a new required field. Descriptions and titles may change freely.

Named schemas are compared by name, each on its own, so a `$ref` is only checked to point at the
same name (which keeps the comparison free of recursion through nested models).
"""
from __future__ import annotations

from typing import Any

_FREE = {"title", "description", "examples"}  # words for people: not part of the contract
_REF_PREFIX = "#/components/schemas/"


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Every change from `old` to `new` that breaks v1, in words; empty when `new` only adds."""
    problems: list[str] = []
    old_channels = {c["address"]: c for c in old.get("channels", {}).values()}
    new_channels = {c["address"]: c for c in new.get("channels", {}).values()}
    for address, channel in old_channels.items():
        if address not in new_channels:
            problems.append(f"topic {address}: removed or renamed")
            continue
        gone = set(channel.get("messages", {})) - set(new_channels[address].get("messages", {}))
        problems += [f"topic {address}: no longer carries {name}" for name in sorted(gone)]

    old_parts, new_parts = old.get("components", {}), new.get("components", {})
    for kind in ("messages", "schemas"):
        for name, schema in old_parts.get(kind, {}).items():
            if name not in new_parts.get(kind, {}):
                problems.append(f"{name}: removed or renamed")
            else:
                _compare(schema, new_parts[kind][name], name, problems)
    return problems


def _compare(old: Any, new: Any, path: str, problems: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        if "$ref" in old or "$ref" in new:
            if old.get("$ref") != new.get("$ref"):
                problems.append(f"{path}: was {_show(old)}, now {_show(new)}")
            return
        _compare_object(old, new, path, problems)
        return
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            _compare(a, b, f"{path}[{i}]", problems)
        return
    if old != new:
        problems.append(f"{path}: was {_show(old)}, now {_show(new)}")


def _compare_object(old: dict[str, Any], new: dict[str, Any], path: str, problems: list[str]) -> None:
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name, schema in old_props.items():
        where = f"{path}.{name}"
        if name not in new_props:
            problems.append(f"{where}: field removed or renamed")
            continue
        _compare(schema, new_props[name], where, problems)
        if name in old_required and name not in new_required:
            problems.append(f"{where}: no longer required (readers count on it)")
        elif name in new_required and name not in old_required:
            problems.append(f"{where}: now required (older senders leave it out)")
    for name in sorted(new_required - set(old_props)):
        problems.append(f"{path}.{name}: new required field (older senders do not send it); give it a default")
    if "enum" in old and "enum" in new:
        added, removed = _values(new["enum"]) - _values(old["enum"]), _values(old["enum"]) - _values(new["enum"])
        if added or removed:
            problems.append(f"{path}: values changed ({_change(added, removed)}); readers and senders "
                            "of v1 know only the old set")
    for key in sorted((set(old) | set(new)) - _FREE - {"properties", "required", "enum"}):
        where = path if key in ("anyOf", "oneOf", "allOf", "items") else f"{path} ({key})"
        if key not in new:
            problems.append(f"{where}: {key} {_show(old[key])} dropped")
        elif key not in old:
            problems.append(f"{where}: {key} {_show(new[key])} added")
        else:
            _compare(old[key], new[key], where, problems)


def _values(values: list[Any]) -> set[str]:
    return {repr(v) for v in values}


def _change(added: set[str], removed: set[str]) -> str:
    return ", ".join([*(f"+{v}" for v in sorted(added)), *(f"-{v}" for v in sorted(removed))])


def _show(node: Any) -> str:
    if isinstance(node, dict):
        if "$ref" in node:
            return str(node["$ref"]).removeprefix(_REF_PREFIX)
        if "type" in node and len(set(node) - _FREE) == 1:
            return repr(node["type"])
        return "a schema of " + ", ".join(sorted(set(node) - _FREE))
    if isinstance(node, list):
        return "[" + ", ".join(_show(x) for x in node) + "]"
    return repr(node)
