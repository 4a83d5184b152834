"""FHIR JSON -> proto messages, driven by the message descriptors.

Every key of a FHIR object either maps to a field (see `fields`) or is kept
verbatim under its path for export; references are rewritten to resource
names as they are read.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from hacs.common.v1 import datatypes_pb2

from services.records.fhir import leaves, references
from services.records.fhir.context import ImportContext, JsonObject, join
from services.records.fhir.extensions import REFERENCE_TYPE_URL
from services.records.fhir.fields import FieldRule, Kind, fhir_fields, grouped_fields


def read_message(obj: JsonObject, message: Message, path: str, ctx: ImportContext) -> None:
    """Fill `message` from the FHIR object found at `path` of the resource."""
    rules = fhir_fields(message.DESCRIPTOR)
    groups = grouped_fields(message.DESCRIPTOR)
    for key, value in obj.items():
        child = join(path, key)
        if key in groups and isinstance(value, dict):
            for group_key, group_value in value.items():
                rule = groups[key].get(group_key)
                grandchild = join(child, group_key)
                if rule is None:
                    keep(grandchild, group_value, ctx)
                else:
                    read_field(rule, group_value, message, grandchild, ctx)
        elif key in rules:
            read_field(rules[key], value, message, child, ctx)
        else:
            keep(child, value, ctx)


def read_field(
    rule: FieldRule, value: Any, message: Message, path: str, ctx: ImportContext
) -> None:
    if rule.kind.is_leaf:
        leaves.read(rule, value, message, path, ctx)
        if leaves.write(rule, message) != value:
            keep(path, value, ctx)  # the contract cannot say it exactly
        return
    name = rule.field.name
    if not rule.field.is_repeated:
        if not isinstance(value, dict):
            raise ctx.error(path, f"expected an object, got {type(value).__name__}")
        target = getattr(message, name)
        target.SetInParent()
        _read_object(rule, value, target, path, ctx)
        return
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ctx.error(path, "expected a list of objects")
    container = getattr(message, name)
    for index, item in enumerate(value):
        _read_object(rule, item, container.add(), f"{path}[{index}]", ctx)


def _read_object(
    rule: FieldRule, obj: JsonObject, target: Any, path: str, ctx: ImportContext
) -> None:
    if rule.kind is Kind.MESSAGE:
        read_message(obj, target, path, ctx)
    elif rule.kind is Kind.REFERENCE:
        read_reference(obj, target, path, ctx)
    else:  # WRAPPED_REFERENCE: {"location": Reference, ...siblings kept}
        for key, value in obj.items():
            if key == "location" and isinstance(value, dict):
                read_reference(value, target, join(path, key), ctx)
            else:
                keep(join(path, key), value, ctx)


def read_reference(
    obj: JsonObject, message: datatypes_pb2.Reference, path: str, ctx: ImportContext
) -> None:
    """A FHIR Reference whose `reference` becomes a HACS resource name."""
    rest = dict(obj)
    reference = rest.pop("reference", None)
    hacs_type = _take_reference_type(rest)
    read_message(rest, message, path, ctx)
    if reference is None:
        return
    if not isinstance(reference, str):
        raise ctx.error(join(path, "reference"), "must be a string")
    if reference.startswith("#"):  # a contained resource, kept in extensions
        message.reference = reference
        return
    name = ctx.resolve_reference(reference) or references.direct_name(
        reference, ctx.tenant_id, hacs_type
    )
    if name is None:
        raise ctx.error(
            join(path, "reference"),
            f"reference {reference!r} does not resolve to an entry of this bundle "
            "or a HACS resource type",
        )
    message.reference = name
    if not message.type or (hacs_type and message.type == "Basic"):
        message.type = references.type_of_name(name)


def _take_reference_type(obj: JsonObject) -> str:
    """Remove and return the HACS type extension of a reference to a Basic."""
    extensions = obj.get("extension")
    if not isinstance(extensions, list):
        return ""
    hacs_type = ""
    remaining = []
    for extension in extensions:
        if isinstance(extension, dict) and extension.get("url") == REFERENCE_TYPE_URL:
            hacs_type = str(extension.get("valueCode", ""))
        else:
            remaining.append(extension)
    if remaining:
        obj["extension"] = remaining
    else:
        obj.pop("extension")
    return hacs_type


def keep(path: str, value: Any, ctx: ImportContext) -> None:
    """Keep an element the contract does not model, its references made names."""

    def to_name(reference: str) -> str | None:
        return ctx.resolve_reference(reference) or references.direct_name(reference, ctx.tenant_id)

    ctx.keep(path, references.rewrite_reference_strings(value, to_name))
