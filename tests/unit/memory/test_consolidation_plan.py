"""Planning merges: duplicates grouped, contradictions never merged, partitions respected."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from hacs.records.v1 import memory_block_pb2, record_pb2

from services.memory.duplicates import Comparer, Item, Thresholds, plan
from services.memory.merging import merge

AT = datetime(2025, 1, 1, tzinfo=UTC)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def grouped(
    texts: list[str], vectors: list[np.ndarray], partitions: list[str] | None = None
) -> list[list[int]]:
    items = [
        Item(f"m{i}", ((partitions or ["p"] * len(texts))[i],), text)
        for i, text in enumerate(texts)
    ]
    found = plan(Comparer(items, np.stack(vectors)), Thresholds(0.8, 0.5, 50))
    return [group.members for group in found.groups]


def test_paraphrases_merge_and_contradictions_do_not() -> None:
    texts = [
        "Patient takes metformin 500 mg twice daily.",
        "Metformin 500mg BID, patient takes it.",
        "Patient takes metformin 1000 mg twice daily.",
        "Patient reports left knee pain.",
    ]
    same = unit(1, 0.05, 0)
    vectors = [same, same, same, unit(0, 1, 0)]
    assert grouped(texts, vectors) == [[0, 1]]


def test_a_chain_never_joins_memories_that_contradict() -> None:
    texts = [
        "Patient takes metformin 500 mg twice daily.",
        "Patient takes metformin twice daily.",
        "Patient takes metformin 1000 mg twice daily.",
    ]
    same = unit(1, 0, 0)
    groups = grouped(texts, [same, same, same])
    assert [0, 1, 2] not in groups
    for group in groups:
        assert not {0, 2} <= set(group)


def test_groups_never_span_partitions() -> None:
    texts = ["Patient prefers morning appointments."] * 3
    same = unit(1, 0, 0)
    assert grouped(texts, [same] * 3, ["agent-a/p1", "agent-b/p1", "agent-a/p1"]) == [[0, 2]]


def block(
    name: str, content: str, score: float, tags: list[str], version: int = 3
) -> record_pb2.Record:
    record = record_pb2.Record(name=name, version=version)
    record.memory_block.memory_type = memory_block_pb2.MEMORY_TYPE_SEMANTIC
    record.memory_block.content = content
    record.memory_block.importance_score = score
    record.memory_block.tags.extend(tags)
    record.memory_block.agent = "tenants/t/actors/a"
    record.create_time.FromDatetime(AT)
    record.update_time.FromDatetime(AT)
    record.created_by.name = f"tenants/t/actors/{name[-1]}"
    return record


def test_a_merge_keeps_every_fact_and_every_source() -> None:
    sources = [
        block(
            "tenants/t/memoryBlocks/m1",
            "Patient takes metformin 500 mg twice daily.",
            0.4,
            ["meds"],
        ),
        block(
            "tenants/t/memoryBlocks/m2",
            "Metformin 500mg BID. Causes mild nausea after breakfast.",
            0.9,
            ["diabetes"],
        ),
    ]
    merged = merge(sources, AT).memory_block
    assert "nausea" in merged.content and "metformin" in merged.content.lower()
    assert merged.importance_score == 0.9
    assert set(merged.tags) == {"meds", "diabetes"}
    provenance = {
        (s.memory, s.version, s.content, s.created_by.name) for s in merged.consolidated_from
    }
    assert provenance == {
        (r.name, r.version, r.memory_block.content, r.created_by.name) for r in sources
    }
