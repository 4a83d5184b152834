"""Consolidation planning time for 1,000 and 100,000 memory blocks, embeddings already computed.

What is measured: the domain code a Consolidate run executes between loading
the memories and writing the groups (services/memory/consolidation.py):

1. `Comparer` — every block's text read (tokens, facts, entities: text.py,
   facts.py) and the IDF table;
2. `plan` per chunk of partitions (agent, patient, memory type), as
   Consolidator.run calls it: blockwise cosine matrix products, the fact
   check of every pair above the similarity threshold, lexical overlap,
   greedy group growth with the cross-pair checks;
3. `merge` of every group (the merged record with its provenance).

The process's garbage collector is tuned as a server's is
(services/common/runtime/gc_tuning.py). Not included: reading the records
and vectors from SQLite and Milvus, writing the merged groups, gRPC. The
vectors are the shipped model's (all-MiniLM-L6-v2) vectors of each block's
canonical wording, computed once before timing.

Data: the labelled sets in tests/data/memory (generated clinical facts with
duplicates and contradictions, 36 patients per set). 1,000 blocks are the
first 1,000 of train + test; 100,000 are those 1,000 copied 100 times under
new patient ids (the copies reuse the vectors: embedding 100,000 texts on
two CPU cores takes long, and planning never compares across patients, so
each copy costs what a new patient with such memories would).

    .venv/bin/python bench/memory_consolidation.py
    .venv/bin/python bench/memory_consolidation.py --sizes 1000 --repeat 5 --json /tmp/c.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.runtime.gc_tuning import tune_garbage_collection
from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.model_config import read_model_config, shipped_model_path
from services.memory.blocks import TYPES_BY_NAME, embedding_text, patient_id
from services.memory.consolidation import chunk_partitions
from services.memory.duplicates import Comparer, Item, Plan, Thresholds, partitions, plan
from services.memory.merging import merge

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "memory"
SETS = ("consolidation_train.jsonl", "consolidation_test.jsonl")
BASE_SIZE = 1000
NOW = datetime(2025, 1, 1, tzinfo=UTC)


def base_records() -> list[record_pb2.Record]:
    rows = [json.loads(line) for name in SETS for line in (DATA / name).open() if line.strip()]
    records = []
    for row in rows[:BASE_SIZE]:
        record = record_pb2.Record(name=f"tenants/bench/memoryBlocks/{row['id']}")
        block = record.memory_block
        block.memory_type = TYPES_BY_NAME[row.get("memory_type") or "episodic"]  # type: ignore[assignment]
        block.content = row["content"]
        block.agent = f"tenants/bench/actors/{row.get('agent') or 'agent'}"
        block.patient = f"tenants/bench/patients/{row['patient']}"
        block.importance_score = 0.5
        block.confidence_score = 0.8
        record.create_time.FromDatetime(NOW)
        record.version = 1
        records.append(record)
    return records


def embed(records: list[record_pb2.Record]) -> np.ndarray:
    config = read_model_config("models/bench", shipped_model_path())
    encoder = Encoder(config, "cpu")
    texts = [embedding_text(r.memory_block) for r in records]
    return encoder.encode(texts, max_length=config.max_length, normalize=True).vectors


def scaled(
    records: list[record_pb2.Record], vectors: np.ndarray, size: int
) -> tuple[list[record_pb2.Record], np.ndarray]:
    """`size` blocks: copies of the base under new patient ids, vectors reused."""
    copies = -(-size // len(records))
    out: list[record_pb2.Record] = []
    for copy in range(copies):
        for record in records:
            clone = record_pb2.Record()
            clone.CopyFrom(record)
            if copy:
                clone.name = f"{record.name}-c{copy}"
                clone.memory_block.patient = f"{record.memory_block.patient}-c{copy}"
            out.append(clone)
    return out[:size], np.tile(vectors, (copies, 1))[:size]


def plan_all(
    records: list[record_pb2.Record], vectors: np.ndarray, thresholds: Thresholds
) -> dict[str, Any]:
    """One planning pass, timed by stage (what Consolidator.run does without I/O)."""
    started = time.perf_counter()
    items = [
        Item(
            r.name,
            (r.memory_block.agent, patient_id(r.memory_block), str(r.memory_block.memory_type)),
            r.memory_block.content,
        )
        for r in records
    ]
    comparer = Comparer(items, vectors)
    analysed = time.perf_counter()
    found = Plan()
    for chunk in chunk_partitions(partitions(items)):
        part = plan(comparer, thresholds, chunk)
        found.groups += part.groups
        found.contradictions += part.contradictions
        found.candidate_pairs += part.candidate_pairs
    planned = time.perf_counter()
    merged = [
        merge([records[i] for i in g.members], NOW, [comparer.reading(i) for i in g.members])
        for g in found.groups
    ]
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "analyse_s": analysed - started,
        "pairs_and_groups_s": planned - analysed,
        "merge_s": done - planned,
        "groups": len(found.groups),
        "merged_blocks": sum(len(g.members) for g in found.groups),
        "contradictions": len(found.contradictions),
        "candidate_pairs": found.candidate_pairs,
        "partitions": len(partitions(items)),
        "merged_records": len(merged),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated block counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="write figures and parameters")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    thresholds = Thresholds()
    base = base_records()
    tune_garbage_collection()  # as every `hacs serve` process does once started
    started = time.perf_counter()
    vectors = embed(base)
    embed_s = time.perf_counter() - started
    parameters = {
        "thresholds": vars(thresholds),
        "base_blocks": len(base),
        "embedding": "all-MiniLM-L6-v2 (shipped), canonical wording, computed once "
        f"({embed_s:.1f} s, not timed)",
        "repeat": args.repeat,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    print(f"parameters: {json.dumps(parameters)}")
    results = []
    for size in sizes:
        records, matrix = scaled(base, vectors, size)
        runs = [plan_all(records, matrix, thresholds) for _ in range(max(1, args.repeat))]
        median = statistics.median(r["seconds"] for r in runs)
        row = {**min(runs, key=lambda r: abs(r["seconds"] - median)), "blocks": size}
        row["seconds_median"] = median
        row["seconds_runs"] = [round(r["seconds"], 4) for r in runs]
        results.append(row)
        print(
            f"consolidation plan, {size:>7,} blocks: {median * 1000:9.1f} ms median of "
            f"{len(runs)} (analyse {row['analyse_s'] * 1000:.0f} ms, pairs+groups "
            f"{row['pairs_and_groups_s'] * 1000:.0f} ms, merge {row['merge_s'] * 1000:.0f} ms; "
            f"{row['partitions']:,} partitions, {row['groups']:,} groups, "
            f"{row['contradictions']:,} contradictions)"
        )
    if args.json is not None:
        args.json.write_text(json.dumps({"parameters": parameters, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
