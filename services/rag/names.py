"""Knowledge resource names (AIP-122) and the ids inside them.

tenants/{tenant}/knowledgeBases/{knowledge_base}
tenants/{tenant}/knowledgeBases/{knowledge_base}/documents/{document}
.../documents/{document}/chunks/{chunk}
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from services.common.errors import FieldViolation, Invalid

_TENANT = r"[a-z][a-z0-9-]{1,38}[a-z0-9]"
KB_ID = re.compile(r"^[a-z][a-z0-9-]{0,62}\Z")
KB_ID_RULE = "1-63 lower-case letters, digits and '-', starting with a letter"
DOCUMENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
DOCUMENT_ID_RULE = "1-128 letters, digits, '-', '_' or '.'"
_KB = rf"tenants/(?P<tenant>{_TENANT})/knowledgeBases/(?P<kb>[a-z][a-z0-9-]{{0,62}})"
_DOC = rf"{_KB}/documents/(?P<document>[A-Za-z0-9._-]{{1,128}})"
KB_NAME = re.compile(rf"^{_KB}\Z")
DOCUMENT_NAME = re.compile(rf"^{_DOC}\Z")
CHUNK_NAME = re.compile(rf"^{_DOC}/chunks/(?P<chunk>r[0-9]{{1,18}}-[0-9]{{1,9}})\Z")


@dataclass(frozen=True)
class KnowledgeBaseName:
    tenant_id: str
    kb_id: str

    def __str__(self) -> str:
        return f"tenants/{self.tenant_id}/knowledgeBases/{self.kb_id}"


@dataclass(frozen=True)
class DocumentName:
    tenant_id: str
    kb_id: str
    document_id: str

    @property
    def knowledge_base(self) -> KnowledgeBaseName:
        return KnowledgeBaseName(self.tenant_id, self.kb_id)

    def __str__(self) -> str:
        return f"{self.knowledge_base}/documents/{self.document_id}"


@dataclass(frozen=True)
class ChunkName:
    document: DocumentName
    chunk_id: str

    def __str__(self) -> str:
        return f"{self.document}/chunks/{self.chunk_id}"


def chunk_name(tenant_id: str, key: tuple[str, str, str]) -> str:
    """The name (and index primary key) of a chunk from its (kb, document, chunk) ids."""
    kb_id, document_id, chunk = key
    return f"{DocumentName(tenant_id, kb_id, document_id)}/chunks/{chunk}"


def chunk_id(revision: int, index: int) -> str:
    """Chunk ids carry the document revision, so a replacement never overwrites old vectors."""
    return f"r{revision}-{index}"


def parse_knowledge_base(name: str, field: str = "name") -> KnowledgeBaseName:
    match = KB_NAME.match(name)
    if match is None:
        raise Invalid(
            FieldViolation(
                field,
                f"{name!r} is not a knowledge base name like 'tenants/acme/knowledgeBases/kb'",
            )
        )
    return KnowledgeBaseName(match["tenant"], match["kb"])


def parse_document(name: str, field: str = "name") -> DocumentName:
    match = DOCUMENT_NAME.match(name)
    if match is None:
        raise Invalid(
            FieldViolation(
                field,
                f"{name!r} is not a document name like "
                "'tenants/acme/knowledgeBases/kb/documents/doc-1'",
            )
        )
    return DocumentName(match["tenant"], match["kb"], match["document"])


def parse_chunk(name: str) -> ChunkName | None:
    match = CHUNK_NAME.match(name)
    if match is None:
        return None
    return ChunkName(DocumentName(match["tenant"], match["kb"], match["document"]), match["chunk"])


def derived_document_id(source_url: str, title: str) -> str:
    """An id from the source (else the title), so re-ingesting the same source replaces it."""
    basis = source_url.strip() or title.strip()
    return "d-" + hashlib.sha256(basis.encode()).hexdigest()[:20]
