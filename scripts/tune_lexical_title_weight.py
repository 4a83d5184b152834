"""Sweep the BM25 title weight (services/search/lexical.py TITLE_WEIGHTS) on a TRAIN split.

Indexes the corpus the way the records index does (title column + body whose
first line is the title) in an in-memory SQLite FTS5 table, ranks the split's
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
import sqlite3
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.evals.beir import load, ndcg_at, recall_at
from services.search.fusion import Fusion, fuse
from services.search.lexical import fts_query

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
    conn = sqlite3.connect(":memory:")
    conn.execute(
        "CREATE VIRTUAL TABLE fts USING fts5 "
        "(title, text, tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    ids = [d.id for d in data.corpus]
    conn.executemany(
        "INSERT INTO fts (rowid, title, text) VALUES (?, ?, ?)",
        (
            (i, d.title, "\n".join(p for p in (d.title, d.text) if p))
            for i, d in enumerate(data.corpus)
        ),
    )
    print(f"{len(ids)} documents, {len(qrels)} {dump['split']} queries")
    for weight in WEIGHTS:
        lexical: dict[str, list[tuple[str, float, dict[str, Any]]]] = {}
        for q in qrels:
            rows = conn.execute(
                "SELECT rowid, bm25(fts, ?, 1.0) AS s FROM fts WHERE fts MATCH ? "
                "ORDER BY s LIMIT 100",
                (weight, fts_query(data.queries[q])),
            ).fetchall()
            lexical[q] = [(ids[r], -s, NO_FIELDS) for r, s in rows]
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
