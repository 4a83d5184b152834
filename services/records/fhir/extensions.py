"""HACS data in FHIR: extension URLs and the envelope fields they carry.

FHIR has no place for a record's labels, the AI provenance (`agent_meta`)
or the few HACS-only fields of FHIR-native types (Patient.full_name...), so
export writes them as extensions under one base URL and import reads them
back into the record instead of keeping them as opaque extensions.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hacs.records.v1 import record_pb2

from services.records.fhir.context import ImportContext, JsonObject
from services.records.fhir.fields import TEXT_FALLBACKS, hacs_only_fields

BASE = "https://hacs.health/fhir/StructureDefinition/"
LABELS_URL = BASE + "labels"
AGENT_META_URL = BASE + "agent-meta"
# Basic.extension holding a HACS-only resource as its proto JSON.
RESOURCE_URL = BASE + "resource"
# Reference.extension naming the HACS type behind a "Basic/{id}" reference.
REFERENCE_TYPE_URL = BASE + "reference-resource-type"
RESOURCE_TYPE_SYSTEM = "https://hacs.health/fhir/CodeSystem/resource-type"

_T = FieldDescriptor


def proto_json(message: Message) -> str:
    """Compact proto JSON with the HACS (proto) field names."""
    as_dict = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return json.dumps(as_dict, separators=(",", ":"), sort_keys=True)


def field_url(message: str, field: str) -> str:
    """e.g. ".../patient-full-name" for Patient.full_name."""
    kebab = re.sub(r"(?<!^)(?=[A-Z])", "-", message).lower()
    return f"{BASE}{kebab}-{field.replace('_', '-')}"


def _hacs_only_fields(typed: Message) -> dict[str, FieldDescriptor]:
    message = typed.DESCRIPTOR.name
    return {field_url(message, field.name): field for field in hacs_only_fields(typed.DESCRIPTOR)}


def hacs_extensions(record: record_pb2.Record, typed: Message | None) -> list[JsonObject]:
    """The extensions carrying the record's labels, agent_meta and HACS-only fields."""
    out: list[JsonObject] = []
    if record.labels:
        labels = [
            {"url": key, "valueString": value} for key, value in sorted(record.labels.items())
        ]
        out.append({"url": LABELS_URL, "extension": labels})
    if record.HasField("agent_meta"):
        out.append({"url": AGENT_META_URL, "valueString": proto_json(record.agent_meta)})
    if typed is not None:
        for url, field in _hacs_only_fields(typed).items():
            value = _field_value(typed, field)
            if value is not None:
                out.append({"url": url, **value})
    return out


def _field_value(typed: Message, field: FieldDescriptor) -> JsonObject | None:
    if field.has_presence and not typed.HasField(field.name):
        return None
    value = getattr(typed, field.name)
    if field.message_type is not None:  # google.protobuf.Struct
        return {"valueString": proto_json(value)}
    if not value:
        return None
    if field.type == _T.TYPE_BOOL:
        return {"valueBoolean": value}
    if field.type == _T.TYPE_STRING:
        return {"valueString": value}
    return {"valueInteger": value}


def read_hacs_extensions(
    items: list[Any], record: record_pb2.Record, typed: Message, ctx: ImportContext
) -> list[Any]:
    """Read HACS extensions into the record; return the other extensions."""
    fields = _hacs_only_fields(typed)
    rest: list[Any] = []
    for index, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else None
        path = f"extension[{index}]"
        if url == LABELS_URL:
            _read_labels(item, record, path, ctx)
        elif url == AGENT_META_URL:
            _parse_json(item, f"{path}.valueString", record.agent_meta, ctx)
        elif url in fields:
            _read_field(item, typed, fields[url], path, ctx)
        else:
            rest.append(item)
    return rest


def _read_labels(
    item: JsonObject, record: record_pb2.Record, path: str, ctx: ImportContext
) -> None:
    for index, label in enumerate(item.get("extension", [])):
        key = label.get("url") if isinstance(label, dict) else None
        value = label.get("valueString") if isinstance(label, dict) else None
        if not isinstance(key, str) or not isinstance(value, str):
            raise ctx.error(f"{path}.extension[{index}]", "a label needs a url and a valueString")
        record.labels[key] = value


def _read_field(
    item: JsonObject, typed: Message, field: FieldDescriptor, path: str, ctx: ImportContext
) -> None:
    if field.message_type is not None:
        _parse_json(item, f"{path}.valueString", getattr(typed, field.name), ctx)
        return
    value_key, expected = {
        _T.TYPE_BOOL: ("valueBoolean", bool),
        _T.TYPE_STRING: ("valueString", str),
    }.get(field.type, ("valueInteger", int))
    value = item.get(value_key)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ctx.error(path, f"the HACS {field.name} extension needs a {value_key}")
    setattr(typed, field.name, value)


def _parse_json(item: JsonObject, path: str, target: Message, ctx: ImportContext) -> None:
    text = item.get("valueString")
    try:
        json_format.Parse(text if isinstance(text, str) else "", target)
    except json_format.ParseError as error:
        raise ctx.error(path, f"is not {target.DESCRIPTOR.name} JSON: {error}") from None


def add_text_fallbacks(typed: Message, body: JsonObject) -> None:
    """Fill a FHIR-required element HACS left empty from its HACS-only text field."""
    for (message, field), key in TEXT_FALLBACKS.items():
        text = getattr(typed, field) if typed.DESCRIPTOR.full_name == message else ""
        if text and not any(k.startswith(key.removesuffix("CodeableConcept")) for k in body):
            body[key] = {"text": text}


def drop_text_fallbacks(typed: Message, body: JsonObject) -> None:
    """Undo `add_text_fallbacks` on import, so the text is not stored twice."""
    for (message, field), key in TEXT_FALLBACKS.items():
        text = getattr(typed, field) if typed.DESCRIPTOR.full_name == message else ""
        if text and body.get(key) == {"text": text}:
            del body[key]
