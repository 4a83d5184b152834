"""Elements converted as a whole: primitives, dates, durations, notes, photos, statuses.

Each leaf kind has a reader (FHIR JSON -> proto field) and a writer (proto
field -> FHIR JSON or None when unset). When writing back what was read does
not reproduce the original (a partial date, an annotation with an author, a
`false` the proto cannot tell from unset), the walker keeps the original.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from services.records.fhir import dates, value_sets
from services.records.fhir.context import ImportContext
from services.records.fhir.fields import FieldRule, Kind

_T = FieldDescriptor
_INTEGERS = frozenset(
    {_T.TYPE_INT32, _T.TYPE_INT64, _T.TYPE_UINT32, _T.TYPE_UINT64, _T.TYPE_SINT32, _T.TYPE_SINT64}
)
_FLOATS = frozenset({_T.TYPE_DOUBLE, _T.TYPE_FLOAT})


def read(rule: FieldRule, value: Any, message: Message, path: str, ctx: ImportContext) -> None:
    """Store the FHIR `value` of the element at `path` into the rule's field."""
    field = rule.field
    items = value if field.is_repeated else [value]
    if not isinstance(items, list):
        raise ctx.error(path, f"expected a list, got {type(value).__name__}")
    converted = [_read_one(rule, item, message, path, ctx) for item in items]
    if rule.kind is Kind.ANNOTATION_TEXTS or rule.kind is Kind.ATTACHMENT_URLS:
        converted = [text for text in converted if text]
    if field.is_repeated:
        container = getattr(message, field.name)
        if field.message_type is None:
            container.extend(converted)
        else:
            for item in converted:
                container.add().CopyFrom(item)
    elif converted[0] is None:
        return
    elif field.message_type is not None:
        getattr(message, field.name).CopyFrom(converted[0])
    else:
        setattr(message, field.name, converted[0])


def _read_one(rule: FieldRule, item: Any, message: Message, path: str, ctx: ImportContext) -> Any:
    field = rule.field
    if rule.kind is Kind.TIMESTAMP:
        timestamp = dates.parse_date_time(item) if isinstance(item, str) else None
        if timestamp is None:
            raise ctx.error(path, f"{item!r} is not a FHIR dateTime")
        return timestamp
    if rule.kind is Kind.DURATION:
        return dates.parse_duration(item) if isinstance(item, dict) else None
    if rule.kind is Kind.ANNOTATION_TEXTS:
        return str(item.get("text", "")) if isinstance(item, dict) else ""
    if rule.kind is Kind.ATTACHMENT_URLS:
        return _attachment_url(item)
    if rule.kind is Kind.STATUS_CODE:
        item = _status_code(rule, item, path, ctx)
    return _scalar(field, item, message, path, ctx)


def _scalar(
    field: FieldDescriptor, item: Any, message: Message, path: str, ctx: ImportContext
) -> Any:
    if field.type == _T.TYPE_STRING:
        ok = isinstance(item, str)
    elif field.type == _T.TYPE_BOOL:
        ok = isinstance(item, bool)
    elif field.type in _INTEGERS:
        ok = isinstance(item, int) and not isinstance(item, bool)
        ok = ok and (item >= 0 or field.type not in (_T.TYPE_UINT32, _T.TYPE_UINT64))
    elif field.type in _FLOATS:
        ok = isinstance(item, int | float) and not isinstance(item, bool)
        item = float(item) if ok else item
    else:
        ok = False
    if not ok:
        raise ctx.error(path, f"{item!r} cannot be stored in {field.full_name}")
    if isinstance(item, str):
        problem = value_sets.violation(message.DESCRIPTOR.full_name, field.name, item)
        if problem:
            raise ctx.error(path, problem)
    return item


def _status_code(rule: FieldRule, concept: Any, path: str, ctx: ImportContext) -> str:
    codings = concept.get("coding", []) if isinstance(concept, dict) else []
    for coding in codings:
        if isinstance(coding, dict) and coding.get("system") == rule.code_system:
            return str(coding.get("code", ""))
    raise ctx.error(path, f"needs a coding from {rule.code_system} (this binding is required)")


def _attachment_url(attachment: Any) -> str:
    if not isinstance(attachment, dict):
        return ""
    if attachment.get("url"):
        return str(attachment["url"])
    if attachment.get("data"):
        content_type = attachment.get("contentType", "application/octet-stream")
        return f"data:{content_type};base64,{attachment['data']}"
    return ""


def write(rule: FieldRule, message: Message) -> Any:
    """The FHIR JSON of the rule's field, or None when the field is unset."""
    field = rule.field
    if field.is_repeated:
        values = [_write_one(rule, item) for item in getattr(message, field.name)]
        return values or None
    if field.has_presence:
        if not message.HasField(field.name):
            return None
    elif getattr(message, field.name) == field.default_value:
        return None
    return _write_one(rule, getattr(message, field.name))


def _write_one(rule: FieldRule, value: Any) -> Any:
    if rule.kind is Kind.TIMESTAMP:
        return dates.format_date_time(value)
    if rule.kind is Kind.DURATION:
        return dates.format_duration(value)
    if rule.kind is Kind.ANNOTATION_TEXTS:
        return {"text": value}
    if rule.kind is Kind.ATTACHMENT_URLS:
        return _attachment(value)
    if rule.kind is Kind.STATUS_CODE:
        return {"coding": [{"system": rule.code_system, "code": value}]}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _attachment(url: str) -> dict[str, str]:
    if url.startswith("data:") and ";base64," in url:
        header, _, data = url.partition(";base64,")
        return {"contentType": header.removeprefix("data:"), "data": data}
    return {"url": url}


def same_field(left: Message, right: Message, field: FieldDescriptor) -> bool:
    """True when both messages hold the same value (and presence) in `field`."""
    name = field.name
    if field.is_repeated:
        return list(getattr(left, name)) == list(getattr(right, name))
    if field.has_presence and left.HasField(name) != right.HasField(name):
        return False
    return bool(getattr(left, name) == getattr(right, name))
