"""Sweep the fusion settings on TRAIN splits' candidate lists; rank them by their worst set.

How the shipped fusion defaults (services/kernel/retrieval/fusion.py DEFAULT_FUSION)
are chosen: run the real search path once per development set's train split,
keeping each retriever's ranked candidates,

    hacs eval retrieval --dataset ../shared/data/medquad --split train \\
        --max-queries 1500 --dump-candidates /tmp/medquad-train.json
    hacs eval retrieval --dataset /work/devsets/consumer-qa --split train \\
        --dump-candidates /tmp/consumer-qa-train.json
    ...

then score every fusion setting offline on all of them:

    .venv/bin/python scripts/tune_search_fusion.py /tmp/medquad-train.json \\
        /tmp/consumer-qa-train.json /tmp/kqa-train.json

A setting's margin on a set is its hybrid nDCG@10 minus the better of the two
lists it fuses; settings are ranked by their smallest margin over the sets (a
default must not lose to its own parts anywhere), then by their mean nDCG@10.
Never point this at a test split: defaults must not be fitted to the figures
they are reported with.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kernel.retrieval.fusion import Fusion, fuse
from services.tooling.beir import ndcg_at

Runs = dict[str, dict[str, list[list[Any]]]]


def _listed(ranked: list[list[Any]], depth: int) -> list[tuple[str, float, dict[str, Any]]]:
    return [(str(d), float(s), {}) for d, s in ranked[:depth]]


def evaluate(runs: Runs, qrels: dict[str, dict[str, int]], fusion: Fusion) -> float:
    total = 0.0
    for query, grades in qrels.items():
        dense = _listed(runs["dense"].get(query, []), fusion.depth)
        lexical = _listed(runs["bm25"].get(query, []), fusion.depth)
        ranked = [c.pk for c in fuse(dense, lexical, fusion, limit=10)]
        total += ndcg_at(ranked, grades, 10)
    return total / len(qrels)


def single(runs: Runs, qrels: dict[str, dict[str, int]], row: str) -> float:
    scores = [ndcg_at([d for d, _ in runs[row].get(q, [])], g, 10) for q, g in qrels.items()]
    return sum(scores) / len(scores)


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


def describe(f: Fusion) -> str:
    if f.method == "rrf":
        return f"rrf k {f.rrf_k:3}     sem {f.semantic_weight:.2f} depth {f.depth}"
    return f"weighted {f.normalization:6} sem {f.semantic_weight:.2f} depth {f.depth}"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("candidates", type=Path, nargs="+", help="one dump per train split")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    sets = []
    for path in args.candidates:
        data = json.loads(path.read_text())
        if data.get("split") == "test":
            print(f"{path}: refusing to tune on a test split", file=sys.stderr)
            return 2
        runs, qrels = data["runs"], data["qrels"]
        parts = {row: single(runs, qrels, row) for row in ("bm25", "dense")}
        plain = {
            row: single(runs, qrels, row) for row in ("plain-bm25", "plain-dense") if row in runs
        }
        print(
            f"{path.name}: {len(qrels)} queries; "
            + ", ".join(f"{row} {value:.4f}" for row, value in {**parts, **plain}.items())
        )
        sets.append((path.name, runs, qrels, max(parts.values())))
    results = []
    for fusion in settings():
        scores = [evaluate(runs, qrels, fusion) for _, runs, qrels, _ in sets]
        margins = [s - best for s, (_, _, _, best) in zip(scores, sets, strict=True)]
        results.append((min(margins), sum(scores) / len(scores), scores, fusion))
    results.sort(key=lambda r: (-r[0], -r[1]))
    names = " ".join(f"{name[:14]:>14}" for name, _, _, _ in sets)
    print(
        f"\nbest by worst margin over the better part, then mean nDCG@10:\n"
        f"  {'worst':>7} {'mean':>7} {names}  setting"
    )
    for worst, mean, scores, fusion in results[: args.top]:
        per_set = " ".join(f"{s:14.4f}" for s in scores)
        print(f"  {worst:+7.4f} {mean:7.4f} {per_set}  {describe(fusion)}")
    default = Fusion()
    for worst, mean, scores, fusion in results:
        if fusion == default:
            per_set = " ".join(f"{s:14.4f}" for s in scores)
            print(f"  shipped: {worst:+7.4f} {mean:7.4f} {per_set}  {describe(fusion)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
