"""The in-memory BM25 index against a brute-force BM25 over the same documents.

The index prunes (MaxScore), keeps postings in merged segments, marks
replaced and deleted documents dead and compacts; none of that may change
which documents come back or their scores.
"""

from __future__ import annotations

import math
import random
from collections import Counter

import numpy as np
import pytest

from services.kernel.retrieval import bm25_index
from services.kernel.retrieval.bm25_index import K1, B, TermIndex
from services.kernel.retrieval.terms import TERM_DTYPE

TITLE_WEIGHT = 3.0


def records(title: Counter[int], body: Counter[int]) -> np.ndarray:
    terms = sorted(title.keys() | body.keys())
    out = np.empty(len(terms), dtype=TERM_DTYPE)
    for i, t in enumerate(terms):
        out[i] = (t, title.get(t, 0), body.get(t, 0))
    return out


class Corpus:
    """Random documents over a Zipf-like vocabulary (a few words in most documents)."""

    def __init__(self, seed: int, vocabulary: int = 400) -> None:
        self.rng = random.Random(seed)
        self.weights = [1 / (rank + 1) ** 1.1 for rank in range(vocabulary)]
        self.docs: dict[int, tuple[Counter[int], Counter[int]]] = {}

    def make(self) -> tuple[Counter[int], Counter[int]]:
        length = self.rng.randint(3, 60)
        words = self.rng.choices(range(len(self.weights)), self.weights, k=length)
        title = Counter(self.rng.choices(words, k=self.rng.randint(0, 3)))
        return title, Counter(words)

    def reference(
        self, query: list[int], k: int, allowed: set[int] | None = None
    ) -> dict[int, float]:
        live = len(self.docs)
        lengths = {d: sum(t.values()) + sum(b.values()) for d, (t, b) in self.docs.items()}
        avgdl = sum(lengths.values()) / live
        scores: dict[int, float] = {}
        for term in set(query):
            holders = [d for d, (t, b) in self.docs.items() if term in t or term in b]
            if not holders:
                continue
            idf = math.log((live - len(holders) + 0.5) / (len(holders) + 0.5))
            idf = idf if idf > 0 else 1e-6
            for d in holders:
                title, body = self.docs[d]
                tf = TITLE_WEIGHT * title[term] + body[term]
                norm = K1 * (1 - B + B * lengths[d] / avgdl)
                scores[d] = scores.get(d, 0.0) + idf * tf * (K1 + 1) / (tf + norm)
        if allowed is not None:
            scores = {d: s for d, s in scores.items() if d in allowed}
        best = sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]
        return dict(best)


def add(index: TermIndex, corpus: Corpus, doc_id: int) -> None:
    title, body = corpus.make()
    corpus.docs[doc_id] = (title, body)
    index.add(doc_id, sum(title.values()) + sum(body.values()), records(title, body))


def assert_same(
    index: TermIndex, corpus: Corpus, query: list[int], k: int, mask_ids: set[int] | None = None
) -> None:
    every = corpus.reference(query, len(corpus.docs))
    expected = corpus.reference(query, k, mask_ids)
    mask = None if mask_ids is None else index.mask(np.array(sorted(mask_ids), dtype=np.int64))
    top = index.top(query, k, mask)
    got = dict(zip(top.doc_ids.tolist(), top.scores.tolist(), strict=True))
    assert len(got) == len(expected)
    assert list(top.scores) == sorted(top.scores, reverse=True)
    kth = min(expected.values(), default=0.0)
    for doc_id, score in got.items():
        # Every document returned has its true score, and none scores below the true k-th
        # (ids may differ only among documents tied at the cut).
        assert score == pytest.approx(every[doc_id], rel=1e-5)
        assert score >= kth - 1e-5


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_top_k_matches_brute_force_after_adds_updates_deletes_and_compaction(seed: int) -> None:
    corpus = Corpus(seed)
    index = TermIndex(TITLE_WEIGHT)
    # A bulk load, then documents one by one (several segments), then changes.
    for doc_id in range(1500):
        corpus.docs[doc_id] = corpus.make()
    ids = np.arange(1500, dtype=np.int64)
    recs = [records(*corpus.docs[d]) for d in range(1500)]
    index.load(
        ids,
        np.array([sum(t.values()) + sum(b.values()) for t, b in corpus.docs.values()], np.float32),
        np.concatenate(recs),
        np.array([len(r) for r in recs]),
    )
    for doc_id in range(1500, 4000):
        add(index, corpus, doc_id)
    assert index.segments > 1
    rng = random.Random(seed)
    # Adds only so far (document frequencies exact): several segments and a pending tail.
    for _ in range(15):
        query = rng.sample(range(6), rng.randint(0, 3)) + rng.sample(range(6, 400), 2)
        assert_same(index, corpus, query, 10)
    for doc_id in corpus.rng.sample(range(4000), 600):  # new versions
        add(index, corpus, doc_id)
    for doc_id in corpus.rng.sample(sorted(corpus.docs), 400):
        del corpus.docs[doc_id]
        index.remove(doc_id)
    assert index.live == len(corpus.docs) and index.dead == 1000

    index.compact()  # document frequencies are exact once dead postings are gone
    assert index.dead == 0 and index.segments == 1
    for _ in range(40):
        # Queries mixing very common words (ranks 0-5) with rarer ones.
        query = rng.sample(range(6), rng.randint(0, 3)) + rng.sample(
            range(6, 400), rng.randint(1, 4)
        )
        for k in (1, 10, 100):
            assert_same(index, corpus, query, k)
    allowed = set(rng.sample(sorted(corpus.docs), 50))
    assert_same(index, corpus, [0, 1, 2, 50], 10, allowed)


def test_replaced_and_deleted_documents_never_come_back() -> None:
    index = TermIndex(1.0)
    index.add(1, 2, records(Counter(), Counter({7: 1, 8: 1})))
    index.add(2, 2, records(Counter(), Counter({7: 1, 9: 1})))
    index.add(1, 2, records(Counter(), Counter({9: 2})))  # doc 1 no longer holds term 7
    assert index.top([7], 10).doc_ids.tolist() == [2]
    assert index.top([9], 10).doc_ids.tolist() == [1, 2]
    index.remove(2)
    assert index.top([7], 10).doc_ids.tolist() == []
    assert index.top([9], 10).doc_ids.tolist() == [1]
    assert index.top([12345], 10).complete


def test_pruning_scores_fewer_documents_and_keeps_the_exact_top_k() -> None:
    corpus = Corpus(9)
    index = TermIndex(TITLE_WEIGHT)
    for doc_id in range(3000):
        add(index, corpus, doc_id)
    query = [0, 1, 300]  # two words in most documents, one rare one
    everything = index.top(query, 3000)
    assert everything.complete
    assert len(everything.doc_ids) == len(corpus.reference(query, 3000))
    pruned = index.top(query, 5)
    assert not pruned.complete and pruned.scored < len(everything.doc_ids) // 4
    assert_same(index, corpus, query, 5)


def test_payloads_stay_with_their_documents_through_growth_and_compaction() -> None:
    dtype = np.dtype([("a", np.int32), ("b", np.int64)])
    index = TermIndex(1.0, dtype)
    ids = np.arange(100, dtype=np.int64)
    index.load(
        ids,
        np.ones(100, np.float32),
        np.concatenate([records(Counter(), Counter({1: 1})) for _ in range(100)]),
        np.ones(100, np.int64),
        np.array([(int(d), int(d) * 10) for d in ids], dtype=dtype),
    )
    for doc_id in range(100, 3000):  # past the first capacity: the columns grow
        index.add(doc_id, 1, records(Counter(), Counter({1: 1})), (doc_id, doc_id * 10))
    for doc_id in range(0, 3000, 3):
        index.remove(doc_id)
    index.add(7, 1, records(Counter(), Counter({1: 1})), (-7, -70))  # a new version
    index.compact()

    def mask(column: str, keep: object) -> np.ndarray:
        return np.asarray([keep(v) for v in index.payload[column]], dtype=np.bool_)  # type: ignore[operator]

    found = index.top([1], 3000, mask("a", lambda v: v % 2 == 0 or v < 0))
    expected = {d for d in range(3000) if d % 3 and d % 2 == 0 and d != 7} | {7}
    assert set(found.doc_ids.tolist()) == expected
    live = index._slot_doc[: len(index.payload["a"])].tolist()  # compacted: every slot live
    pairs = zip(index.payload["a"].tolist(), index.payload["b"].tolist(), strict=True)
    for doc_id, pair in zip(live, pairs, strict=True):
        assert pair == ((-7, -70) if doc_id == 7 else (doc_id, doc_id * 10))


@pytest.mark.parametrize("lookup", ["binary search", "scratch array"])
def test_both_ways_of_finding_candidates_in_postings_give_the_exact_top_k(
    lookup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidates are looked up in the common terms' postings by binary search or through
    a per-thread scratch array, chosen by cost; force each in turn. Queries run back to
    back on one index, so a scratch array left dirty by one query would spoil the next."""
    monkeypatch.setattr(bm25_index, "SCATTER_ABOVE", 1e9 if lookup == "binary search" else 0.0)
    corpus = Corpus(5)
    index = TermIndex(TITLE_WEIGHT)
    for doc_id in range(3000):
        add(index, corpus, doc_id)
    assert index.segments > 1  # (adds only: document frequencies exact without compaction)
    rng = random.Random(5)
    for _ in range(30):
        query = rng.sample(range(8), rng.randint(1, 3)) + rng.sample(range(8, 400), 2)
        assert_same(index, corpus, query, 10)
