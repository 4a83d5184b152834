"""Milvus filter expressions: the one builder, and the search filters written with it.

Every expression the platform sends Milvus is written here or with the
helpers below (search filters, knowledge filters, memory scopes, the vector
index's tenant scoping), so a value reaches Milvus through one escaping rule
(`literal`), never pasted into the text.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def literal(value: str) -> str:
    r"""A string literal in a Milvus filter expression (the one escaping rule).

    Milvus reads `\\`, `\"`, `\n`, `\r`, `\t` and takes every other character as
    written; it refuses `\uXXXX` escapes (so not JSON's, which broke on "café"). NUL never
    gets here: requests holding one are refused (common/wellformed.py).
    """
    return f'"{value.translate(_ESCAPES)}"'


def literals(values: Iterable[str]) -> str:
    return "[" + ", ".join(literal(v) for v in values) + "]"


def equals(field_name: str, value: str) -> str:
    return f"{field_name} == {literal(value)}"


def is_in(field_name: str, values: Iterable[str]) -> str:
    return f"{field_name} in {literals(values)}"


def contains_any(field_name: str, values: Iterable[str]) -> str:
    return f"array_contains_any({field_name}, {literals(values)})"


def contains_all(field_name: str, values: Iterable[str]) -> str:
    return f"array_contains_all({field_name}, {literals(values)})"


def extra_equals(key: str, value: str) -> str:
    """A key of the JSON field `extra` equal to a string."""
    return f"extra[{literal(key)}] == {literal(value)}"


def all_of(parts: Iterable[str]) -> str:
    """Every non-empty part, each in parentheses ("" when there is none)."""
    return " and ".join(f"({p})" for p in parts if p)


def any_of(parts: Iterable[str]) -> str:
    return " or ".join(p for p in parts if p)


def in_tenant(tenant_id: str, expr: str = "") -> str:
    """An expression scoped to one tenant: every read and delete of the index carries it."""
    scope = equals("tenant_id", tenant_id)
    return f"{scope} and ({expr})" if expr else scope


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
        parts.append(is_in("kind", spec.kinds))
    if spec.patient_ids:
        parts.append(is_in("patient_id", spec.patient_ids))
    if spec.min_age is not None:
        parts.append(f"birth_ymd >= 0 and birth_ymd <= {years_before(today, spec.min_age)}")
    if spec.max_age is not None:
        parts.append(f"birth_ymd > {years_before(today, spec.max_age + 1)}")
    if spec.genders:
        parts.append(is_in("gender", spec.genders))
    if spec.codes:
        parts.append(contains_any("codes", [code_key(c) for c in spec.codes]))
    if spec.start_time is not None:
        parts.append(f"clinical_time >= {int(spec.start_time.timestamp())}")
    if spec.end_time is not None:
        parts.append(f"clinical_time < {int(spec.end_time.timestamp())}")
    for key, value in sorted(spec.labels.items()):
        parts.append(
            f"labels[{literal(key)}] == {literal(value)}"
            if value
            else f"exists labels[{literal(key)}]"
        )
    return all_of(parts)


def knowledge_expression(spec: FilterSpec) -> str:
    parts: list[str] = []
    if spec.groups:
        parts.append(is_in("grp", spec.groups))
    if spec.document_tags:
        parts.append(contains_all("codes", ["tag:" + t for t in spec.document_tags]))
    return all_of(parts)
