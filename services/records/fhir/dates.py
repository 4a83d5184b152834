"""FHIR date/time text <-> protobuf Timestamp and Duration.

FHIR dateTime may be partial ("2024", "2024-03"); the contract stores the
first instant of that span (UTC). A dateTime with a time must carry a zone in
FHIR, so no local-time guessing is needed. FHIR `date` fields that the proto
keeps as strings never come here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

UCUM = "http://unitsofmeasure.org"

_DATE_TIME = re.compile(
    r"^(?P<year>\d{4})(-(?P<month>\d{2})(-(?P<day>\d{2})"
    r"(T(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(\.(?P<fraction>\d+))?"
    r"(?P<zone>Z|[+-]\d{2}:\d{2}))?)?)?\Z"
)

# UCUM time units with a fixed length, in seconds ("mo" and "a" vary).
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1, "min": 60, "h": 3600, "d": 86400, "wk": 604800}


def parse_date_time(text: str) -> Timestamp | None:
    """The first instant of a FHIR date, dateTime or instant; None if malformed."""
    match = _DATE_TIME.match(text)
    if match is None:
        return None
    parts = match.groupdict()
    zone = parts["zone"] or "Z"
    offset = timedelta(0)
    if zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        offset = sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    try:
        moment = datetime(
            int(parts["year"]),
            int(parts["month"] or 1),
            int(parts["day"] or 1),
            int(parts["hour"] or 0),
            int(parts["minute"] or 0),
            int(parts["second"] or 0),
            tzinfo=timezone(offset),
        ).astimezone(UTC)
    except (ValueError, OverflowError):  # e.g. Feb 30, a leap second, year 0 in UTC
        return None
    timestamp = Timestamp()
    timestamp.FromDatetime(moment)
    fraction = parts["fraction"] or ""
    timestamp.nanos = int(fraction[:9].ljust(9, "0")) if fraction else 0
    return timestamp


def format_date_time(timestamp: Timestamp) -> str:
    """A FHIR instant (valid as dateTime too), in UTC: "2024-03-01T08:00:00Z"."""
    return timestamp.ToJsonString()


def parse_duration(quantity: dict[str, Any]) -> Duration | None:
    """A FHIR Duration in a fixed-length UCUM unit as a Duration; None otherwise."""
    factor = _SECONDS_PER_UNIT.get(str(quantity.get("code", "")))
    value = quantity.get("value")
    if factor is None or not isinstance(value, int | float) or isinstance(value, bool):
        return None
    duration = Duration()
    duration.FromNanoseconds(round(value * factor * 1_000_000_000))
    return duration


def format_duration(duration: Duration) -> dict[str, Any]:
    """A FHIR Duration: whole minutes when exact, else seconds (UCUM coded)."""
    nanos = duration.ToNanoseconds()
    if nanos % 60_000_000_000 == 0:
        value: float = nanos // 60_000_000_000
        unit = "min"
    else:
        value = nanos / 1_000_000_000
        if value.is_integer():
            value = int(value)
        unit = "s"
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}
