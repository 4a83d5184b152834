"""Storage of knowledge bases, documents and chunks (SQLite or PostgreSQL).

Domain code opens `store.transaction(tenant_id)` and calls the few methods it
needs; a document's metadata, tags and chunks change together or not at all.
Every statement filters on `tenant_id`; PostgreSQL's row-level security
enforces it a second time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from services.common.db.engine import Database
from services.rag.tables import ChunkRow, DocumentRow, DocumentTagRow, KnowledgeBaseRow

ChunkKey = tuple[str, str, str]  # (knowledge base id, document id, chunk id)


class KnowledgeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @asynccontextmanager
    async def transaction(self, tenant_id: str) -> AsyncIterator[KnowledgeTx]:
        async with self.db.transaction(tenant_id) as session:
            yield KnowledgeTx(session, tenant_id)


class KnowledgeTx:
    def __init__(self, session: AsyncSession, tenant_id: str) -> None:
        self._s = session
        self._tenant = tenant_id

    # -- knowledge bases -------------------------------------------------------

    async def get_kb(self, kb_id: str, *, for_update: bool = False) -> KnowledgeBaseRow | None:
        stmt = select(KnowledgeBaseRow).where(
            KnowledgeBaseRow.tenant_id == self._tenant, KnowledgeBaseRow.id == kb_id
        )
        if for_update:
            stmt = stmt.with_for_update()
        return await self._s.scalar(stmt)

    async def list_kbs(self, after: str = "", limit: int | None = None) -> list[KnowledgeBaseRow]:
        stmt = (
            select(KnowledgeBaseRow)
            .where(KnowledgeBaseRow.tenant_id == self._tenant, KnowledgeBaseRow.id > after)
            .order_by(KnowledgeBaseRow.id)
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        return list((await self._s.scalars(stmt)).all())

    def add_kb(self, row: KnowledgeBaseRow) -> None:
        self._s.add(row)

    async def counts(self, kb_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(documents, chunks) per knowledge base, counted now (never drifts)."""
        if not kb_ids:
            return {}
        docs = await self._s.execute(
            select(DocumentRow.knowledge_base_id, func.count(), func.sum(DocumentRow.chunk_count))
            .where(
                DocumentRow.tenant_id == self._tenant,
                DocumentRow.knowledge_base_id.in_(list(kb_ids)),
            )
            .group_by(DocumentRow.knowledge_base_id)
        )
        found = {kb: (int(n), int(chunks or 0)) for kb, n, chunks in docs.all()}
        return {kb: found.get(kb, (0, 0)) for kb in kb_ids}

    async def delete_kb(self, kb_id: str) -> None:
        for table in (ChunkRow, DocumentTagRow, DocumentRow):
            await self._s.execute(
                delete(table).where(
                    table.tenant_id == self._tenant, table.knowledge_base_id == kb_id
                )
            )
        await self._s.execute(
            delete(KnowledgeBaseRow).where(
                KnowledgeBaseRow.tenant_id == self._tenant, KnowledgeBaseRow.id == kb_id
            )
        )

    # -- documents ------------------------------------------------------------

    async def get_document(
        self, kb_id: str, document_id: str, *, for_update: bool = False
    ) -> DocumentRow | None:
        stmt = select(DocumentRow).where(
            DocumentRow.tenant_id == self._tenant,
            DocumentRow.knowledge_base_id == kb_id,
            DocumentRow.id == document_id,
        )
        if for_update:
            stmt = stmt.with_for_update()
        return await self._s.scalar(stmt)

    async def documents(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], DocumentRow]:
        """Documents by (knowledge base id, document id)."""
        found: dict[tuple[str, str], DocumentRow] = {}
        for start in range(0, len(keys), 500):
            rows = await self._s.scalars(
                select(DocumentRow).where(
                    DocumentRow.tenant_id == self._tenant,
                    tuple_(DocumentRow.knowledge_base_id, DocumentRow.id).in_(
                        list(keys[start : start + 500])
                    ),
                )
            )
            found.update({(r.knowledge_base_id, r.id): r for r in rows})
        return found

    async def list_documents(
        self, kb_id: str, tags: Sequence[str], after: str, limit: int
    ) -> list[DocumentRow]:
        stmt = select(DocumentRow).where(
            DocumentRow.tenant_id == self._tenant,
            DocumentRow.knowledge_base_id == kb_id,
            DocumentRow.id > after,
        )
        for tag in tags:
            t = DocumentTagRow
            stmt = stmt.where(
                select(t.tag)
                .where(
                    t.tenant_id == DocumentRow.tenant_id,
                    t.knowledge_base_id == DocumentRow.knowledge_base_id,
                    t.document_id == DocumentRow.id,
                    t.tag == tag,
                )
                .exists()
            )
        rows = await self._s.scalars(stmt.order_by(DocumentRow.id).limit(limit))
        return list(rows.all())

    async def write_document(self, document: DocumentRow, chunks: Sequence[ChunkRow]) -> None:
        """Replace the document (if any) with this revision: metadata, tags and chunks."""
        await self._delete_children(document.knowledge_base_id, document.id)
        await self._s.merge(document)  # an UPDATE of the current row, or an INSERT
        self._s.add_all(
            DocumentTagRow(
                tenant_id=self._tenant,
                knowledge_base_id=document.knowledge_base_id,
                document_id=document.id,
                tag=tag,
            )
            for tag in dict.fromkeys(document.tags)
        )
        self._s.add_all(chunks)
        await self._s.flush()

    async def delete_document(self, kb_id: str, document_id: str) -> None:
        await self._delete_document_rows(kb_id, document_id)

    async def _delete_document_rows(self, kb_id: str, document_id: str) -> None:
        await self._delete_children(kb_id, document_id)
        await self._s.execute(
            delete(DocumentRow).where(
                DocumentRow.tenant_id == self._tenant,
                DocumentRow.knowledge_base_id == kb_id,
                DocumentRow.id == document_id,
            )
        )

    async def _delete_children(self, kb_id: str, document_id: str) -> None:
        await self._s.execute(
            delete(ChunkRow).where(
                ChunkRow.tenant_id == self._tenant,
                ChunkRow.knowledge_base_id == kb_id,
                ChunkRow.document_id == document_id,
            )
        )
        await self._s.execute(
            delete(DocumentTagRow).where(
                DocumentTagRow.tenant_id == self._tenant,
                DocumentTagRow.knowledge_base_id == kb_id,
                DocumentTagRow.document_id == document_id,
            )
        )

    # -- chunks ---------------------------------------------------------------

    async def list_chunks(
        self, kb_id: str, document_id: str, after_index: int, limit: int
    ) -> list[ChunkRow]:
        rows = await self._s.scalars(
            select(ChunkRow)
            .where(
                ChunkRow.tenant_id == self._tenant,
                ChunkRow.knowledge_base_id == kb_id,
                ChunkRow.document_id == document_id,
                ChunkRow.chunk_index > after_index,
            )
            .order_by(ChunkRow.chunk_index)
            .limit(limit)
        )
        return list(rows.all())

    async def chunk_keys(self, kb_id: str, document_id: str | None = None) -> list[ChunkKey]:
        """Keys of a knowledge base's chunks (or one document's), to remove their vectors."""
        stmt = select(ChunkRow.knowledge_base_id, ChunkRow.document_id, ChunkRow.id).where(
            ChunkRow.tenant_id == self._tenant, ChunkRow.knowledge_base_id == kb_id
        )
        if document_id is not None:
            stmt = stmt.where(ChunkRow.document_id == document_id)
        return [(k, d, c) for k, d, c in (await self._s.execute(stmt)).all()]

    async def chunks(self, keys: Sequence[ChunkKey]) -> dict[ChunkKey, ChunkRow]:
        """The chunks that exist now, by (knowledge base id, document id, chunk id)."""
        found: dict[ChunkKey, ChunkRow] = {}
        for start in range(0, len(keys), 300):
            rows = await self._s.scalars(
                select(ChunkRow).where(
                    ChunkRow.tenant_id == self._tenant,
                    tuple_(ChunkRow.knowledge_base_id, ChunkRow.document_id, ChunkRow.id).in_(
                        list(keys[start : start + 300])
                    ),
                )
            )
            found.update({(r.knowledge_base_id, r.document_id, r.id): r for r in rows})
        return found
