"""The test corpus of tests/data/rag as documents, and how one is streamed into IngestDocuments."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hacs.rag.v1 import knowledge_pb2
from hacs.rag.v1 import rag_service_pb2 as pb
from hacs.records.v1 import evidence_pb2

DATA = Path(__file__).resolve().parent
EL = evidence_pb2.EvidenceLevel


@dataclass(frozen=True)
class Doc:
    document_id: str
    file: str
    mime_type: str
    title: str
    tags: tuple[str, ...] = ()
    evidence_level: int = 0
    publication_date: str = ""
    content: bytes | None = None  # instead of the file

    def bytes(self) -> bytes:
        return self.content if self.content is not None else (DATA / self.file).read_bytes()


CORPUS = (
    Doc("metformin-ckd", "metformin-ckd.md", "text/markdown", "Metformin in chronic kidney disease",
        ("diabetes", "renal"), EL.EVIDENCE_LEVEL_HIGH, "2024-03"),
    Doc("t2d-therapy", "type2-diabetes-therapy.md", "text/markdown",
        "Type 2 diabetes: glucose-lowering therapy", ("diabetes",), EL.EVIDENCE_LEVEL_MODERATE,
        "2022"),
    Doc("htn-targets", "hypertension-targets.html", "text/html",
        "Hypertension in adults: targets and treatment", ("cardiovascular",),
        EL.EVIDENCE_LEVEL_HIGH, "2023-08-15"),
    Doc("asthma-steps", "asthma-step-therapy.txt", "text/plain", "Asthma step therapy",
        ("respiratory",), EL.EVIDENCE_LEVEL_MODERATE, "2021"),
    Doc("af-anticoagulation", "af-anticoagulation.pdf", "application/pdf",
        "Anticoagulation in atrial fibrillation", ("cardiovascular", "anticoagulation"),
        EL.EVIDENCE_LEVEL_HIGH, "2024-01-10"),
)  # fmt: skip
BAD = (
    Doc("corrupt", "", "application/pdf", "Corrupt PDF",
        content=b"%PDF-1.7\n1 0 obj << /Type /Catalog /Pages 9 0 R >>\ngarbage\n%%EOF"),
    Doc("blank", "", "text/plain", "Empty notes", content=b"  \n\n \t\n"),
    Doc("scan", "", "image/png", "A scanned page", content=b"\x89PNG\r\n\x1a\n0000"),
)  # fmt: skip


def document_requests(doc: Doc, piece: int = 700) -> Iterator[pb.IngestDocumentsRequest]:
    """Header, the bytes in several data messages, end (the streaming path, not one blob)."""
    content = doc.bytes()
    yield pb.IngestDocumentsRequest(
        header=pb.DocumentHeader(
            document_id=doc.document_id,
            total_bytes=len(content),
            document=knowledge_pb2.Document(
                title=doc.title,
                mime_type=doc.mime_type,
                tags=list(doc.tags),
                evidence_level=doc.evidence_level,  # type: ignore[arg-type]
                publication_date=doc.publication_date,
                source_url=f"https://guidelines.example.org/{doc.document_id}",
            ),
        )
    )
    for start in range(0, len(content), piece):
        yield pb.IngestDocumentsRequest(
            data=pb.DocumentData(content=content[start : start + piece])
        )
    yield pb.IngestDocumentsRequest(end=pb.DocumentEnd())
