"""Sweep the BM25 title weight (TITLE_WEIGHTS in services/kernel/retrieval/lexical_store.py)
on a TRAIN split.

Indexes the corpus the way the records index does (title + body whose first
line is the title) in the service's in-memory BM25 index, ranks the split's
queries for each title weight, and fuses each ranking with the dense
candidates of a candidate dump (see scripts/tune_search_fusion.py for how to
make one):

    .venv/bin/python scripts/tune_lexical_title_weight.py \\
        ../shared/data/medquad /tmp/train-candidates.json

Refuses a test split: the weight must not be fitted to the figures it is
reported with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kernel.retrieval.bm25_index import TermIndex
from services.kernel.retrieval.fusion import Fusion, fuse
from services.kernel.retrieval.terms import TERM_DTYPE, counts, decode, encode, query_terms
from services.tooling.beir import load, ndcg_at, recall_at

WEIGHTS = (1, 2, 3, 5, 8, 12)
SEMANTIC = (0.5, 0.6, 0.7)
NO_FIELDS: dict[str, Any] = {}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("dataset", type=Path)
    parser.add_argument("candidates", type=Path)
    args = parser.parse_args()
    dump = json.loads(args.candidates.read_text())
    if dump.get("split") == "test":
        print("refusing to tune on a test split", file=sys.stderr)
        return 2
    data = load(args.dataset, dump["split"])
    qrels = dump["qrels"]
    dense_runs = dump["runs"]["dense"]
    ids = [d.id for d in data.corpus]
    vocab: dict[str, int] = {}
    blobs, lengths = [], []
    for d in data.corpus:
        term_counts, length = counts(d.title, "\n".join(p for p in (d.title, d.text) if p))
        blobs.append(encode({vocab.setdefault(t, len(vocab)): c for t, c in term_counts.items()}))
        lengths.append(length)
    records = decode(b"".join(blobs))
    per_doc = np.array([len(b) // TERM_DTYPE.itemsize for b in blobs])
    print(f"{len(ids)} documents, {len(qrels)} {dump['split']} queries")
    for weight in WEIGHTS:
        index = TermIndex(weight)
        index.load(np.arange(len(ids)), np.array(lengths, np.float32), records, per_doc)
        lexical: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}
        for q in qrels:
            words = [vocab[t] for t in query_terms(data.queries[q]) if t in vocab]
            top = index.top(words, 100)
            lexical[q] = [
                (ids[r], s, NO_FIELDS)
                for r, s in zip(top.doc_ids.tolist(), top.scores.tolist(), strict=True)
            ]
        row = [f"title x{weight:<3}"]
        n = sum(ndcg_at([d for d, _, _ in lexical[q]], g, 10) for q, g in qrels.items())
        row.append(f"bm25 {n / len(qrels):.4f}")
        for w in SEMANTIC:
            fusion = Fusion(
                method="weighted", semantic_weight=w, lexical_weight=round(1 - w, 2), depth=100
            )
            n = r = 0.0
            for q, g in qrels.items():
                dense = [(str(d), float(s), NO_FIELDS) for d, s in dense_runs.get(q, [])][:100]
                ranked = [c.pk for c in fuse(dense, lexical[q], fusion)]
                n += ndcg_at(ranked, g, 10)
                r += recall_at(ranked, g, 100)
            row.append(f"hybrid@{w} {n / len(qrels):.4f}/{r / len(qrels):.4f}")
        print("  ".join(row), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
