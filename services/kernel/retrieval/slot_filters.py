"""The scalar search filters, evaluated in numpy over an index's slot payloads.

The lexical store keeps each document's scalar filter fields (type, patient,
birth date, gender, clinical time, knowledge base) as a record beside its
postings (bm25_index.TermIndex payload). A filter on them becomes one mask
over every slot, and the index returns the exact best documents among those
allowed in a single pass. The list-valued filters (codes, labels, document
tags) stay SQL over the docs table (lexical_filters.py) and are checked on
the best-scoring documents.

The conditions are the same as the Milvus ones (expressions.py); a test
compares the store's filtered results with a plain reading of each filter,
document by document.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime

import numpy as np

from services.kernel.retrieval.expressions import FilterSpec, years_before

FILTER_DTYPE = np.dtype(
    [
        ("type", np.int32),
        ("patient", np.int32),
        ("birth_ymd", np.int64),
        ("gender", np.int32),
        ("clinical_time", np.int64),
        ("grp", np.int32),
    ]
)
FILTER_COLUMNS = "type, patient_id, birth_ymd, gender, clinical_time, grp"  # docs, in order
UNKNOWN = -1  # the id of a value no document holds
FEW_VALUES = 16  # up to this many values: one comparison each (np.isin sorts: ~10 ms at 1M)


class Interned:
    """Strings -> small ints, shared by a store's indexes (ids never change)."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._lock = threading.Lock()  # indexes of different scopes intern concurrently

    def id(self, value: str) -> int:
        found = self._ids.get(value)
        if found is None:
            with self._lock:
                found = self._ids.setdefault(value, len(self._ids))
        return found

    def ids(self, values: Iterable[str]) -> list[int]:
        """Ids of values seen; a value never seen matches no document."""
        return [self._ids.get(v, UNKNOWN) for v in values]


def payload(
    interned: Interned,
    type_: str,
    patient_id: str,
    birth_ymd: int,
    gender: str,
    clinical_time: int,
    grp: str,
) -> tuple[int, int, int, int, int, int]:
    """One docs row's FILTER_COLUMNS as a FILTER_DTYPE record."""
    return (
        interned.id(type_),
        interned.id(patient_id),
        birth_ymd,
        interned.id(gender),
        clinical_time,
        interned.id(grp),
    )


def has_scalar_filter(spec: FilterSpec, kind: str) -> bool:
    if kind == "knowledge":
        return bool(spec.groups)
    return bool(
        spec.kinds
        or spec.patient_ids
        or spec.min_age is not None
        or spec.max_age is not None
        or spec.genders
        or spec.start_time is not None
        or spec.end_time is not None
    )


def scalar_mask(
    columns: Mapping[str, np.ndarray],
    spec: FilterSpec,
    kind: str,
    interned: Interned,
    today: date | None = None,
) -> np.ndarray | None:
    """Slots that pass the spec's scalar filters; None when it has none."""
    if not has_scalar_filter(spec, kind):
        return None
    ok = np.ones(len(columns["type"]), np.bool_)

    def any_of(column: str, values: Iterable[str]) -> None:
        ids = sorted(set(interned.ids(values)))
        if len(ids) > FEW_VALUES:
            ok[:] &= np.isin(columns[column], ids, kind="table")
            return
        found = np.zeros_like(ok)
        for value in ids:
            found |= columns[column] == value
        ok[:] &= found

    if kind == "knowledge":
        any_of("grp", spec.groups)
        return ok
    today = today or datetime.now(UTC).date()
    if spec.kinds:
        any_of("type", spec.kinds)
    if spec.patient_ids:
        any_of("patient", spec.patient_ids)
    birth = columns["birth_ymd"]
    if spec.min_age is not None:
        ok &= (birth >= 0) & (birth <= years_before(today, spec.min_age))
    if spec.max_age is not None:
        ok &= birth > years_before(today, spec.max_age + 1)
    if spec.genders:
        any_of("gender", spec.genders)
    clinical = columns["clinical_time"]
    if spec.start_time is not None:
        ok &= clinical >= int(spec.start_time.timestamp())
    if spec.end_time is not None:
        ok &= clinical < int(spec.end_time.timestamp())
    return ok
