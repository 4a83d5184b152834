"""`hacs eval rag`: a BEIR data set through the RAG path, chunking included.

A fresh platform in this process (temporary data dir: SQLite, Milvus Lite +
the SQLite lexical store, the shipped model), a fresh tenant and one knowledge base with the
default chunking. Every corpus document goes in through
RagService.IngestDocuments as a text/plain document (its title as the
document title, its text as the content; the document id is the corpus id,
made valid when it is not); every query of the split then goes through
RagService.Retrieve (min_relevance 0, top_k 100). A document's rank is the
rank of its best chunk. Prints nDCG@10 (graded, linear gains, as trec_eval)
and Recall@10 over documents; with --json the last line is
`{"ndcg@10": x, "recall@10": y}`.

* A set whose corpus and queries carry `metadata.scope` (LoCoMo: one
  conversation = one agent's memory) is evaluated scoped, as the set asks:
  each document is tagged with its scope and each query filtered to it
  (RetrievalFilter.tags). `--ignore-scope` turns that off.
* A corpus without titles goes into a knowledge base without the context
  header (the title would be the document id, which says nothing).
* `--max-queries N` keeps the first N queries (sorted ids); `--max-documents
  M` keeps every document judged relevant to a kept query, then fills the
  corpus up to M documents with the others in corpus order. Fewer
  distractors make the task easier: a subset's figures are for quick checks,
  not for comparison.

The platform comes from services/evals/platform.py, as for the other evals,
with the RAG service added and the record indexer off.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from hacs.rag.v1 import knowledge_pb2, rag_service_pb2_grpc
from hacs.rag.v1 import rag_service_pb2 as pb

from services.evals.platform import EvalPlatform as Platform
from services.evals.platform import running_platform
from services.tooling.beir import Dataset, DatasetError, Document, load, ndcg_at, recall_at
from services.tooling.progress import Progress

TENANT = "rag-eval"
KB_ID = "corpus"
TOP_K = 100  # chunks per query (Retrieve's maximum); documents are ranked by their best chunk
QUERY_CONCURRENCY = 8
DATA_PIECE = 64 * 1024
_INVALID_ID_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")
_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}\Z")
_TAG = re.compile(r"^[a-z0-9][a-z0-9 _.:/+-]{0,63}\Z")

HELP = "nDCG@10 / Recall@10 of RagService.Retrieve (chunking included) on a BEIR data set"


# -- pure helpers ----------------------------------------------------------------------


def document_id(corpus_id: str) -> str:
    """The corpus id when it is a valid document id, else a valid one that stays unique.

    Invalid characters become '_' and a hash of the original is appended, so
    'conv-26:D1:3' and 'conv-26_D1_3' cannot collide.
    """
    if _VALID_ID.match(corpus_id):
        return corpus_id
    digest = hashlib.sha256(corpus_id.encode()).hexdigest()[:12]
    readable = _INVALID_ID_CHARACTERS.sub("_", corpus_id)[: 128 - len(digest) - 1]
    return f"{readable}-{digest}" if readable else f"d-{digest}"


def scope_tag(scope: str) -> str:
    """A document tag for a scope ('conv-26' -> 'scope:conv-26'); hashed when not a valid tag."""
    tag = f"scope:{scope.strip().lower()}"
    if _TAG.match(tag):
        return tag
    return "scope:" + hashlib.sha256(scope.encode()).hexdigest()[:16]


def subset(dataset: Dataset, max_queries: int, max_documents: int) -> Dataset:
    """The first `max_queries` queries (sorted ids) and a corpus of at most `max_documents`.

    The corpus keeps every document judged relevant (grade > 0) to a kept
    query, then the others in corpus order until `max_documents` (more when
    the relevant ones alone exceed it). 0 means no limit.
    """
    kept = sorted(dataset.queries)[:max_queries] if max_queries else sorted(dataset.queries)
    queries = {q: dataset.queries[q] for q in kept}
    qrels = {q: dataset.qrels[q] for q in kept}
    corpus = dataset.corpus
    if max_documents:
        relevant = {d for grades in qrels.values() for d, g in grades.items() if g > 0}
        room = max(0, max_documents - sum(1 for d in corpus if d.id in relevant))
        others = [d.id for d in corpus if d.id not in relevant][:room]
        keep = relevant | set(others)
        corpus = [d for d in corpus if d.id in keep]
    return Dataset(dataset.name, corpus, queries, qrels, dataset.duplicate_documents)


def rank_documents(chunk_documents: Iterable[str]) -> list[str]:
    """Documents in the order of their best chunk (chunks arrive best first)."""
    return list(dict.fromkeys(chunk_documents))


def score(
    runs: dict[str, list[str]], qrels: dict[str, dict[str, int]], k: int = 10
) -> dict[str, float]:
    """Mean nDCG@k and Recall@k over every query of the qrels (a missing run scores 0)."""
    ndcg = [ndcg_at(runs.get(q, []), grades, k) for q, grades in qrels.items()]
    recall = [recall_at(runs.get(q, []), grades, k) for q, grades in qrels.items()]
    return {
        f"ndcg@{k}": round(sum(ndcg) / max(len(ndcg), 1), 4),
        f"recall@{k}": round(sum(recall) / max(len(recall), 1), 4),
    }


def read_scopes(directory: Path) -> tuple[dict[str, str], dict[str, str]]:
    """`metadata.scope` of each corpus document and each query (empty when the set has none)."""

    def scopes(path: Path) -> dict[str, str]:
        found: dict[str, str] = {}
        with path.open() as f:
            for line in f:
                if line.strip():
                    item = json.loads(line)
                    metadata = item.get("metadata") or {}
                    if isinstance(metadata, dict) and metadata.get("scope"):
                        found[str(item["_id"])] = str(metadata["scope"])
        return found

    return scopes(directory / "corpus.jsonl"), scopes(directory / "queries.jsonl")


# -- the platform ----------------------------------------------------------------------


def knowledge_base(platform: Platform) -> str:
    return f"{platform.tenant}/knowledgeBases/{KB_ID}"


# -- ingest ----------------------------------------------------------------------------


@dataclass
class IngestTally:
    documents: int
    bytes_total: int
    bytes_done: int = 0  # of documents with an outcome
    done: int = 0
    ingested: int = 0
    rejected: int = 0
    chunks: int = 0
    seconds: float = 0.0
    reasons: dict[str, int] = field(default_factory=dict)


def document_requests(
    knowledge_base: str, docs: list[Document], tags: dict[str, str]
) -> Iterable[pb.IngestDocumentsRequest]:
    """A config, then per document a header, its bytes in data messages and an end."""
    yield pb.IngestDocumentsRequest(config=pb.IngestConfig(knowledge_base=knowledge_base))
    for doc in docs:
        content = doc.text.encode()
        yield pb.IngestDocumentsRequest(
            header=pb.DocumentHeader(
                document_id=document_id(doc.id),
                total_bytes=len(content),
                document=knowledge_pb2.Document(
                    title=doc.title.strip() or doc.id,
                    mime_type="text/plain; charset=utf-8",
                    tags=[tags[doc.id]] if doc.id in tags else [],
                ),
            )
        )
        for start in range(0, len(content), DATA_PIECE):
            piece = content[start : start + DATA_PIECE]
            yield pb.IngestDocumentsRequest(data=pb.DocumentData(content=piece))
        yield pb.IngestDocumentsRequest(
            end=pb.DocumentEnd(sha256=hashlib.sha256(content).hexdigest())
        )


async def _stream(requests: Iterable[pb.IngestDocumentsRequest]) -> AsyncIterator[Any]:
    for request in requests:
        yield request


async def ingest_corpus(
    platform: Platform,
    corpus: list[Document],
    tags: dict[str, str],
    *,
    streams: int,
    out: TextIO,
) -> IngestTally:
    """Every document through IngestDocuments, on `streams` concurrent streams.

    Several streams let the embedding micro-batcher fill its batches with
    chunks of several documents (one stream ingests one document at a time).
    """
    rag = rag_service_pb2_grpc.RagServiceStub(platform.channel)
    tally = IngestTally(len(corpus), sum(len(d.text.encode()) for d in corpus))
    progress = Progress(out)
    sizes = {document_id(d.id): len(d.text.encode()) for d in corpus}
    started = time.monotonic()

    def line() -> str:
        rate = tally.done / max(time.monotonic() - started, 1e-6)
        left = (tally.documents - tally.done) / rate if rate > 0 else 0.0
        return (
            f"ingest: {tally.done:,}/{tally.documents:,} documents, "
            f"{tally.bytes_done / 1e6:,.1f}/{tally.bytes_total / 1e6:,.1f} MB, "
            f"{tally.chunks:,} chunks embedded and indexed ({rate:,.1f} documents/s, "
            f"~{left / 60:,.0f} min left)"
        )

    async def one(share: list[Document]) -> None:
        requests = document_requests(knowledge_base(platform), share, tags)
        call = rag.IngestDocuments(_stream(requests), metadata=platform.token)
        async for response in call:
            kind = response.WhichOneof("event")
            if kind == "outcome":
                o = response.outcome
                tally.done += 1
                tally.bytes_done += sizes.get(o.document_id, 0)
                if o.status == pb.INGEST_STATUS_REJECTED:
                    tally.rejected += 1
                    tally.reasons[o.reason] = tally.reasons.get(o.reason, 0) + 1
                else:
                    tally.ingested += 1
                    tally.chunks += o.chunk_count
            progress.show(line())

    shares = [corpus[i::streams] for i in range(streams)]
    await asyncio.gather(*(one(share) for share in shares if share))
    tally.seconds = time.monotonic() - started
    progress.show(line(), final=True)
    return tally


# -- retrieval -------------------------------------------------------------------------


async def run_queries(
    platform: Platform,
    dataset: Dataset,
    query_tags: dict[str, str],
    *,
    top_k: int,
    out: TextIO,
) -> dict[str, list[str]]:
    """Documents ranked by their best chunk, per query."""
    rag = rag_service_pb2_grpc.RagServiceStub(platform.channel)
    reverse = {document_id(d.id): d.id for d in dataset.corpus}
    runs: dict[str, list[str]] = {}
    progress = Progress(out)
    limit = asyncio.Semaphore(QUERY_CONCURRENCY)
    started = time.monotonic()

    async def one(query_id: str, text: str) -> None:
        request = pb.RetrieveRequest(
            parent=platform.tenant,
            knowledge_bases=[knowledge_base(platform)],
            query=text,
            top_k=top_k,
            min_relevance=0.0,
        )
        if query_id in query_tags:
            request.filter.tags.append(query_tags[query_id])
        async with limit:
            reply = await rag.Retrieve(request, metadata=platform.token, timeout=120)
        documents = (r.chunk.document.rsplit("/", 1)[1] for r in reply.results)
        runs[query_id] = [reverse.get(d, d) for d in rank_documents(documents)]
        rate = len(runs) / max(time.monotonic() - started, 1e-6)
        progress.show(f"retrieve: {len(runs):,}/{len(dataset.queries):,} queries ({rate:,.1f}/s)")

    await asyncio.gather(*(one(q, t) for q, t in dataset.queries.items()))
    rate = len(runs) / max(time.monotonic() - started, 1e-6)
    progress.show(
        f"retrieve: {len(runs):,}/{len(dataset.queries):,} queries ({rate:,.1f}/s)", final=True
    )
    return runs


# -- the command -----------------------------------------------------------------------


@dataclass
class RagReport:
    figures: dict[str, float]
    documents: int
    queries: int
    tally: IngestTally
    retrieve_seconds: float
    scoped: bool
    short_runs: int  # queries with fewer than 10 distinct documents among their top_k chunks


async def evaluate(
    directory: Path,
    *,
    split: str,
    max_queries: int,
    max_documents: int,
    streams: int,
    top_k: int,
    ignore_scope: bool,
    out: TextIO,
) -> RagReport:
    dataset = subset(load(directory, split), max_queries, max_documents)
    doc_scopes, query_scopes = ({}, {}) if ignore_scope else read_scopes(directory)
    scoped = bool(doc_scopes and query_scopes)
    doc_tags = {d: scope_tag(s) for d, s in doc_scopes.items()} if scoped else {}
    query_tags = {q: scope_tag(s) for q, s in query_scopes.items()} if scoped else {}
    titled = any(d.title.strip() for d in dataset.corpus)
    out.write(
        f"{dataset.name}/{split}: {len(dataset.corpus):,} documents, "
        f"{len(dataset.queries):,} queries"
        f"{' (scoped by metadata.scope)' if scoped else ''}\n"
    )
    if dataset.duplicate_documents:
        out.write(
            f"  note: {dataset.duplicate_documents} corpus lines repeat an earlier _id "
            "and were skipped\n"
        )
    with tempfile.TemporaryDirectory(prefix="hacs-eval-rag-") as data_dir:
        async with running_platform(
            Path(data_dir),
            tenant_id=TENANT,
            display_name="RAG evaluation",
            services="tenant,records,embedding,search,rag",
            indexer=False,  # no records are written; the knowledge path indexes itself
            token_ttl_seconds=86400,  # the full MedQuAD run takes longer than an hour
        ) as platform:
            rag = rag_service_pb2_grpc.RagServiceStub(platform.channel)
            chunking = knowledge_pb2.ChunkingConfig(include_context_header=titled)
            await rag.CreateKnowledgeBase(
                pb.CreateKnowledgeBaseRequest(
                    parent=platform.tenant,
                    knowledge_base_id=KB_ID,
                    knowledge_base=knowledge_pb2.KnowledgeBase(
                        display_name=f"{dataset.name} corpus", chunking=chunking
                    ),
                ),
                metadata=platform.token,
            )
            tally = await ingest_corpus(
                platform, dataset.corpus, doc_tags, streams=streams, out=out
            )
            for reason, count in sorted(tally.reasons.items(), key=lambda kv: -kv[1]):
                out.write(f"  rejected {count:,}: {reason}\n")
            started = time.monotonic()
            runs = await run_queries(platform, dataset, query_tags, top_k=top_k, out=out)
            retrieve_seconds = time.monotonic() - started
    return RagReport(
        figures=score(runs, dataset.qrels, 10),
        documents=len(dataset.corpus),
        queries=len(dataset.queries),
        tally=tally,
        retrieve_seconds=retrieve_seconds,
        scoped=scoped,
        short_runs=sum(1 for ranked in runs.values() if len(ranked) < 10),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument(
        "--json", action="store_true", help='last line: {"ndcg@10": x, "recall@10": y}'
    )
    parser.add_argument(
        "--max-queries", type=int, default=0, help="evaluate only the first N queries (sorted ids)"
    )
    parser.add_argument(
        "--max-documents",
        type=int,
        default=0,
        help="ingest every document relevant to a kept query, then others in corpus order up "
        "to N documents in all (a quick check: fewer distractors make retrieval easier)",
    )
    parser.add_argument(
        "--streams",
        type=int,
        default=8,
        help="concurrent IngestDocuments streams, so embedding batches fill (default: 8)",
    )
    parser.add_argument(
        "--top-k",
        type=int,
        default=TOP_K,
        help=f"chunks asked per query, 10-100 (default: {TOP_K})",
    )
    parser.add_argument(
        "--ignore-scope",
        action="store_true",
        help="do not restrict queries to their metadata.scope (LoCoMo)",
    )


def main(args: Any) -> int:
    out = sys.stderr
    if not 10 <= args.top_k <= 100 or args.streams < 1:
        print("hacs eval rag: --top-k must be 10-100 and --streams at least 1", file=out)
        return 2
    try:
        report = asyncio.run(
            evaluate(
                Path(args.dataset),
                split=args.split,
                max_queries=args.max_queries,
                max_documents=args.max_documents,
                streams=args.streams,
                top_k=args.top_k,
                ignore_scope=args.ignore_scope,
                out=out,
            )
        )
    except DatasetError as exc:
        print(f"hacs eval rag: {exc}", file=out)
        return 2
    t = report.tally
    print(
        f"\n{report.documents:,} documents ({t.ingested:,} ingested, {t.rejected:,} rejected) "
        f"-> {t.chunks:,} chunks in {t.seconds / 60:,.1f} min; {report.queries:,} queries "
        f"in {report.retrieve_seconds:,.0f} s (top_k {args.top_k} chunks"
        f"{', scoped' if report.scoped else ''}; {report.short_runs} queries had fewer than "
        f"10 distinct documents)"
    )
    print(f"\n{'':8} {'nDCG@10':>8} {'Recall@10':>10}")
    print(f"{'rag':8} {report.figures['ndcg@10']:8.4f} {report.figures['recall@10']:10.4f}")
    if args.json:
        print(json.dumps(report.figures, separators=(", ", ": ")))
    return 0
