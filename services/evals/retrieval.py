"""`hacs eval retrieval`: a BEIR data set through the real indexing and search path.

A fresh platform (temporary data dir: SQLite, Milvus Lite, the shipped
model, or with --model DIR that model registered as the default), a fresh
tenant, the corpus written as Evidence records through
RecordService, indexed by the live indexer from the change log, then every
query of the split sent to SearchService three times: lexical only (BM25),
dense only, and hybrid with the shipped defaults. Prints nDCG@10 (graded
gains) and Recall@100 per row; with --json, one JSON object as the last line:
{"bm25": {"ndcg@10", "recall@100"}, "dense": {...}, "hybrid": {...},
"query_parser": {"queries", "as_written", "filtered", "words_removed"}, "refused_queries":
{"count"}} — questions Search refused (INVALID_ARGUMENT, e.g. over its length limit)
rank nothing and are counted; query_parser is what the query parser
(off in these searches, on for callers who set parse_query) would have done to
the questions: added a filter to how many, removed words from how many.

--baseline adds "plain-bm25" and "plain-dense" rows: the plain components of
hybrid search over the same documents (services/evals/baseline.py), so the
platform is always read against its own parts. --per-query FILE writes one JSON
line per question with each row's nDCG@10 and what the parser made of it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import grpc
from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import query_pb2, search_service_pb2_grpc
from hacs.search.v1 import search_service_pb2 as spb

from services.evals.baseline import plain_bm25, plain_dense
from services.evals.platform import EvalPlatform as Platform
from services.evals.platform import register_default_model, running_platform
from services.kernel.embedding.model_config import shipped_model_path
from services.kernel.records.names import ID_PATTERN
from services.tooling.beir import Dataset, load, ndcg_at, recall_at
from services.tooling.progress import Progress

MODES = {
    "bm25": spb.RETRIEVAL_MODE_LEXICAL,
    "dense": spb.RETRIEVAL_MODE_DENSE,
    "hybrid": spb.RETRIEVAL_MODE_HYBRID,
}
TENANT = "retrieval-eval"
BATCH = 500


def record_id(doc_id: str) -> str:
    return (
        doc_id
        if ID_PATTERN.match(doc_id)
        else "d-" + hashlib.sha1(doc_id.encode()).hexdigest()[:20]
    )


def _progress(progress: Progress, label: str, done: int, total: int, started: float) -> None:
    rate = done / max(time.monotonic() - started, 1e-6)
    progress.show(f"{label}: {done:,}/{total:,} ({rate:,.0f}/s)", final=done >= total)


async def load_corpus(platform: Platform, dataset: Dataset, out: TextIO) -> None:
    records = record_service_pb2_grpc.RecordServiceStub(platform.channel)
    started = time.monotonic()
    progress = Progress(out)
    total = len(dataset.corpus)
    for start in range(0, total, BATCH):
        batch = dataset.corpus[start : start + BATCH]
        requests = []
        for doc in batch:
            record = record_pb2.Record()
            record.evidence.title = doc.title
            record.evidence.content = doc.text
            requests.append(rpb.CreateRecordRequest(record_id=record_id(doc.id), record=record))
        await records.BatchCreateRecords(
            rpb.BatchCreateRecordsRequest(parent=platform.tenant, requests=requests),
            metadata=platform.token,
            timeout=300,
        )
        _progress(progress, "writing records", start + len(batch), total, started)


async def wait_indexed(platform: Platform, out: TextIO) -> None:
    search = search_service_pb2_grpc.SearchServiceStub(platform.channel)
    started = time.monotonic()
    progress = Progress(out)
    while True:
        status = await search.GetIndexStatus(
            spb.GetIndexStatusRequest(parent=platform.tenant), metadata=platform.token
        )
        _progress(
            progress,
            "indexing (change log)",
            status.indexed_sequence,
            status.head_sequence,
            started,
        )
        if status.indexed_sequence >= status.head_sequence:
            return
        await asyncio.sleep(1.0)


async def run_queries(
    platform: Platform,
    dataset: Dataset,
    mode: str,
    *,
    top_k: int,
    out: TextIO,
    hybrid: spb.HybridOptions | None = None,
    refused: dict[str, str] | None = None,
) -> dict[str, list[tuple[str, float]]]:
    """Ranked (doc id, score) per query for one retrieval mode. A question the platform
    refuses (INVALID_ARGUMENT: e.g. longer than the API takes) ranks nothing, and its
    reason goes into `refused`."""
    search = search_service_pb2_grpc.SearchServiceStub(platform.channel)
    reverse = {record_id(d.id): d.id for d in dataset.corpus}
    options = spb.HybridOptions()
    if hybrid is not None:
        options.CopyFrom(hybrid)
    options.mode = MODES[mode]
    results: dict[str, list[tuple[str, float]]] = {}
    started = time.monotonic()
    progress = Progress(out)
    items = list(dataset.queries.items())
    limit = asyncio.Semaphore(8)

    async def one(query_id: str, text: str) -> None:
        async with limit:
            try:
                reply = await search.Search(
                    spb.SearchRequest(
                        parent=platform.tenant,
                        query=text,
                        top_k=top_k,
                        filter=query_pb2.SearchFilter(
                            resource_types=[record_pb2.RESOURCE_TYPE_EVIDENCE]
                        ),
                        hybrid=options,
                        snippet_length=1,
                    ),
                    metadata=platform.token,
                    timeout=60,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                if refused is not None:
                    refused[query_id] = exc.details() or ""
                reply = spb.SearchResponse()
        results[query_id] = [(reverse[h.name.rsplit("/", 1)[1]], _raw(h, mode)) for h in reply.hits]
        _progress(progress, f"queries ({mode})", len(results), len(items), started)

    await asyncio.gather(*(one(q, t) for q, t in items))
    return results


def _raw(hit: spb.SearchHit, mode: str) -> float:
    """A single retriever's own score (cosine, BM25), not its normalised ranking score: the
    candidate dump is for fusing offline, which normalises again."""
    if mode == "dense" and hit.scores.HasField("dense"):
        return hit.scores.dense
    if mode == "bm25" and hit.scores.HasField("lexical"):
        return hit.scores.lexical
    return hit.score


def per_query_ndcg(dataset: Dataset, run: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    return {
        q: ndcg_at([d for d, _ in run.get(q, [])], grades, 10)
        for q, grades in dataset.qrels.items()
    }


def score(dataset: Dataset, runs: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    ndcg = list(per_query_ndcg(dataset, runs).values())
    recall = [
        recall_at([d for d, _ in runs.get(q, [])], grades, 100)
        for q, grades in dataset.qrels.items()
    ]
    return {
        "ndcg@10": round(sum(ndcg) / len(ndcg), 4),
        "recall@100": round(sum(recall) / len(recall), 4),
    }


async def parse_queries(platform: Platform, dataset: Dataset) -> dict[str, query_pb2.ParsedQuery]:
    """What the query parser makes of each question (ParseQuery: nothing is searched)."""
    search = search_service_pb2_grpc.SearchServiceStub(platform.channel)
    limit = asyncio.Semaphore(8)

    async def one(text: str) -> query_pb2.ParsedQuery:
        async with limit:
            try:
                reply = await search.ParseQuery(
                    spb.ParseQueryRequest(parent=platform.tenant, query=text),
                    metadata=platform.token,
                    timeout=60,
                )
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                    raise
                return query_pb2.ParsedQuery(query=text, text=text)  # refused: nothing done
        return reply.parsed_query

    ids = list(dataset.queries)
    parsed = await asyncio.gather(*(one(dataset.queries[q]) for q in ids))
    return dict(zip(ids, parsed, strict=True))


def _words(text: str) -> list[str]:
    return [w for w in "".join(c if c.isalnum() else " " for c in text.lower()).split()]


def parser_summary(parsed: dict[str, query_pb2.ParsedQuery]) -> dict[str, int]:
    """How many questions the parser would filter, and how many it would shorten."""
    return {
        "queries": len(parsed),
        "as_written": sum(1 for p in parsed.values() if p.as_written),
        "filtered": sum(1 for p in parsed.values() if len(p.extracted_filters)),
        "words_removed": sum(
            1 for p in parsed.values() if len(_words(p.text)) < len(_words(p.query))
        ),
    }


def write_per_query(
    path: Path,
    dataset: Dataset,
    runs: dict[str, dict[str, list[tuple[str, float]]]],
    parsed: dict[str, query_pb2.ParsedQuery],
) -> None:
    by_row = {row: per_query_ndcg(dataset, run) for row, run in runs.items()}
    with path.open("w") as f:
        for query_id in dataset.qrels:
            p = parsed[query_id]
            line = {
                "query_id": query_id,
                "query": dataset.queries[query_id],
                "ndcg@10": {row: round(values[query_id], 4) for row, values in by_row.items()},
                "parsed_text": p.text,
                "parsed_filters": [
                    {"field": f.field, "value": f.value, "source_text": f.source_text}
                    for f in p.extracted_filters
                ],
            }
            f.write(json.dumps(line) + "\n")


async def evaluate(
    directory: Path,
    *,
    split: str,
    max_queries: int,
    dump: Path | None,
    out: TextIO,
    model: Path | None = None,
    baseline: bool = False,
    per_query: Path | None = None,
) -> dict[str, dict[str, Any]]:
    dataset = load(directory, split)
    if max_queries:
        keep = sorted(dataset.queries)[:max_queries]
        dataset = Dataset(
            dataset.name,
            dataset.corpus,
            {q: dataset.queries[q] for q in keep},
            {q: dataset.qrels[q] for q in keep},
            dataset.duplicate_documents,
        )
    out.write(
        f"{dataset.name}/{split}: {len(dataset.corpus):,} documents, "
        f"{len(dataset.queries):,} queries\n"
    )
    if dataset.duplicate_documents:
        out.write(
            f"  note: {dataset.duplicate_documents} corpus lines repeat an earlier _id "
            "and were skipped\n"
        )
    with tempfile.TemporaryDirectory(prefix="hacs-eval-") as data_dir:
        if model is not None:
            name = await register_default_model(Path(data_dir), model)
            out.write(f"  embedding model: {model} (registered as {name}, the default)\n")
        async with running_platform(
            Path(data_dir),
            tenant_id=TENANT,
            display_name="Retrieval evaluation",
            services="tenant,records,embedding,search",
        ) as platform:
            await load_corpus(platform, dataset, out)
            await wait_indexed(platform, out)
            depth = 200 if dump else 100
            refused: dict[str, str] = {}
            runs = {
                mode: await run_queries(
                    platform, dataset, mode, top_k=depth, out=out, refused=refused
                )
                for mode in MODES
            }
            if refused:
                first = next(iter(refused.items()))
                out.write(
                    f"  {len(refused)} questions refused by Search (they rank nothing), "
                    f"e.g. {first[0]}: {first[1]}\n"
                )
            parsed = await parse_queries(platform, dataset)
    if baseline:
        progress = Progress(out)
        started = time.monotonic()

        def show(label: str, done: int, total: int) -> None:
            _progress(progress, label, done, total, started)

        out.write("  plain-bm25: bm25s over title + text\n")
        runs["plain-bm25"] = await asyncio.to_thread(plain_bm25, dataset, depth)
        runs["plain-dense"] = await asyncio.to_thread(
            plain_dense, dataset, model or shipped_model_path(), depth, show
        )
    if per_query is not None:
        await asyncio.to_thread(write_per_query, per_query, dataset, runs, parsed)
        out.write(f"  per-query nDCG@10 written to {per_query}\n")
    if dump is not None:
        where = await asyncio.to_thread(directory.resolve)
        payload = json.dumps(
            {
                "dataset": str(where),
                "split": split,
                "runs": runs,
                "qrels": dataset.qrels,
            }
        )
        await asyncio.to_thread(dump.write_text, payload)
        out.write(f"  candidates written to {dump}\n")
    table: dict[str, dict[str, Any]] = {row: score(dataset, run) for row, run in runs.items()}
    table["query_parser"] = parser_summary(parsed)
    table["refused_queries"] = {"count": len(refused)}
    return table


HELP = "nDCG@10 / Recall@100 of bm25, dense and hybrid search on a BEIR data set"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset", required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/"
    )
    parser.add_argument("--split", default="test", help="qrels split to evaluate (default: test)")
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object as the last line"
    )
    parser.add_argument(
        "--max-queries", type=int, default=0, help="evaluate only the first N queries"
    )
    parser.add_argument(
        "--dump-candidates",
        type=Path,
        default=None,
        help="write every row's ranked lists (depth 200) to FILE, each hit with its "
        "retriever's own score (cosine, BM25; the fused score for hybrid)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="embedding model directory to evaluate instead of the shipped default "
        "(e.g. the output of `hacs finetune`)",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="also run the plain components (bm25s, and the raw model over title + text) "
        "as rows plain-bm25 and plain-dense",
    )
    parser.add_argument(
        "--per-query",
        type=Path,
        default=None,
        metavar="FILE",
        help="write each question's nDCG@10 per row, and its parse, as JSON lines to FILE",
    )


def main(args: Any) -> int:
    out = sys.stderr
    if args.model is not None:  # a model that cannot load is refused before any work
        from services.kernel.embedding.model_config import ModelLoadError, read_model_config

        try:
            read_model_config("models/evaluated", args.model)
        except ModelLoadError as exc:
            print(f"hacs eval retrieval: --model: {exc}", file=sys.stderr)
            return 2
    try:
        table = asyncio.run(
            evaluate(
                Path(args.dataset),
                split=args.split,
                max_queries=args.max_queries,
                dump=args.dump_candidates,
                out=out,
                model=args.model.resolve() if args.model else None,
                baseline=args.baseline,
                per_query=args.per_query,
            )
        )
    except Exception as exc:  # a bad data set is reported, not traced
        from services.tooling.beir import DatasetError

        if isinstance(exc, DatasetError):
            print(f"hacs eval retrieval: {exc}", file=sys.stderr)
            return 2
        raise
    print(f"\n{'':11} {'nDCG@10':>8} {'Recall@100':>11}")
    for mode, row in table.items():
        if "ndcg@10" in row:
            print(f"{mode:11} {row['ndcg@10']:8.4f} {row['recall@100']:11.4f}")
    parse = table["query_parser"]
    print(
        f"query parser (off above): of {parse['queries']} questions it would leave "
        f"{parse['as_written']} as written, filter {parse['filtered']} and remove words "
        f"from {parse['words_removed']}"
    )
    if args.json:
        print(json.dumps(table, separators=(", ", ": ")))
    return 0
