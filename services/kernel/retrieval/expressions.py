"""Search filters -> Milvus filter expressions (the tenant is added by the index)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from services.kernel.retrieval.vector_index import quote


@dataclass
class FilterSpec:
    """The filters of a search, in the index's terms."""

    kinds: list[str] = field(default_factory=list)  # HACS resource types
    patient_ids: list[str] = field(default_factory=list)
    min_age: int | None = None
    max_age: int | None = None
    genders: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)  # FHIR tokens
    start_time: datetime | None = None
    end_time: datetime | None = None
    labels: dict[str, str] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)  # knowledge bases
    document_tags: list[str] = field(default_factory=list)


def years_before(today: date, years: int) -> int:
    try:
        day = today.replace(year=today.year - years)
    except ValueError:  # 29 February
        day = today.replace(year=today.year - years, day=28)
    return int(day.strftime("%Y%m%d"))


def code_key(token: str) -> str:
    """The index's form of a FHIR token: 'system|code' and '|code' as is, 'code' -> '*|code'."""
    return token if "|" in token else f"*|{token}"


def records_expression(spec: FilterSpec, *, today: date | None = None) -> str:
    today = today or datetime.now(UTC).date()
    parts: list[str] = []
    if spec.kinds:
        parts.append(f"kind in {json.dumps(spec.kinds)}")
    if spec.patient_ids:
        parts.append(f"patient_id in {json.dumps(spec.patient_ids)}")
    if spec.min_age is not None:
        parts.append(f"birth_ymd >= 0 and birth_ymd <= {years_before(today, spec.min_age)}")
    if spec.max_age is not None:
        parts.append(f"birth_ymd > {years_before(today, spec.max_age + 1)}")
    if spec.genders:
        parts.append(f"gender in {json.dumps(spec.genders)}")
    if spec.codes:
        parts.append(f"array_contains_any(codes, {json.dumps([code_key(c) for c in spec.codes])})")
    if spec.start_time is not None:
        parts.append(f"clinical_time >= {int(spec.start_time.timestamp())}")
    if spec.end_time is not None:
        parts.append(f"clinical_time < {int(spec.end_time.timestamp())}")
    for key, value in sorted(spec.labels.items()):
        parts.append(
            f"labels[{quote(key)}] == {quote(value)}" if value else f"exists labels[{quote(key)}]"
        )
    return " and ".join(f"({p})" for p in parts)


def knowledge_expression(spec: FilterSpec) -> str:
    parts: list[str] = []
    if spec.groups:
        parts.append(f"grp in {json.dumps(spec.groups)}")
    if spec.document_tags:
        parts.append(
            f"array_contains_all(codes, {json.dumps(['tag:' + t for t in spec.document_tags])})"
        )
    return " and ".join(f"({p})" for p in parts)
