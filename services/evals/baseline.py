"""The plain parts of hybrid search, run beside the platform (`hacs eval retrieval --baseline`).

Hybrid search is a lexical and a dense ranking fused; a report that shows the
platform alone cannot tell whether its parsing, rendering, analysers and fusion
add anything. These are the two parts with nothing of HACS in them, over the
same documents and questions:

* plain-bm25: bm25s (Lucene's BM25, k1 1.5, b 0.75), lower-cased word tokens,
  English stopwords, no stemming, over "title text";
* plain-dense: the embedding model evaluated (the shipped one, or --model),
  float32, mean- or CLS-pooled as its config says, L2-normalised, cosine over
  "title text" truncated at the model's maximum length; the question as it is,
  with no prefix and no parsing.

Both return the top `depth` documents per question, scored, best first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from services.tooling.beir import Dataset

Runs = dict[str, list[tuple[str, float]]]
Progress = Callable[[str, int, int], None]


def _document_text(title: str, text: str) -> str:
    return f"{title} {text}".strip()


def plain_bm25(dataset: Dataset, depth: int) -> Runs:
    import bm25s

    ids = [doc.id for doc in dataset.corpus]
    corpus = bm25s.tokenize(
        [_document_text(d.title, d.text) for d in dataset.corpus],
        stopwords="en",
        show_progress=False,
    )
    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    runs: Runs = {}
    for query_id, text in dataset.queries.items():
        # Each word as often as the question says it (as bm25s's own retrieve scores
        # it); words no document has score nothing, and a question of only such
        # words gets no hits.
        words = bm25s.tokenize([text], stopwords="en", return_ids=False, show_progress=False)[0]
        scores = retriever.get_scores(list(words))
        runs[query_id] = [(ids[i], float(scores[i])) for i in _top(scores, depth) if scores[i] > 0]
    return runs


def plain_dense(dataset: Dataset, model: Path, depth: int, progress: Progress) -> Runs:
    from services.kernel.embedding.encoder import Encoder
    from services.kernel.embedding.model_config import read_model_config

    config = read_model_config("models/plain", model)
    encoder = Encoder(config, device="cpu", precision="float32")
    documents = encoder.encode(
        [_document_text(d.title, d.text) for d in dataset.corpus],
        max_length=config.max_length,
        normalize=True,
        progress=lambda done, total: progress("plain-dense: documents", done, total),
    ).vectors
    query_ids = list(dataset.queries)
    questions = encoder.encode(
        [dataset.queries[q] for q in query_ids], max_length=config.max_length, normalize=True
    ).vectors
    runs: Runs = {}
    for row, query_id in enumerate(query_ids):
        scores = documents @ questions[row]
        runs[query_id] = [(dataset.corpus[i].id, float(scores[i])) for i in _top(scores, depth)]
    return runs


def _top(scores: np.ndarray, depth: int) -> list[int]:
    """Indices of the `depth` best scores, best first (ties by position)."""
    depth = min(depth, len(scores))
    if depth <= 0:
        return []
    part = np.argpartition(-scores, depth - 1)[:depth]
    return sorted(part.tolist(), key=lambda i: (-float(scores[i]), i))
