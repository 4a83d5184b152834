"""The list-valued search filters as SQL over the lexical store's docs table.

Codes, labels and document tags are JSON columns in docs; the store checks
them on its best-scoring documents (values always bound parameters). The
scalar filters (type, patient, age, sex, clinical time, knowledge base) are
evaluated over the index's slots instead (slot_filters.py).
"""

from __future__ import annotations

import json
from typing import Any

from services.kernel.retrieval.expressions import FilterSpec, code_key


def sql_filters(spec: FilterSpec, kind: str) -> tuple[str, list[Any]]:
    """The spec's codes, labels (records) or document tags (knowledge) as SQL over
    `docs AS d`: " AND ..." conditions and their parameters ("" when there are none)."""
    parts: list[str] = []
    params: list[Any] = []
    if kind == "knowledge":
        for tag in spec.document_tags:
            parts.append("EXISTS (SELECT 1 FROM json_each(d.codes) WHERE value = ?)")
            params.append(f"tag:{tag}")
        return "".join(f" AND {p}" for p in parts), params
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
