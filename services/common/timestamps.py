"""protobuf Timestamp <-> aware UTC datetime, the one conversion every servicer uses."""

from __future__ import annotations

from datetime import UTC, date, datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def from_timestamp(message: Message, field: str) -> datetime | None:
    """An optional Timestamp field as an aware UTC datetime, None when unset."""
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.ToDatetime(tzinfo=UTC)


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)
