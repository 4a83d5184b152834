"""Cluster: related memories grouped (scikit-learn) and labelled from their words.

Agglomerative clustering runs on cosine distance with average linkage by
default, cut at `distance_threshold` (or at `num_clusters`); HDBSCAN finds
dense groups and leaves outliers as noise. Both run in a worker thread.

Labels are c-TF-IDF (class-based TF-IDF, as BERTopic computes it): a term's
frequency within the cluster times log(1 + A / f), A the mean number of
terms per cluster and f the term's frequency over all clusters — terms
frequent in this cluster and rare elsewhere. Terms are the normalised
content tokens of text.py (clinical concepts as one term, "HTN" and "high
blood pressure" alike), shown as written most often; numbers and dates are
left out.
"""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from hacs.records.v1 import record_pb2

from services.common.caller import Caller
from services.common.db.base import utcnow
from services.common.errors import FieldViolation, Invalid
from services.kernel.records.access import require_own_parent
from services.kernel.records.store import RecordStore
from services.memory.blocks import embedding_text, memory_id, vector_id
from services.memory.listing import scan_scope
from services.memory.memory_index import MemoryIndex
from services.memory.scope import Scope
from services.memory.text import STOPWORDS, analyse

AGGLOMERATIVE, HDBSCAN = 1, 2
MAX_MEMORIES = 100_000
# Agglomerative clustering needs the full distance matrix (n^2): past this,
# use HDBSCAN or a narrower scope.
MAX_AGGLOMERATIVE = 20_000


@dataclass(frozen=True)
class ClusterParams:
    num_clusters: int = 0
    distance_threshold: float = 0.5
    linkage: str = "average"
    min_cluster_size: int = 5
    min_samples: int = 0
    label_terms: int = 5


@dataclass
class Cluster:
    number: int
    members: list[str]
    label: str
    terms: list[tuple[str, float]]
    representative: str
    cohesion: float


@dataclass
class Clustering:
    method: int
    clusters: list[Cluster] = field(default_factory=list)
    noise: list[str] = field(default_factory=list)
    count: int = 0


def assign(vectors: np.ndarray, method: int, params: ClusterParams) -> np.ndarray:
    """A cluster label per row (-1: noise)."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, dtype=int)
    if method == HDBSCAN:
        from sklearn.cluster import HDBSCAN as Hdbscan  # type: ignore[import-untyped]

        if n < max(params.min_cluster_size, 2):
            return np.full(n, -1)
        model = Hdbscan(
            min_cluster_size=params.min_cluster_size,
            min_samples=params.min_samples or None,
            metric="cosine",
            copy=True,
        )
        return np.asarray(model.fit_predict(vectors))
    if n == 1:
        return np.zeros(1, dtype=int)
    from sklearn.cluster import AgglomerativeClustering

    if params.num_clusters:
        model = AgglomerativeClustering(
            n_clusters=min(params.num_clusters, n), metric="cosine", linkage=params.linkage
        )
    else:
        model = AgglomerativeClustering(
            n_clusters=None,
            metric="cosine",
            linkage=params.linkage,
            distance_threshold=params.distance_threshold,
        )
    return np.asarray(model.fit_predict(vectors))


def _terms(text: str) -> list[tuple[str, str]]:
    """(term, as written) of a memory's content words."""
    return [
        (t.norm, t.raw.lower() if t.kind == "word" else t.norm)
        for t in analyse(text).tokens
        if t.kind in ("word", "concept") and t.norm not in STOPWORDS and len(t.norm) > 2
    ]


def label(texts_by_cluster: dict[int, list[str]], count: int) -> dict[int, list[tuple[str, float]]]:
    """The `count` most distinctive terms of each cluster (c-TF-IDF), as written."""
    frequencies: dict[int, Counter[str]] = {}
    spellings: Counter[tuple[str, str]] = Counter()
    for cluster, texts in texts_by_cluster.items():
        counter: Counter[str] = Counter()
        for text in texts:
            for norm, written in _terms(text):
                counter[norm] += 1
                spellings[(norm, written)] += 1
        frequencies[cluster] = counter
    overall: Counter[str] = Counter()
    for counter in frequencies.values():
        overall.update(counter)
    average = sum(overall.values()) / max(len(frequencies), 1)
    shown: dict[str, str] = {}
    for (norm, written), _ in spellings.most_common():
        shown.setdefault(norm, written)
    labels: dict[int, list[tuple[str, float]]] = {}
    for cluster, counter in frequencies.items():
        total = sum(counter.values()) or 1
        weights = {
            term: (n / total) * math.log(1 + average / overall[term]) for term, n in counter.items()
        }
        best = sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))[:count]
        labels[cluster] = [(shown[term], round(weight, 6)) for term, weight in best]
    return labels


def build(
    records: list[record_pb2.Record], vectors: np.ndarray, method: int, params: ClusterParams
) -> Clustering:
    assignments = assign(vectors, method, params)
    result = Clustering(method, count=len(records))
    members: dict[int, list[int]] = {}
    for index, cluster in enumerate(assignments.tolist()):
        if cluster < 0:
            result.noise.append(records[index].name)
        else:
            members.setdefault(int(cluster), []).append(index)
    terms = label(
        {c: [records[i].memory_block.content for i in rows] for c, rows in members.items()},
        params.label_terms,
    )
    ordered = sorted(members.items(), key=lambda kv: (-len(kv[1]), records[kv[1][0]].name))
    for number, (cluster, rows) in enumerate(ordered):
        matrix = vectors[rows]
        centroid = matrix.mean(axis=0)
        norm = float(np.linalg.norm(centroid)) or 1.0
        similarity = matrix @ (centroid / norm)
        result.clusters.append(
            Cluster(
                number=number,
                members=[records[i].name for i in rows],
                label=" / ".join(term for term, _ in terms[cluster][:3]),
                terms=terms[cluster],
                representative=records[rows[int(np.argmax(similarity))]].name,
                cohesion=float(similarity.mean()),
            )
        )
    return result


class Clusterer:
    def __init__(self, store: RecordStore, index: MemoryIndex) -> None:
        self._store = store
        self._index = index

    async def cluster(
        self, caller: Caller, scope: Scope, method: int, params: ClusterParams
    ) -> Clustering:
        require_own_parent(caller, scope.tenant_id, "read:memory")
        caller.require("read:memory", f"tenants/{scope.tenant_id}")
        await self._index.catch_up(scope.tenant_id)
        records = await scan_scope(self._store, scope, utcnow())
        if len(records) > MAX_MEMORIES:
            raise Invalid(
                FieldViolation("scope", f"{len(records)} memories; cluster at most {MAX_MEMORIES}")
            )
        if method == AGGLOMERATIVE and len(records) > MAX_AGGLOMERATIVE:
            raise Invalid(
                FieldViolation(
                    "method",
                    f"agglomerative clustering handles up to {MAX_AGGLOMERATIVE} memories "
                    f"(this scope has {len(records)}): use HDBSCAN or narrow the scope",
                )
            )
        if not records:
            return Clustering(method)
        ids = [vector_id(scope.tenant_id, memory_id(r.name)) for r in records]
        stored = await self._index.vectors(scope.tenant_id, ids)
        missing = [i for i, pk in enumerate(ids) if pk not in stored]
        if missing:
            fresh = await self._index.embed(
                [embedding_text(records[i].memory_block) for i in missing], query=False
            )
            stored.update({ids[i]: v for i, v in zip(missing, fresh, strict=True)})
        vectors = np.stack([stored[pk] for pk in ids]).astype(np.float32)
        return await asyncio.to_thread(build, records, vectors, method, params)
