"""FHIR R4 resource JSON <-> hacs.records.v1.Record.

One generic, descriptor-driven walk does the typed resource (see `fields`
for the few places the contract differs from FHIR); this module adds the
envelope: id and meta, identifier, narrative, HACS extensions (labels,
agent_meta, HACS-only fields), and `Record.extensions`, which holds every
FHIR element the contract does not model, keyed by its path in the resource
("extension", "component[0].valueSampledData"), so export can put it back.

Validation uses fhir.resources' FHIR R4B (4.3.0) models: the library no
longer ships R4 (4.0.1), and R4B differs from R4 only in resources HACS does
not map (see `validation`). Required value sets are checked on top.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message
from hacs.records.v1 import record_pb2

from services.kernel.records import resource_types
from services.kernel.records.resource_types import ResourceTypeInfo
from services.records.fhir import basic, dates, validation
from services.records.fhir.context import ExportContext, ImportContext, JsonObject
from services.records.fhir.errors import FhirMappingError
from services.records.fhir.extensions import (
    RESOURCE_TYPE_SYSTEM,
    add_text_fallbacks,
    drop_text_fallbacks,
    hacs_extensions,
    read_hacs_extensions,
)
from services.records.fhir.narrative import div_text, text_div
from services.records.fhir.to_fhir import write_message
from services.records.fhir.to_proto import keep, read_message

__all__ = [
    "FhirMappingError",
    "fhir_id",
    "fhir_to_record",
    "record_to_fhir",
    "resource_type_of",
]

Record = record_pb2.Record

# Meta elements the server owns: a record's version and write time.
_SERVER_META = ("versionId", "lastUpdated")


def fhir_id(resource: JsonObject) -> str:
    """The resource's FHIR id, or ""."""
    value = resource.get("id")
    return value if isinstance(value, str) else ""


def resource_type_of(resource: JsonObject) -> ResourceTypeInfo | None:
    """The HACS type a FHIR resource maps to (a HACS Basic to its HACS type); else None."""
    fhir_type = resource.get("resourceType")
    if fhir_type == "Basic":
        return basic.hacs_type(resource)
    return resource_types.BY_FHIR_TYPE.get(fhir_type) if isinstance(fhir_type, str) else None


def fhir_to_record(
    resource: JsonObject, *, tenant_id: str, resolve_reference: Callable[[str], str | None]
) -> Record:
    """Validate a FHIR R4 resource and map it to a Record (with `name` empty).

    References become resource names: "Type/id" of a HACS type directly,
    anything else through `resolve_reference` (bundle fullUrls), which
    returns a name or None. Raises FhirMappingError naming the element.
    """
    if not isinstance(resource, dict):
        raise FhirMappingError("resource", "the entry has no resource object")
    fhir_type = resource.get("resourceType")
    if not isinstance(fhir_type, str) or not fhir_type:
        raise FhirMappingError("resourceType", "the resource has no resourceType")
    info = resource_type_of(resource)
    if info is None:
        raise _unsupported(fhir_type)
    validation.validate(resource)

    record = Record(resource_type=record_pb2.ResourceType.ValueType(info.enum))
    typed: Message = getattr(record, info.field)
    typed.SetInParent()
    ctx = ImportContext(fhir_type, tenant_id, resolve_reference)
    body = _read_envelope(resource, record, typed, ctx)
    if info.fhir_native:
        read_message(body, typed, "", ctx)
    else:
        basic.read_basic(body, typed, info, ctx)
    if ctx.kept:
        record.extensions.update(ctx.kept)
    return record


def _unsupported(fhir_type: str) -> FhirMappingError:
    if fhir_type == "Basic":
        return FhirMappingError(
            "Basic.code",
            "a Basic resource is imported only when its code is a HACS resource type "
            f"(system {RESOURCE_TYPE_SYSTEM}: MemoryBlock, Evidence or AgentMessage)",
        )
    supported = ", ".join(sorted(resource_types.BY_FHIR_TYPE))
    return FhirMappingError(
        f"{fhir_type}.resourceType",
        f"resource type {fhir_type!r} is not supported; HACS accepts {supported} "
        "(and Basic for its own types)",
    )


def _read_envelope(
    resource: JsonObject, record: Record, typed: Message, ctx: ImportContext
) -> JsonObject:
    """Read the envelope (meta, identifier, text, HACS extensions); return the rest."""
    body = {k: v for k, v in resource.items() if k not in ("resourceType", "id")}
    meta = body.pop("meta", None)
    if isinstance(meta, dict):
        kept_meta = {k: v for k, v in meta.items() if k not in _SERVER_META}
        if kept_meta:
            keep("meta", kept_meta, ctx)
    identifiers = body.pop("identifier", [])
    for index, identifier in enumerate(identifiers if isinstance(identifiers, list) else []):
        read_message(identifier, record.identifier.add(), f"identifier[{index}]", ctx)
    text = body.pop("text", None)
    if isinstance(text, dict):
        record.text = div_text(str(text.get("div", "")))
        if _narrative(record.text) != text:
            ctx.keep("text", text)
    extension = body.pop("extension", None)
    if isinstance(extension, list):
        rest = read_hacs_extensions(extension, record, typed, ctx)
        if rest:  # kept by the body's reader (a Basic's payload is among them)
            body["extension"] = rest
    drop_text_fallbacks(typed, body)
    return body


def record_to_fhir(record: Record) -> tuple[JsonObject, list[str]]:
    """FHIR R4 JSON for a record, and warnings for whatever could not be expressed."""
    info = resource_types.of_record(record)
    if info is None:
        raise FhirMappingError("Record.resource", "the record holds no typed resource")
    typed: Message = getattr(record, info.field)
    ctx = ExportContext.from_kept(info.fhir_type, _kept(record))
    root = ctx.kept.setdefault("", {})
    kept_meta = root.pop("meta", None)
    kept_text = root.pop("text", None)
    for key in [k for k in root if k not in validation.element_names(info.fhir_type)]:
        del root[key]  # written by a HACS client, not FHIR: exporting it would be invalid
        ctx.warn(f"extensions[{key!r}] is not an element of FHIR {info.fhir_type}; not exported")

    out: JsonObject = {"resourceType": info.fhir_type}
    if record.name:
        out["id"] = record.name.rsplit("/", 1)[-1]
    meta = dict(kept_meta) if isinstance(kept_meta, dict) else {}
    if record.version:
        meta["versionId"] = str(record.version)
    if record.HasField("update_time"):
        meta["lastUpdated"] = dates.format_date_time(record.update_time)
    if meta:
        out["meta"] = meta
    narrative = _export_narrative(record.text, kept_text)
    if narrative:
        out["text"] = narrative
    if info.fhir_native:
        body = write_message(typed, "", ctx)
        add_text_fallbacks(typed, body)
    else:
        body = basic.write_basic(typed, info, ctx)
    extension = [*body.pop("extension", []), *hacs_extensions(record, typed)]
    if extension:
        out["extension"] = extension
    if record.identifier:
        identifiers = (
            write_message(item, f"identifier[{index}]", ctx)
            for index, item in enumerate(record.identifier)
        )
        out["identifier"] = [item for item in identifiers if item]
    out.update(body)
    ctx.report_leftovers()
    return out, ctx.warnings


def _narrative(text: str) -> JsonObject:
    return {"status": "generated", "div": text_div(text)}


def _export_narrative(text: str, kept: Any) -> JsonObject | None:
    """The imported narrative while it still says `text`, else one generated from it."""
    if isinstance(kept, dict) and div_text(str(kept.get("div", ""))) == text:
        return kept
    return _narrative(text) if text else None


def _kept(record: Record) -> JsonObject:
    kept = json_format.MessageToDict(record.extensions)
    return {key: _whole_numbers(value) for key, value in kept.items()}


def _whole_numbers(value: Any) -> Any:
    """Struct stores every number as a double; FHIR integers must come back as ints."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, list):
        return [_whole_numbers(item) for item in value]
    if isinstance(value, dict):
        return {key: _whole_numbers(item) for key, item in value.items()}
    return value
