"""HACS-only resource types (MemoryBlock, Evidence, AgentMessage) as FHIR Basic.

FHIR has no such resources, so export writes a `Basic` whose code names the
HACS type and whose HACS extension holds the resource as proto JSON; import
recognises that shape and reads it back. Resource names inside the payload
become tenant-free ("Patient/p-1", "actors/a-1") so a bundle can move between
tenants, and are made names of the importing tenant on the way in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from services.kernel.records import resource_types
from services.kernel.records.resource_types import ResourceTypeInfo
from services.records.fhir import references
from services.records.fhir.context import ExportContext, ImportContext, JsonObject
from services.records.fhir.extensions import RESOURCE_TYPE_SYSTEM, RESOURCE_URL, proto_json
from services.records.fhir.to_fhir import restore_kept
from services.records.fhir.to_proto import keep

_R = "hacs.records.v1."

# String fields of HACS-only types that hold resource (or actor) names.
NAME_FIELDS = frozenset(
    {
        (_R + "Evidence", "linked_resources"),
        (_R + "MemoryBlock", "related_memories"),
        (_R + "MemoryBlock", "agent"),
        (_R + "MemoryBlock", "patient"),
        (_R + "MemoryBlock", "participants"),
        (_R + "MemoryBlock", "superseded_by"),
        (_R + "MemorySource", "memory"),
        (_R + "AgentMessage", "in_reply_to"),
        ("hacs.common.v1.Reference", "reference"),
        ("hacs.common.v1.ActorRef", "name"),
    }
)

_TENANT_NAME = re.compile(r"^tenants/(?P<tenant>[^/]+)/(?P<rest>.+)\Z")
_TYPED_ID = re.compile(rf"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>{references.FHIR_ID})\Z")
_RELATIVE_NAME = re.compile(r"^[a-z][A-Za-z]*/[^/]+(/[^/]+)*\Z")


def hacs_type(resource: JsonObject) -> ResourceTypeInfo | None:
    """The HACS-only type a Basic stands for, from its HACS code; else None."""
    code = resource.get("code")
    codings = code.get("coding", []) if isinstance(code, dict) else []
    for coding in codings:
        if isinstance(coding, dict) and coding.get("system") == RESOURCE_TYPE_SYSTEM:
            info = resource_types.BY_NAME.get(str(coding.get("code")))
            if info is not None and not info.fhir_native:
                return info
    return None


def write_basic(typed: Message, info: ResourceTypeInfo, ctx: ExportContext) -> JsonObject:
    """The Basic-specific elements: code, subject (a memory's patient) and the payload."""
    payload = type(typed)()
    payload.CopyFrom(typed)
    _rewrite_names(payload, _portable_name)
    out: JsonObject = {
        "extension": [{"url": RESOURCE_URL, "valueString": proto_json(payload)}],
        "code": {
            "coding": [{"system": RESOURCE_TYPE_SYSTEM, "code": info.name, "display": info.name}]
        },
    }
    patient = getattr(typed, info.patient_field, "") if info.patient_field else ""
    if isinstance(patient, str) and references.parse_name(patient):
        out["subject"] = {"reference": references.fhir_reference(patient)[0], "type": "Patient"}
    restore_kept(out, "", None, ctx)
    return out


def read_basic(
    body: JsonObject, typed: Message, info: ResourceTypeInfo, ctx: ImportContext
) -> None:
    """Read the payload into `typed`; keep any other Basic element."""
    payload_found = False
    for key, value in body.items():
        if key in ("code", "subject"):  # derived from the payload on export
            continue
        if key != "extension" or not isinstance(value, list):
            keep(key, value, ctx)
            continue
        rest = []
        for index, extension in enumerate(value):
            if isinstance(extension, dict) and extension.get("url") == RESOURCE_URL:
                _parse_payload(extension, typed, f"extension[{index}].valueString", ctx)
                payload_found = True
            else:
                rest.append(extension)
        if rest:
            keep("extension", rest, ctx)
    if not payload_found:
        raise ctx.error(
            "extension",
            f"a HACS {info.name} exported as Basic carries its content in the extension "
            f"{RESOURCE_URL}; it is missing",
        )


def _parse_payload(extension: JsonObject, typed: Message, path: str, ctx: ImportContext) -> None:
    text = extension.get("valueString")
    try:
        json_format.Parse(text if isinstance(text, str) else "", typed)
    except json_format.ParseError as error:
        raise ctx.error(path, f"is not {typed.DESCRIPTOR.name} JSON: {error}") from None

    def tenant_name(value: str) -> str:
        return _tenant_name(value, ctx, path)

    _rewrite_names(typed, tenant_name)


def _rewrite_names(message: Message, rewrite: Callable[[str], str]) -> None:
    descriptor = message.DESCRIPTOR
    for field in descriptor.fields:
        value: Any = getattr(message, field.name)
        if field.message_type is not None:
            if field.message_type.full_name.startswith("google.protobuf."):
                continue
            items = list(value) if field.is_repeated else [value]
            for item in items:
                _rewrite_names(item, rewrite)
        elif (descriptor.full_name, field.name) in NAME_FIELDS:
            if field.is_repeated:
                value[:] = [rewrite(item) for item in value]
            elif value:
                setattr(message, field.name, rewrite(value))


def _portable_name(name: str) -> str:
    """A name without its tenant: "tenants/t/patients/p-1" -> "Patient/p-1"."""
    _, info = references.fhir_reference(name)
    if info is not None:
        return f"{info.name}/{name.rsplit('/', 1)[-1]}"
    match = _TENANT_NAME.match(name)
    return match["rest"] if match else name


def _tenant_name(value: str, ctx: ImportContext, path: str) -> str:
    """The inverse of `_portable_name` for the importing tenant."""
    typed_id = _TYPED_ID.match(value)
    if typed_id and typed_id["type"] in resource_types.BY_NAME:
        info = resource_types.BY_NAME[typed_id["type"]]
        return references.record_name(ctx.tenant_id, info, typed_id["id"])
    tenant_name = _TENANT_NAME.match(value)
    if tenant_name:
        if tenant_name["tenant"] != ctx.tenant_id:
            raise ctx.error(path, f"{value!r} names a resource of another tenant")
        return value
    if _RELATIVE_NAME.match(value):
        return f"tenants/{ctx.tenant_id}/{value}"
    if value.startswith("urn:"):
        resolved = ctx.resolve_reference(value)
        if resolved is None:
            raise ctx.error(
                path,
                f"reference {value!r} does not resolve to an entry of this bundle "
                "or a HACS resource type",
            )
        return resolved
    return value  # free text (e.g. a participant described in words)
