"""`hacs eval recall`'s data handling: the format, the conversation links, the batches."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.evals import recall
from services.tooling.beir import DatasetError


def write_set(root: Path, corpus: list[dict[str, Any]], queries: list[dict[str, Any]]) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in corpus))
    (root / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in queries))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q['_id']}\tc:1\t1" for q in queries]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines))
    return root


def turn(doc_id: str, scope: str, time: str, speaker: str = "Ann") -> dict[str, Any]:
    meta = {"scope": scope, "time": time, "speaker": speaker}
    return {"_id": doc_id, "text": f"{speaker}: words of {doc_id}", "metadata": meta}


class FakePlatform:
    tenant = "tenants/recall-eval"

    def actor(self, actor_id: str) -> str:
        return f"{self.tenant}/actors/{actor_id}"


def test_reads_scope_time_and_speaker_and_links_consecutive_turns(tmp_path: Path) -> None:
    root = write_set(
        tmp_path / "set",
        [
            turn("c:1", "conv-1", "2023-05-08T13:56:00"),
            turn("c:2", "conv-1", "2023-05-08T13:56:00", "Bob"),
            turn("c:3", "conv-1", "2023-06-01T10:00:00"),  # next session: no link
            turn("c:4", "Conv 2!", "2023-06-01T10:00:00"),  # another scope: no link
        ],
        [{"_id": "q1", "text": "what did Ann say?", "metadata": {"scope": "conv-1"}}],
    )
    _, memories, questions = recall.read(root, "test")
    assert [m.scope for m in memories] == ["conv-1", "conv-1", "conv-1", "Conv 2!"]
    assert memories[0].time == datetime(2023, 5, 8, 13, 56, tzinfo=UTC)  # naive means UTC
    assert memories[1].speaker == "Bob"
    assert questions[0].scope == "conv-1" and questions[0].time is None
    built = recall.records(memories, FakePlatform(), context_links=True)  # type: ignore[arg-type]
    links = [list(r.memory_block.related_memories) for r in built]
    assert links == [[], [built[0].name], [], []]
    assert list(built[1].memory_block.participants) == ["Bob"]
    assert built[0].memory_block.agent == "tenants/recall-eval/actors/conv-1"
    assert built[3].memory_block.agent.rsplit("/", 1)[1].startswith("s-")  # not an actor id
    plain = recall.records(memories, FakePlatform(), context_links=False)  # type: ignore[arg-type]
    assert all(not r.memory_block.related_memories for r in plain)


def test_batches_keep_sessions_together_and_respect_the_limit() -> None:
    def memory(i: int, session: int) -> recall.Memory:
        when = datetime(2023, 1, session + 1, tzinfo=UTC)
        return recall.Memory(str(i), str(i), "x", "s", when, "")

    sessions = [0] * 3 + [1] * 4 + [2] * 2 + [3] * 7
    memories = [memory(i, s) for i, s in enumerate(sessions)]
    packed = recall.batches(memories, limit=5)
    assert packed == [[0, 1, 2], [3, 4, 5, 6], [7, 8], [9, 10, 11, 12, 13], [14, 15]]
    assert [i for batch in packed for i in batch] == list(range(len(memories)))


def test_a_memory_or_query_without_scope_or_with_a_bad_time_is_refused(tmp_path: Path) -> None:
    no_scope = write_set(
        tmp_path / "a",
        [{"_id": "c:1", "text": "x", "metadata": {}}],
        [{"_id": "q1", "text": "x", "metadata": {"scope": "s"}}],
    )
    with pytest.raises(DatasetError, match=r"metadata\.scope"):
        recall.read(no_scope, "test")
    bad_time = write_set(
        tmp_path / "b",
        [turn("c:1", "s", "last Tuesday")],
        [{"_id": "q1", "text": "x", "metadata": {"scope": "s"}}],
    )
    with pytest.raises(DatasetError, match="ISO 8601"):
        recall.read(bad_time, "test")


def test_scores_are_ndcg_and_recall_at_10_overall_and_per_scope(tmp_path: Path) -> None:
    root = write_set(
        tmp_path / "set",
        [turn("c:1", "a", "2023-01-01T00:00:00"), turn("c:2", "b", "2023-01-01T00:00:00")],
        [
            {"_id": "q1", "text": "x", "metadata": {"scope": "a"}},
            {"_id": "q2", "text": "y", "metadata": {"scope": "b"}},
        ],
    )
    dataset, _, questions = recall.read(root, "test")
    table = recall.score(dataset, questions, {"q1": ["c:1"], "q2": ["c:2"]})
    assert table["a"] == {"ndcg@10": 1.0, "recall@10": 1.0, "queries": 1}
    assert table["b"]["recall@10"] == 0.0  # q2's relevant memory is c:1, out of its scope
    assert table["all"] == {"ndcg@10": 0.5, "recall@10": 0.5, "queries": 2}
