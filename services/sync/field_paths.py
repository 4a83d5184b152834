"""Field paths of a Record ("observation.value_quantity.value", "labels.triage").

Edits address fields by path, in proto field names, relative to
hacs.records.v1.Record. A path is checked against the descriptor once
(`resolve`), then read and written on the record's proto3 JSON form (a dict),
which turns a patch value (a google.protobuf.Value) into a field value with
the standard JSON mapping and its type checks.

Rules: repeated fields and well-known types (Timestamp, Duration, ...) are
leaves, replaced whole; map fields and Structs (`labels`, `extensions`) take
keys as further segments; output-only envelope fields cannot be edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor
from hacs.records.v1 import record_pb2

from services.kernel.records.envelope import ENVELOPE_MUTABLE, OUTPUT_ONLY

_STRUCT = "google.protobuf.Struct"
_LEAF_MESSAGES = frozenset(
    {
        "google.protobuf.Timestamp",
        "google.protobuf.Duration",
        "google.protobuf.Value",
        "google.protobuf.ListValue",
        "google.protobuf.FieldMask",
        "google.protobuf.Any",
        "google.protobuf.StringValue",
        "google.protobuf.BoolValue",
        "google.protobuf.DoubleValue",
        "google.protobuf.FloatValue",
        "google.protobuf.Int64Value",
        "google.protobuf.Int32Value",
        "google.protobuf.UInt64Value",
        "google.protobuf.UInt32Value",
        "google.protobuf.BytesValue",
    }
)
RESOURCE_FIELDS = frozenset(
    f.name for f in record_pb2.Record.DESCRIPTOR.oneofs_by_name["resource"].fields
)
MAX_PATH_LENGTH = 300


class PathError(ValueError):
    """A path that names no editable field; the message says why."""


@dataclass(frozen=True)
class FieldPath:
    text: str
    segments: tuple[str, ...]
    # The path a field mask names when writing it (a map or Struct is written whole).
    mask: str
    # Per segment, the other members of the oneof that segment belongs to (cleared on set).
    oneof_siblings: tuple[tuple[str, ...], ...]

    @property
    def top(self) -> str:
        return self.segments[0]

    def covers(self, other: str) -> bool:
        """This path is `other` or one of its ancestors."""
        return other == self.text or other.startswith(self.text + ".")


def resolve(text: str) -> FieldPath:
    """Check `text` against Record's descriptor; PathError says what is wrong."""
    if not text or len(text) > MAX_PATH_LENGTH:
        raise PathError(f"a field path is 1-{MAX_PATH_LENGTH} characters")
    segments = tuple(text.split("."))
    if any(not s for s in segments):
        raise PathError(f"{text!r} has an empty segment")
    top = segments[0]
    if top in OUTPUT_ONLY:
        raise PathError(f"{top!r} is output only")
    if top not in ENVELOPE_MUTABLE and top not in RESOURCE_FIELDS:
        raise PathError(f"{top!r} is not an editable field of Record")
    descriptor: Descriptor = record_pb2.Record.DESCRIPTOR
    siblings: list[tuple[str, ...]] = []
    for depth, segment in enumerate(segments):
        field = descriptor.fields_by_name.get(segment)
        if field is None:
            raise PathError(f"{segment!r} is not a field of {descriptor.name}")
        oneof = field.containing_oneof
        siblings.append(tuple(f.name for f in oneof.fields if f is not field) if oneof else ())
        rest = segments[depth + 1 :]
        prefix = ".".join(segments[: depth + 1])
        message = field.message_type
        if message is not None and message.GetOptions().map_entry:
            if len(rest) > 1:
                raise PathError(f"{prefix!r} is a map: name one key after it, nothing deeper")
            return FieldPath(text, segments, prefix, _pad(siblings, segments))
        if field.is_repeated:
            if rest:
                raise PathError(f"{prefix!r} is a list; lists are replaced whole")
            return FieldPath(text, segments, prefix, _pad(siblings, segments))
        if message is None or message.full_name in _LEAF_MESSAGES:
            if rest:
                raise PathError(f"{prefix!r} has no fields below it")
            return FieldPath(text, segments, prefix, _pad(siblings, segments))
        if message.full_name == _STRUCT:
            return FieldPath(text, segments, prefix, _pad(siblings, segments))
        descriptor = message
    return FieldPath(text, segments, text, tuple(siblings))


def _pad(siblings: list[tuple[str, ...]], segments: tuple[str, ...]) -> tuple[tuple[str, ...], ...]:
    return tuple(siblings) + ((),) * (len(segments) - len(siblings))


def to_json(record: record_pb2.Record) -> dict[str, Any]:
    return json_format.MessageToDict(record, preserving_proto_field_name=True)


def from_json(document: dict[str, Any]) -> record_pb2.Record:
    """Parse a record back; json_format.ParseError when a value does not fit its field."""
    return json_format.ParseDict(document, record_pb2.Record())


def get_value(document: dict[str, Any], path: FieldPath) -> Any:
    """The JSON value at `path`, or None when unset."""
    node: Any = document
    for segment in path.segments:
        if not isinstance(node, dict) or segment not in node:
            return None
        node = node[segment]
    return node


def set_value(document: dict[str, Any], path: FieldPath, value: Any) -> None:
    """Set (or with None, remove) the value at `path`, clearing oneof siblings on the way."""
    if value is None:
        remove_value(document, path)
        return
    node = document
    for segment, siblings in zip(path.segments[:-1], path.oneof_siblings, strict=False):
        for sibling in siblings:
            node.pop(sibling, None)
        child = node.get(segment)
        if not isinstance(child, dict):
            child = node[segment] = {}
        node = child
    for sibling in path.oneof_siblings[len(path.segments) - 1]:
        node.pop(sibling, None)
    node[path.segments[-1]] = value


def remove_value(document: dict[str, Any], path: FieldPath) -> None:
    node: Any = document
    for segment in path.segments[:-1]:
        node = node.get(segment) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path.segments[-1], None)
