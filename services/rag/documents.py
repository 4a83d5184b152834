"""Documents and chunks as stored: get, list (by tag), delete, and a document's chunks.

Deleting a document removes its rows in one transaction (retrieval stops
returning its chunks at that commit), then its vectors.
"""

from __future__ import annotations

import logging

from services.common.caller import Caller
from services.common.errors import NotFound
from services.common.etags import check_etag, etag_for
from services.common.pagination import decode_page_number, decode_page_token, take_page
from services.kernel.retrieval.expressions import extra_equals
from services.kernel.retrieval.lexical import LexicalIndex
from services.kernel.retrieval.vector_index import KNOWLEDGE, VectorIndex
from services.rag.access import READ, require_parent, require_read, require_write
from services.rag.names import DocumentName, KnowledgeBaseName, chunk_name
from services.rag.store import KnowledgeStore
from services.rag.tables import ChunkRow, DocumentRow

log = logging.getLogger(__name__)
KIND = "Document"


def document_name(row: DocumentRow) -> str:
    return str(DocumentName(row.tenant_id, row.knowledge_base_id, row.id))


def document_etag(row: DocumentRow) -> str:
    return etag_for(document_name(row), row.revision)


class Documents:
    def __init__(
        self,
        store: KnowledgeStore,
        index: VectorIndex,
        lexical: LexicalIndex,
    ) -> None:
        self._store = store
        self._index = index
        self._lexical = lexical

    async def get(self, caller: Caller, name: DocumentName) -> DocumentRow:
        require_read(caller, name.tenant_id, KIND, str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            row = await tx.get_document(name.kb_id, name.document_id)
        if row is None:
            raise NotFound(KIND, str(name))
        return row

    async def list_page(
        self,
        caller: Caller,
        parent: KnowledgeBaseName,
        tags: list[str],
        page_size: int,
        page_token: str,
    ) -> tuple[list[DocumentRow], str]:
        require_parent(caller, parent.tenant_id, READ, str(parent))
        after = decode_page_token("documents", page_token) if page_token else ""
        async with self._store.transaction(parent.tenant_id) as tx:
            if await tx.get_kb(parent.kb_id) is None:
                raise NotFound("KnowledgeBase", str(parent))
            rows = await tx.list_documents(parent.kb_id, tags, after, page_size + 1)
        return take_page(rows, page_size, "documents", lambda r: r.id)

    async def delete(self, caller: Caller, name: DocumentName, etag: str) -> DocumentRow:
        require_write(caller, name.tenant_id, str(name))
        async with self._store.transaction(name.tenant_id) as tx:
            row = await tx.get_document(name.kb_id, name.document_id, for_update=True)
            if row is None:
                raise NotFound(KIND, str(name))
            check_etag(str(name), row.revision, etag)
            keys = await tx.chunk_keys(name.kb_id, name.document_id)
            await tx.delete_document(name.kb_id, name.document_id)
        try:
            await self._index.delete_where(
                KNOWLEDGE, name.tenant_id, extra_equals("document", str(name))
            )
            pks = [chunk_name(name.tenant_id, key) for key in keys]
            await self._lexical.delete(KNOWLEDGE, name.tenant_id, pks)
        except Exception:  # rows are gone, so retrieval no longer returns these vectors
            log.exception(
                "vectors of deleted %s not removed (invisible: no chunk rows); replacing a "
                "document with this id later purges them",
                name,
            )
        return row

    async def chunks(
        self, caller: Caller, parent: DocumentName, page_size: int, page_token: str
    ) -> tuple[list[ChunkRow], str]:
        require_parent(caller, parent.tenant_id, READ, str(parent))
        after = -1
        if page_token:
            after = decode_page_number("chunks", page_token)
        async with self._store.transaction(parent.tenant_id) as tx:
            if await tx.get_document(parent.kb_id, parent.document_id) is None:
                raise NotFound(KIND, str(parent))
            rows = await tx.list_chunks(parent.kb_id, parent.document_id, after, page_size + 1)
        return take_page(rows, page_size, "chunks", lambda r: str(r.chunk_index))
