"""Sweep the fusion settings on a TRAIN split's candidate lists; prints the best ones.

How the shipped fusion defaults (services/kernel/retrieval/fusion.py DEFAULT_FUSION)
were chosen: run the real search path on the train split once, keeping each
retriever's ranked candidates,

    hacs eval retrieval --dataset ../shared/data/medquad --split train \\
        --max-queries 1500 --dump-candidates /tmp/train-candidates.json

then score every fusion setting offline on those lists:

    .venv/bin/python scripts/tune_search_fusion.py /tmp/train-candidates.json

Never point this at a test split: the defaults must not be fitted to the
figures they are reported with.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kernel.retrieval.fusion import Fusion, fuse
from services.tooling.beir import ndcg_at, recall_at


def evaluate(
    runs: dict[str, dict[str, list[list[object]]]], qrels: dict[str, dict[str, int]], fusion: Fusion
) -> tuple[float, float]:
    ndcg = recall = 0.0
    for query, grades in qrels.items():
        dense = [(str(d), float(s), {}) for d, s in runs["dense"].get(query, [])][: fusion.depth]
        lexical = [(str(d), float(s), {}) for d, s in runs["bm25"].get(query, [])][: fusion.depth]
        ranked = [c.pk for c in fuse(dense, lexical, fusion)]
        ndcg += ndcg_at(ranked, grades, 10)
        recall += recall_at(ranked, grades, 100)
    return ndcg / len(qrels), recall / len(qrels)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("candidates", type=Path)
    args = parser.parse_args()
    data = json.loads(args.candidates.read_text())
    if data.get("split") == "test":
        print("refusing to tune on a test split", file=sys.stderr)
        return 2
    runs, qrels = data["runs"], data["qrels"]
    for mode in ("bm25", "dense"):
        scores = [ndcg_at([d for d, _ in runs[mode].get(q, [])], g, 10) for q, g in qrels.items()]
        print(f"{mode:8} nDCG@10 {sum(scores) / len(scores):.4f}")
    results = []
    for depth in (50, 100, 200):
        for w in [x / 100 for x in range(30, 100, 5)]:
            fusion = Fusion(
                method="weighted", semantic_weight=w, lexical_weight=round(1 - w, 2), depth=depth
            )
            results.append((*evaluate(runs, qrels, fusion), fusion))
        for k in (5, 10, 20, 30, 60, 100):
            for w in (0.5, 0.6, 0.7, 0.8, 0.9):
                fusion = Fusion(
                    method="rrf",
                    semantic_weight=w,
                    lexical_weight=round(1 - w, 2),
                    rrf_k=k,
                    depth=depth,
                )
                results.append((*evaluate(runs, qrels, fusion), fusion))
    results.sort(key=lambda r: -r[0])
    print(f"\n{len(qrels)} train queries; best fusion settings by nDCG@10:")
    for ndcg, recall, f in results[:15]:
        print(
            f"  nDCG@10 {ndcg:.4f}  R@100 {recall:.4f}  {f.method:8} sem {f.semantic_weight:.2f} "
            f"lex {f.lexical_weight:.2f} k {f.rrf_k:3} depth {f.depth}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
