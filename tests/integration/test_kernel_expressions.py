"""Filter values reach Milvus as written: the one escaping rule, on Milvus Lite and a server.

Values any caller can send (a tag "café", a code with a quote, a label with a
backslash) must match the documents holding them — JSON's \\u escapes were
refused by Milvus ("unknown escape sequence"), which answered INTERNAL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from services.kernel.retrieval.expressions import (
    contains_any,
    equals,
    in_tenant,
    is_in,
    literal,
)
from services.kernel.retrieval.vector_index import RECORDS, IndexDoc, VectorIndex

VALUES = ["café", "Ménière's", 'a "quoted" code', "back\\slash", "tab\there", "two\nlines", "😀"]


@pytest.fixture(params=["milvus-lite", "milvus-server"])
async def index(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorIndex]:
    uri = str(tmp_path / "milvus.db")
    if request.param == "milvus-server":
        uri = request.getfixturevalue("milvus_uri")
    index = VectorIndex(uri, 4)
    await index.connect()
    docs = [
        IndexDoc(
            pk=f"escape-{i}",
            tenant_id="ward",
            name=f"tenants/ward/observations/o{i}",
            kind="Observation",
            text="x",
            vector=np.array([1.0, 0.5, 0.25, float(i)], dtype=np.float32),
            patient_id=value,
            codes=[f"tag:{value}"],
        )
        for i, value in enumerate(VALUES)
    ]
    await index.upsert(RECORDS, docs)
    await index.flush(RECORDS)
    try:
        yield index
    finally:
        await index.delete_where(RECORDS, "ward", "")
        await index.close()


async def test_every_value_matches_as_written(index: VectorIndex) -> None:
    for i, value in enumerate(VALUES):
        assert literal(value).startswith('"') and "\\u" not in literal(value)
        for expr in (
            equals("patient_id", value),
            is_in("patient_id", [value, "other"]),
            contains_any("codes", [f"tag:{value}"]),
        ):
            found = await index.fetch(RECORDS, "ward", [f"escape-{i}"], ["pk"])
            assert list(found) == [f"escape-{i}"]
            assert await index.count(RECORDS, "ward", expr) == 1, (value, expr)
    assert in_tenant("ward", equals("patient_id", "café")).startswith('tenant_id == "ward"')
