"""The lexical (BM25) retriever, behind one small interface, two engines.

* `MilvusLexical`: Milvus's own BM25 function and sparse index, in the same
  collection as the dense vectors. Used with a Milvus server (2.5 or later),
  where the sparse inverted index is fast and shared by every replica.
* `SqliteLexical` (lexical_store.py): documents in a SQLite file, BM25 scored
  in memory with top-k pruning. Milvus Lite scans sparse vectors without an
  index — about 0.6 s per query at 15,000 documents on this hardware, growing
  linearly — and a Milvus server before 2.5 has no BM25, so those keep their
  lexical index here.

Both filter with the same FilterSpec, and both always filter by tenant.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from services.kernel.retrieval.expressions import (
    FilterSpec,
    knowledge_expression,
    records_expression,
)
from services.kernel.retrieval.vector_index import Hit, IndexDoc, VectorIndex


class LexicalIndex(Protocol):
    name: str

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None: ...

    async def delete(self, kind: str, tenant_id: str, pks: Sequence[str]) -> None: ...

    async def delete_all(self, kind: str, tenant_id: str, types: Sequence[str] = ()) -> None: ...

    async def search(
        self,
        kind: str,
        tenant_id: str,
        text: str,
        spec: FilterSpec,
        limit: int,
        *,
        with_fields: bool = True,
    ) -> list[Hit]: ...

    async def documents(
        self, kind: str, tenant_id: str, pks: Sequence[str]
    ) -> dict[str, dict[str, Any]]: ...


def expression(kind: str, spec: FilterSpec) -> str:
    return knowledge_expression(spec) if kind == "knowledge" else records_expression(spec)


class MilvusLexical:
    """BM25 inside the Milvus collection (the BM25 function fills the sparse field on insert)."""

    name = "milvus"

    def __init__(self, index: VectorIndex, fields: list[str]) -> None:
        self._index = index
        self._fields = fields

    async def upsert(self, kind: str, docs: Sequence[IndexDoc]) -> None:
        """Nothing to do: the text is in the collection, Milvus derives the sparse vector."""

    async def delete(self, kind: str, tenant_id: str, pks: Sequence[str]) -> None:
        """Nothing to do: deleting the Milvus row deletes its sparse vector."""

    async def delete_all(self, kind: str, tenant_id: str, types: Sequence[str] = ()) -> None:
        """Nothing to do (see delete)."""

    async def search(
        self,
        kind: str,
        tenant_id: str,
        text: str,
        spec: FilterSpec,
        limit: int,
        *,
        with_fields: bool = True,
    ) -> list[Hit]:
        fields = self._fields if with_fields else ["pk"]
        return await self._index.lexical_search(
            kind, tenant_id, text, expression(kind, spec), limit, fields
        )

    async def documents(
        self, kind: str, tenant_id: str, pks: Sequence[str]
    ) -> dict[str, dict[str, Any]]:
        return await self._index.fetch(kind, tenant_id, list(pks), self._fields)
