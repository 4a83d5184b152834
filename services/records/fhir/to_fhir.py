"""Proto messages -> FHIR JSON, the inverse of `to_proto`, plus kept elements.

At each object the elements kept at import are put back: unmodelled ones as
they were, and lossy leaves (partial dates, full annotations) only while the
record still says the same thing, so an edit made in HACS always wins.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message
from hacs.common.v1 import datatypes_pb2

from services.kernel.records import resource_types
from services.records.fhir import leaves, references
from services.records.fhir.context import ExportContext, ImportContext, JsonObject, join
from services.records.fhir.errors import FhirMappingError
from services.records.fhir.extensions import REFERENCE_TYPE_URL
from services.records.fhir.fields import FieldRule, Kind, fhir_fields, grouped_fields


def write_message(message: Message, path: str, ctx: ExportContext) -> JsonObject:
    """The FHIR object for `message`, found at `path` of the resource."""
    out: JsonObject = {}
    for key, rule in fhir_fields(message.DESCRIPTOR).items():
        value = write_field(rule, message, join(path, key), ctx)
        if value is not None:
            out[key] = value
    for key, rules in grouped_fields(message.DESCRIPTOR).items():
        group: JsonObject = {}
        for child, rule in rules.items():
            value = write_field(rule, message, join(path, f"{key}.{child}"), ctx)
            if value is not None:
                group[child] = value
        restore_kept(group, join(path, key), None, ctx)
        if group:
            out[key] = group
    restore_kept(out, path, message, ctx)
    return out


def write_field(rule: FieldRule, message: Message, path: str, ctx: ExportContext) -> Any:
    if rule.kind.is_leaf:
        return leaves.write(rule, message)
    name = rule.field.name
    if not rule.field.is_repeated:
        if not message.HasField(name):
            return None
        return _write_object(rule, getattr(message, name), path, ctx) or None
    objects = [
        _write_object(rule, item, f"{path}[{index}]", ctx)
        for index, item in enumerate(getattr(message, name))
    ]
    return [obj for obj in objects if obj] or None


def _write_object(rule: FieldRule, item: Any, path: str, ctx: ExportContext) -> JsonObject:
    if rule.kind is Kind.MESSAGE:
        return write_message(item, path, ctx)
    if rule.kind is Kind.REFERENCE:
        return write_reference(item, path, ctx)
    wrapper: JsonObject = {}
    reference = write_reference(item, join(path, "location"), ctx)
    if reference:
        wrapper["location"] = reference
    restore_kept(wrapper, path, None, ctx)
    return wrapper


def write_reference(message: datatypes_pb2.Reference, path: str, ctx: ExportContext) -> JsonObject:
    """A FHIR Reference: the resource name becomes "Type/id"."""
    out = write_message(message, path, ctx)  # identifier, display, kept elements
    out.pop("reference", None)
    out.pop("type", None)
    if message.reference:
        out["reference"], info = references.fhir_reference(message.reference)
        if info is None and not message.reference.startswith("#"):
            ctx.warn(
                f"{ctx.location(join(path, 'reference'))}: {message.reference!r} is not a "
                "HACS resource name; exported unchanged"
            )
        if info is not None and not info.fhir_native:
            hacs_type = {"url": REFERENCE_TYPE_URL, "valueCode": info.name}
            out["extension"] = [*out.get("extension", []), hacs_type]
    if message.type:
        target = resource_types.BY_NAME.get(message.type)
        out["type"] = target.fhir_type if target else message.type
    return out


def restore_kept(out: JsonObject, path: str, message: Message | None, ctx: ExportContext) -> None:
    """Put back what import kept for the object at `path`."""
    rules = fhir_fields(message.DESCRIPTOR) if message is not None else {}
    for key, original in ctx.take(path).items():
        original = references.rewrite_reference_strings(original, _relative_reference)
        rule = rules.get(key)
        if rule is None or not rule.kind.is_leaf:
            merge(out, key, original)
        elif message is not None and _still_says(rule, original, message):
            out[key] = original
        else:
            ctx.warn(
                f"{ctx.location(join(path, key))} was changed in HACS after import; "
                "exported from the record, not as originally imported"
            )


def merge(out: JsonObject, key: str, value: Any) -> None:
    """Add a kept element; kept extensions go before ones HACS writes."""
    current = out.get(key)
    if isinstance(current, list) and isinstance(value, list):
        out[key] = [*value, *current]
    elif current is None:
        out[key] = value


def _still_says(rule: FieldRule, original: Any, message: Message) -> bool:
    """True when reading `original` again gives what the record holds now."""
    scratch = type(message)()
    probe = ImportContext("", "", lambda _: None)
    try:
        leaves.read(rule, original, scratch, "", probe)
    except FhirMappingError:
        return False
    return leaves.same_field(scratch, message, rule.field)


def _relative_reference(name: str) -> str | None:
    reference, info = references.fhir_reference(name)
    return reference if info is not None else None
