"""Clusters from vectors, labels from the members' most distinctive terms."""

from __future__ import annotations

import numpy as np
from hacs.records.v1 import record_pb2

from services.memory.clustering import AGGLOMERATIVE, HDBSCAN, ClusterParams, build


def records(texts: list[str]) -> list[record_pb2.Record]:
    out = []
    for i, text in enumerate(texts):
        record = record_pb2.Record(name=f"tenants/t/memoryBlocks/m{i}")
        record.memory_block.content = text
        out.append(record)
    return out


TEXTS = [
    "Metformin 500 mg twice daily for diabetes.",
    "Glucophage dose reviewed, diabetes stable.",
    "Metformin tolerated, diabetes follow up.",
    "Left knee pain after the fall.",
    "Knee pain worse on stairs.",
    "Knee swelling and pain this week.",
]


def vectors() -> np.ndarray:
    rng = np.random.default_rng(7)
    centres = np.eye(8, dtype=np.float32)[:2]
    rows = [centres[i // 3] + 0.05 * rng.standard_normal(8).astype(np.float32) for i in range(6)]
    matrix = np.stack(rows)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def test_agglomerative_finds_the_topics_and_names_them() -> None:
    result = build(records(TEXTS), vectors(), AGGLOMERATIVE, ClusterParams())
    assert sorted(len(c.members) for c in result.clusters) == [3, 3]
    terms = [{t for t, _ in c.terms[:2]} for c in result.clusters]
    assert {"metformin", "diabetes mellitus"} in terms  # "Glucophage" counted as metformin
    assert {"knee", "pain"} in terms
    for cluster in result.clusters:
        assert cluster.representative in cluster.members
        assert 0.9 < cluster.cohesion <= 1.0


def test_hdbscan_leaves_outliers_as_noise() -> None:
    matrix = np.vstack([vectors(), np.eye(8, dtype=np.float32)[5:6]])
    result = build(
        records([*TEXTS, "Prefers morning appointments."]),
        matrix,
        HDBSCAN,
        ClusterParams(min_cluster_size=3),
    )
    assert "tenants/t/memoryBlocks/m6" in result.noise
    assert sorted(len(c.members) for c in result.clusters) == [3, 3]
