"""Search filters as SQL over the lexical store's docs table (values always bound)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

from services.search.expressions import FilterSpec, code_key, years_before


def sql_filters(
    spec: FilterSpec, kind: str, today: date | None = None, *, scalars: bool = True
) -> tuple[str, list[Any]]:
    """The FilterSpec as SQL over `docs AS d` (values are always bound parameters).

    With scalars=False only the list-valued filters (codes, labels, document tags):
    the others are evaluated over the index's slots (slot_filters.py).
    """
    today = today or datetime.now(UTC).date()
    parts: list[str] = []
    params: list[Any] = []
    if kind == "knowledge":
        if spec.groups and scalars:
            _any_of(parts, params, "d.grp", spec.groups)
        if spec.document_tags:
            for tag in spec.document_tags:
                parts.append("EXISTS (SELECT 1 FROM json_each(d.codes) WHERE value = ?)")
                params.append(f"tag:{tag}")
        return "".join(f" AND {p}" for p in parts), params
    if scalars:
        _scalar_filters(spec, today, parts, params)
    if spec.codes:
        parts.append(
            "EXISTS (SELECT 1 FROM json_each(d.codes) AS c "
            "WHERE c.value IN (SELECT value FROM json_each(?)))"
        )
        params.append(json.dumps([code_key(c) for c in spec.codes]))
    for key, value in sorted(spec.labels.items()):
        if value:
            parts.append("json_extract(d.labels, ?) = ?")
            params += [f'$."{key}"', value]
        else:
            parts.append("json_type(d.labels, ?) IS NOT NULL")
            params.append(f'$."{key}"')
    return "".join(f" AND {p}" for p in parts), params


def _any_of(parts: list[str], params: list[Any], column: str, values: Sequence[Any]) -> None:
    parts.append(f"{column} IN (SELECT value FROM json_each(?))")
    params.append(json.dumps(list(values)))


def _scalar_filters(spec: FilterSpec, today: date, parts: list[str], params: list[Any]) -> None:
    if spec.kinds:
        _any_of(parts, params, "d.type", spec.kinds)
    if spec.patient_ids:
        _any_of(parts, params, "d.patient_id", spec.patient_ids)
    if spec.min_age is not None:
        parts.append("d.birth_ymd >= 0 AND d.birth_ymd <= ?")
        params.append(years_before(today, spec.min_age))
    if spec.max_age is not None:
        parts.append("d.birth_ymd > ?")
        params.append(years_before(today, spec.max_age + 1))
    if spec.genders:
        _any_of(parts, params, "d.gender", spec.genders)
    if spec.start_time is not None:
        parts.append("d.clinical_time >= ?")
        params.append(int(spec.start_time.timestamp()))
    if spec.end_time is not None:
        parts.append("d.clinical_time < ?")
        params.append(int(spec.end_time.timestamp()))
