"""Fits the relevance calibration (relevance.py) on labelled query/passage pairs.

    .venv/bin/python -m services.tooling.fit_relevance --dataset ../shared/data/medquad

On a BEIR data set's *train* split: a seeded sample of queries, their
relevant documents and random distractor documents are chunked with the
default chunking and the shipped model's tokenizer, embedded, and indexed in
a temporary Milvus Lite with the SQLite BM25 store beside it (the embedded mode's
engines); each query then gets its candidates through
`candidates.hybrid_candidates` — the code Retrieve runs — and each
(query, chunk) pair is labelled relevant when the chunk comes from a
document the qrels mark relevant. A logistic regression (IRLS, small L2) on
70% of the queries gives the coefficients; the other 30% give the
reliability table, the Brier score and what `min_relevance=0.5` keeps.
Prints the coefficients to paste into relevance.py and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
from pathlib import Path

import numpy as np

from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.model_config import read_model_config, shipped_model_path
from services.kernel.embedding.registry import DEFAULT_MODEL
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.lexical_store import SqliteLexical
from services.kernel.retrieval.vector_index import KNOWLEDGE, IndexDoc, VectorIndex
from services.rag.candidates import hybrid_candidates
from services.rag.chunking import ChunkingSettings, chunk_document
from services.rag.parsing import ParsedDocument
from services.rag.relevance import Features
from services.rag.tokens import HuggingFaceTokens
from services.tooling.beir import load

TENANT = "relevance-fit"


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3) -> np.ndarray:
    """Weights (bias first) of a logistic regression by iteratively reweighted least squares."""
    design = np.hstack([np.ones((len(x), 1)), x])
    weights = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1 / (1 + np.exp(-(design @ weights)))
        gradient = design.T @ (p - y) + l2 * weights
        hessian = (design * (p * (1 - p))[:, None]).T @ design + l2 * np.eye(len(weights))
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.abs(step).max() < 1e-8:
            break
    return weights


async def pairs(
    dataset: Path, queries: int, distractors: int, seed: int
) -> list[tuple[str, Features, bool]]:
    data = load(dataset, "train")
    rng = random.Random(seed)
    chosen = rng.sample(sorted(data.queries), queries)
    relevant = {q: {d for d, g in data.qrels[q].items() if g > 0} for q in chosen}
    wanted = set().union(*relevant.values())
    others = [d for d in data.corpus if d.id not in wanted]
    corpus = [d for d in data.corpus if d.id in wanted] + rng.sample(others, distractors)
    config = read_model_config(DEFAULT_MODEL, shipped_model_path())
    encoder = Encoder(config, "cpu")
    tokens = HuggingFaceTokens(config.path, config.max_length)
    settings = ChunkingSettings()
    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex(str(Path(tmp) / "milvus.db"), config.dimension)
        await index.connect()
        lexical = SqliteLexical(Path(tmp) / "lexical.db")  # the embedded mode's engine
        for start in range(0, len(corpus), 200):
            docs = []
            batch = corpus[start : start + 200]
            chunked = [
                (d, c)
                for d in batch
                for c in chunk_document(ParsedDocument(d.text), d.title, settings, tokens)
            ]
            vectors = encoder.encode(
                [c.embed_text for _, c in chunked], max_length=config.max_length, normalize=True
            ).vectors
            for (d, c), v in zip(chunked, vectors, strict=True):
                pk = f"{d.id}#{c.index}"
                docs.append(IndexDoc(pk, TENANT, pk, "Chunk", c.embed_text, v, group="fit"))
            await index.upsert(KNOWLEDGE, docs)
            await lexical.upsert(KNOWLEDGE, docs)
            print(f"indexed {start + len(batch)}/{len(corpus)} documents", flush=True)
        await index.flush(KNOWLEDGE)
        found: list[tuple[str, Features, bool]] = []
        for q in chosen:
            vector = encoder.encode([data.queries[q]], max_length=config.max_length,
                                    normalize=True).vectors[0]  # fmt: skip
            candidates = await hybrid_candidates(
                index, lexical, TENANT, data.queries[q], vector, "", FilterSpec(), 50
            )
            for s in candidates:
                found.append((q, s.features, s.pk.split("#")[0] in relevant[q]))
        await index.close()
        lexical.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--distractors", type=int, default=2500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    found = asyncio.run(pairs(args.dataset, args.queries, args.distractors, args.seed))
    query_ids = sorted({q for q, _, _ in found})
    random.Random(args.seed).shuffle(query_ids)
    held_out = set(query_ids[: len(query_ids) * 3 // 10])
    x = np.array([[f.dense, f.lexical, f.coverage] for _, f, _ in found])
    y = np.array([1.0 if label else 0.0 for _, _, label in found])
    fit = np.array([q not in held_out for q, _, _ in found])
    w = fit_logistic(x[fit], y[fit])
    p = 1 / (1 + np.exp(-(np.hstack([np.ones((len(x), 1)), x]) @ w)))
    check, labels = p[~fit], y[~fit]
    print(f"\npairs: {fit.sum()} to fit, {(~fit).sum()} to check; positives {y.mean():.3f}")
    print("reliability on the held-out queries (predicted -> observed):")
    for low in np.arange(0, 1, 0.1):
        inside = (check >= low) & (check < low + 0.1)
        if inside.any():
            print(f"  [{low:.1f}, {low + 0.1:.1f}): n={inside.sum():6d}  predicted "
                  f"{check[inside].mean():.3f}  observed {labels[inside].mean():.3f}")  # fmt: skip
    kept = check >= 0.5
    precision = labels[kept].mean() if kept.any() else 0.0
    recall = labels[kept].sum() / max(labels.sum(), 1)
    brier = float(np.mean((check - labels) ** 2))
    print(f"min_relevance=0.5 keeps {kept.mean():.3f} of candidates: precision {precision:.3f}, "
          f"recall {recall:.3f}; Brier {brier:.4f}")  # fmt: skip
    print(
        f"\nB0 = {w[0]:.4f}\nB_DENSE = {w[1]:.4f}\nB_LEXICAL = {w[2]:.4f}\nB_COVERAGE = {w[3]:.4f}"
    )
    print(json.dumps({"b0": w[0], "b_dense": w[1], "b_lexical": w[2], "b_coverage": w[3],
                      "brier": brier, "precision_at_0.5": float(precision),
                      "recall_at_0.5": float(recall), "queries": args.queries,
                      "distractors": args.distractors, "seed": args.seed}))  # fmt: skip


if __name__ == "__main__":
    main()
