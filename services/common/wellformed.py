"""What every request must be, whatever its type: values the platform can store and compute.

Checked on every request message before its own validator (validation.py):

* a Timestamp lies in 0001-01-01 .. 9999-12-31 with nanos in [0, 10^9) — what
  protobuf, Python and PostgreSQL can all represent;
* a Duration lies within ±10,000 years with nanos of the same sign;
* a float or double is finite: NaN and infinity have no JSON (FHIR export),
  compare false with everything, and poison sums (scores, weights);
* a string holds no NUL character: PostgreSQL text cannot store one, and C
  parsers (Milvus expressions, SQLite's) stop at it;
* an enum holds one of its declared values: proto3 lets any number through, and
  code that maps values to names (or stores them) knows only the declared ones.

Each violation names the field by its path (`records[2].observation.value_quantity.value`,
`labels["x"]`), as the per-request validators do.
"""

from __future__ import annotations

import math
from functools import cache

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MIN_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_DURATION_SECONDS = 315_576_000_000  # 10,000 years
NANOS = 1_000_000_000

_FLOATS = (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT)
_CHECKED_SCALARS = (*_FLOATS, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_ENUM)


def problems(message: Message) -> list[tuple[str, str]]:
    """(field path, what is wrong) for every value of `message` the platform cannot take."""
    found: list[tuple[str, str]] = []
    _walk(message, "", found)
    return found


def _walk(message: Message, path: str, found: list[tuple[str, str]]) -> None:
    descriptor = message.DESCRIPTOR
    kind = descriptor.full_name
    if kind == "google.protobuf.Timestamp":
        _timestamp(message, path, found)
        return
    if kind == "google.protobuf.Duration":
        _duration(message, path, found)
        return
    checked = _checked_fields(descriptor)
    if not checked:
        return
    for field, value in message.ListFields():
        if field.name not in checked:
            continue
        where = f"{path}.{field.name}" if path else field.name
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                _one(value_field, item, f"{where}[{key!r}]", found)
                if isinstance(key, str) and "\x00" in key:
                    found.append((f"{where}[{key!r}]", "a key must not contain a NUL character"))
        elif field.is_repeated:
            for i, item in enumerate(value):
                _one(field, item, f"{where}[{i}]", found)
        else:
            _one(field, value, where, found)


def _one(field: FieldDescriptor, value: object, where: str, found: list[tuple[str, str]]) -> None:
    if field.message_type is not None:
        assert isinstance(value, Message)
        _walk(value, where, found)
    elif field.type in _FLOATS:
        assert isinstance(value, float)
        if not math.isfinite(value):
            found.append((where, f"{value} is not a number the platform can store"))
    elif field.type == FieldDescriptor.TYPE_STRING:
        assert isinstance(value, str)
        if "\x00" in value:
            found.append((where, "must not contain a NUL character"))
    elif field.type == FieldDescriptor.TYPE_ENUM:
        enum = field.enum_type
        assert enum is not None and isinstance(value, int)
        if value not in enum.values_by_number:
            found.append((where, f"{value} is not a value of {enum.full_name}"))


def _timestamp(message: Message, path: str, found: list[tuple[str, str]]) -> None:
    seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
    if not MIN_SECONDS <= seconds <= MAX_SECONDS or not 0 <= nanos < NANOS:
        found.append((path, "a time must lie between 0001-01-01 and 9999-12-31 (UTC)"))


def _duration(message: Message, path: str, found: list[tuple[str, str]]) -> None:
    seconds, nanos = message.seconds, message.nanos  # type: ignore[attr-defined]
    if (
        abs(seconds) > MAX_DURATION_SECONDS
        or abs(nanos) >= NANOS
        or (seconds > 0 and nanos < 0)
        or (seconds < 0 and nanos > 0)
    ):
        found.append((path, "a duration must lie within ±10,000 years, nanos of the same sign"))


@cache
def _checked_fields(descriptor: Descriptor) -> frozenset[str]:
    """The fields of a message type that can hold something to check (cached per type)."""
    return frozenset(
        f.name
        for f in descriptor.fields
        if f.message_type is not None or f.type in _CHECKED_SCALARS
    )
