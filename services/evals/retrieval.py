"""`hacs eval retrieval`: a BEIR data set through the real indexing and search path.

A fresh platform (temporary data dir: SQLite, Milvus Lite, the shipped
model, or with --model DIR that model registered as the default), a fresh
tenant, the corpus written as Evidence records through
RecordService, indexed by the live indexer from the change log, then every
query of the split sent to SearchService three times: lexical only (BM25),
dense only, and hybrid with the shipped defaults. Prints nDCG@10 (graded
gains) and Recall@100 per row; with --json, one JSON object as the last line.
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

from hacs.records.v1 import record_pb2, record_service_pb2_grpc
from hacs.records.v1 import record_service_pb2 as rpb
from hacs.search.v1 import query_pb2, search_service_pb2_grpc
from hacs.search.v1 import search_service_pb2 as spb

from services.evals.platform import EvalPlatform as Platform
from services.evals.platform import register_default_model, running_platform
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
) -> dict[str, list[tuple[str, float]]]:
    """Ranked (doc id, score) per query for one retrieval mode."""
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
        results[query_id] = [(reverse[h.name.rsplit("/", 1)[1]], h.score) for h in reply.hits]
        _progress(progress, f"queries ({mode})", len(results), len(items), started)

    await asyncio.gather(*(one(q, t) for q, t in items))
    return results


def score(dataset: Dataset, runs: dict[str, list[tuple[str, float]]]) -> dict[str, float]:
    ndcg = [
        ndcg_at([d for d, _ in runs.get(q, [])], grades, 10) for q, grades in dataset.qrels.items()
    ]
    recall = [
        recall_at([d for d, _ in runs.get(q, [])], grades, 100)
        for q, grades in dataset.qrels.items()
    ]
    return {
        "ndcg@10": round(sum(ndcg) / len(ndcg), 4),
        "recall@100": round(sum(recall) / len(recall), 4),
    }


async def evaluate(
    directory: Path,
    *,
    split: str,
    max_queries: int,
    dump: Path | None,
    out: TextIO,
    model: Path | None = None,
) -> dict[str, dict[str, float]]:
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
            runs = {
                mode: await run_queries(platform, dataset, mode, top_k=depth, out=out)
                for mode in MODES
            }
    if dump is not None:
        payload = json.dumps({"split": split, "runs": runs, "qrels": dataset.qrels})
        await asyncio.to_thread(dump.write_text, payload)
        out.write(f"  candidates written to {dump}\n")
    return {mode: score(dataset, run) for mode, run in runs.items()}


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
        help="write every mode's ranked lists (depth 200) to FILE",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="embedding model directory to evaluate instead of the shipped default "
        "(e.g. the output of `hacs finetune`)",
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
            )
        )
    except Exception as exc:  # a bad data set is reported, not traced
        from services.tooling.beir import DatasetError

        if isinstance(exc, DatasetError):
            print(f"hacs eval retrieval: {exc}", file=sys.stderr)
            return 2
        raise
    print(f"\n{'':8} {'nDCG@10':>8} {'Recall@100':>11}")
    for mode, row in table.items():
        print(f"{mode:8} {row['ndcg@10']:8.4f} {row['recall@100']:11.4f}")
    if args.json:
        print(json.dumps(table, separators=(", ", ": ")))
    return 0
