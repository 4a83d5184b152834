"""Sweep search's fusion settings, and the records' BM25 title weight, on TRAIN splits;
rank every setting by its worst set.

How the shipped defaults (DEFAULT_FUSION in services/kernel/retrieval/fusion.py,
TITLE_WEIGHTS in services/kernel/retrieval/lexical_store.py) are chosen: run the
real search path once per development set's train split, keeping each
retriever's ranked candidates and the plain components,

    hacs eval retrieval --dataset ../shared/data/medquad --split train \\
        --max-queries 1500 --baseline --dump-candidates /tmp/medquad-train.json
    hacs eval retrieval --dataset /work/devsets/consumer-qa --split train \\
        --baseline --dump-candidates /tmp/consumer-qa-train.json
    ...

then score every setting offline on all of them:

    .venv/bin/python scripts/tune_search_fusion.py /tmp/medquad-train.json \\
        /tmp/consumer-qa-train.json /tmp/kqa-train.json --title-weights 1,2,3,5

With --title-weights, each set's lexical list is ranked again for every weight
by the platform's own BM25 engine (services/kernel/retrieval/bm25_index.py) over
the corpus as the records index holds it (a title, and a body whose first line
is the title), for the text the query parser gives the lexical side; the
parser's filters are not applied (the development sets hold one kind of record).
A dump made before dumps named their data set takes it as DUMP=DATASET_DIR.

A setting's margin on a set is its hybrid nDCG@10 minus the best of the parts it
is made of: the platform's own dense and BM25 lists, and the plain components
(bm25s, the raw model) when the dump has them. Settings are ranked by their
smallest margin over the sets (a default must not lose to its own parts
anywhere), then by their mean nDCG@10. Never point this at a test split:
defaults must not be fitted to the figures they are reported with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kernel.retrieval.bm25_index import TermIndex
from services.kernel.retrieval.fusion import DEFAULT_FUSION, Fusion, fuse
from services.kernel.retrieval.lexical_store import TITLE_WEIGHTS
from services.kernel.retrieval.query_parser import QueryParser
from services.kernel.retrieval.terms import TERM_DTYPE, counts, decode, encode, query_terms
from services.tooling.beir import load, ndcg_at

Ranked = dict[str, list[tuple[str, float]]]  # query id -> [(document id, score)], best first
DEPTH = 200  # the deepest setting swept


@dataclass
class DevSet:
    name: str
    qrels: dict[str, dict[str, int]]
    dense: Ranked
    lexical: dict[float | None, Ranked]  # by title weight; None: the dump's own list
    parts: dict[str, float]  # nDCG@10 of each part the hybrid must beat (lexical: per weight)


def ndcg(qrels: dict[str, dict[str, int]], ranked: Ranked) -> float:
    scores = [ndcg_at([d for d, _ in ranked.get(q, [])], g, 10) for q, g in qrels.items()]
    return sum(scores) / len(scores)


def hybrid(dev: DevSet, lexical: Ranked, fusion: Fusion) -> float:
    total = 0.0
    for query, grades in dev.qrels.items():
        none: dict[str, Any] = {}
        dense = [(d, s, none) for d, s in dev.dense.get(query, [])[: fusion.depth]]
        words = [(d, s, none) for d, s in lexical.get(query, [])[: fusion.depth]]
        ranked = [c.pk for c in fuse(dense, words, fusion, limit=10)]
        total += ndcg_at(ranked, grades, 10)
    return total / len(dev.qrels)


def lexical_runs(
    dataset_dir: Path, split: str, queries: list[str], weights: list[float]
) -> dict[float | None, Ranked]:
    """Each query's BM25 list per title weight, from the platform's engine."""
    data = load(dataset_dir, split)
    ids = [d.id for d in data.corpus]
    vocab: dict[str, int] = {}
    blobs, lengths = [], []
    for d in data.corpus:
        term_counts, length = counts(d.title, "\n".join(p for p in (d.title, d.text) if p))
        blobs.append(encode({vocab.setdefault(t, len(vocab)): c for t, c in term_counts.items()}))
        lengths.append(length)
    records = decode(b"".join(blobs))
    per_doc = np.array([len(b) // TERM_DTYPE.itemsize for b in blobs])
    parser = QueryParser()
    words = {
        q: [
            vocab[t] for t in query_terms(parser.parse(data.queries[q]).expanded_text) if t in vocab
        ]
        for q in queries
    }
    out: dict[float | None, Ranked] = {}
    for weight in weights:
        index = TermIndex(weight)
        index.load(np.arange(len(ids)), np.array(lengths, np.float32), records, per_doc)
        out[weight] = {}
        for q in queries:
            top = index.top(words[q], DEPTH)
            out[weight][q] = [
                (ids[r], s) for r, s in zip(top.doc_ids.tolist(), top.scores.tolist(), strict=True)
            ]
    return out


def read_set(argument: str, weights: list[float]) -> DevSet:
    path, _, directory = argument.partition("=")
    dump = json.loads(Path(path).read_text())
    if dump.get("split") == "test":
        raise SystemExit(f"{path}: refusing to tune on a test split")
    runs, qrels = dump["runs"], dump["qrels"]

    def ranked(row: str) -> Ranked:
        return {q: [(str(d), float(s)) for d, s in hits] for q, hits in runs[row].items()}

    lexical: dict[float | None, Ranked] = {None: ranked("bm25")}
    if weights:
        where = directory or dump.get("dataset")
        if not where:
            raise SystemExit(f"{path}: name its data set as {path}=DATASET_DIR")
        lexical.update(lexical_runs(Path(where), dump["split"], list(qrels), weights))
    dense = ranked("dense")
    parts = {"dense": ndcg(qrels, dense)}
    parts.update(
        (row, ndcg(qrels, ranked(row))) for row in ("plain-bm25", "plain-dense") if row in runs
    )
    for weight, run in lexical.items():
        parts[f"bm25 x{weight}" if weight is not None else "bm25"] = ndcg(qrels, run)
    return DevSet(Path(path).name, qrels, dense, lexical, parts)


def settings() -> Iterator[Fusion]:
    for depth in (50, 100, 200):
        for normalization in ("minmax", "max"):
            for w in [x / 100 for x in range(30, 100, 5)]:
                yield Fusion(
                    method="weighted",
                    semantic_weight=w,
                    lexical_weight=round(1 - w, 2),
                    depth=depth,
                    normalization=normalization,
                )
        for k in (5, 10, 20, 30, 60, 100):
            for w in (0.5, 0.6, 0.7, 0.8, 0.9):
                yield Fusion(
                    method="rrf",
                    semantic_weight=w,
                    lexical_weight=round(1 - w, 2),
                    rrf_k=k,
                    depth=depth,
                )


def describe(weight: float | None, f: Fusion) -> str:
    title = f"title x{weight:<4g}" if weight is not None else "title (dump)"
    if f.method == "rrf":
        return f"{title} rrf k {f.rrf_k:3}     sem {f.semantic_weight:.2f} depth {f.depth}"
    return f"{title} weighted {f.normalization:6} sem {f.semantic_weight:.2f} depth {f.depth}"


def best_part(dev: DevSet, weight: float | None) -> float:
    lexical = f"bm25 x{weight}" if weight is not None else "bm25"
    return max(v for k, v in dev.parts.items() if not k.startswith("bm25") or k == lexical)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "candidates", nargs="+", help="one dump per train split (DUMP or DUMP=DATASET_DIR)"
    )
    parser.add_argument(
        "--title-weights", default="", help="comma-separated BM25 title weights to sweep too"
    )
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    weights = [float(w) for w in args.title_weights.split(",") if w.strip()]
    sets = [read_set(argument, weights) for argument in args.candidates]
    for dev in sets:
        print(
            f"{dev.name}: {len(dev.qrels)} queries; "
            + ", ".join(f"{row} {value:.4f}" for row, value in dev.parts.items())
        )
    results = []
    sweep: list[float | None] = [*weights] if weights else [None]
    for weight in sweep:
        for fusion in settings():
            scores = [hybrid(dev, dev.lexical[weight], fusion) for dev in sets]
            margins = [s - best_part(dev, weight) for s, dev in zip(scores, sets, strict=True)]
            results.append((min(margins), sum(scores) / len(scores), scores, weight, fusion))
    results.sort(key=lambda r: (-r[0], -r[1]))
    names = " ".join(f"{dev.name[:14]:>14}" for dev in sets)
    print(
        f"\nbest by worst margin over the best part, then mean nDCG@10:\n"
        f"  {'worst':>7} {'mean':>7} {names}  setting"
    )
    for worst, mean, scores, weight, fusion in results[: args.top]:
        per_set = " ".join(f"{s:14.4f}" for s in scores)
        print(f"  {worst:+7.4f} {mean:7.4f} {per_set}  {describe(weight, fusion)}")
    shipped = TITLE_WEIGHTS["records"] if weights else None
    for worst, mean, scores, weight, fusion in results:
        if fusion == DEFAULT_FUSION and weight == shipped:
            per_set = " ".join(f"{s:14.4f}" for s in scores)
            print(f"  shipped: {worst:+7.4f} {mean:7.4f} {per_set}  {describe(weight, fusion)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
