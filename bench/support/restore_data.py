"""The restore drill's data set, the questions it asks, and how two answers are compared.

Everything here is a pure function of the drill's size and seed, so the platform
before the backup and the restored one are asked exactly the same things:

* records: `patients` Patients with `observations_per_patient` Observations each
  (bench/support/dataset.py: real LOINC codes, labels, spread clinical times);
* knowledge: one knowledge base with the guideline corpus of tests/data/rag (Markdown,
  HTML, text, a PDF) and, when the MedQuAD BEIR directory is there, a seeded sample of
  its answers (plain text);
* memories: `memories` memory blocks of one agent about those patients; every 10th is
  then reworded and every 25th forgotten, so the memory index has past revisions
  (recall `as_of`) as well as live ones.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from hacs.records.v1 import evidence_pb2, memory_block_pb2, record_pb2

from bench.support.dataset import FAMILY, GIVEN
from tests.data.rag.corpus import CORPUS, Doc

REPO = Path(__file__).resolve().parents[2]
MEDQUAD = REPO.parent / "shared" / "data" / "medquad"
TENANT = "drill"
LIVE_TENANT = "drill-live"  # written to while pg_dump runs (the recovery point)
AGENT = "drill-agent"
KB_ID = "guidelines"
# Recall ranks by recency too: every question is asked at this instant, before and after.
QUERY_TIME = datetime(2025, 1, 1, tzinfo=UTC)
MT = memory_block_pb2.MemoryType
EL = evidence_pb2.EvidenceLevel


@dataclass(frozen=True)
class DrillSize:
    patients: int = 1000
    observations_per_patient: int = 3
    memories: int = 300
    medquad_documents: int = 200
    medquad: Path = MEDQUAD
    seed: int = 1


SEARCH_QUERIES = (
    "HbA1c above target in diabetes",
    "systolic blood pressure 170 mm Hg",
    "cholesterol in serum or plasma",
    "Maria Garcia",
    "body mass index obese",
    "fasting glucose in plasma",
)
RETRIEVE_QUERIES = (
    "When is metformin contraindicated in kidney disease?",
    "apixaban dose reduction in atrial fibrillation",
    "blood pressure target for adults with hypertension",
    "when to step down asthma therapy",
    "What are the symptoms of glaucoma?",
    "How is chronic kidney disease diagnosed?",
)
RECALL_QUERIES = (
    "knee pain after a fall",
    "allergic reaction to penicillin",
    "metformin upset the stomach",
    "call the daughter before medication changes",
    "needs an interpreter",
)
# Asked again `as_of` the moment between the first writes and the rewordings.
RECALL_AS_OF_QUERIES = ("knee pain after a fall", "missed the diabetes follow-up")

EVENTS = (
    "reported knee pain after a fall at home; ice, rest and paracetamol advised",
    "had an itchy rash after amoxicillin; penicillin allergy recorded",
    "asked us to call the daughter before any medication change",
    "missed the diabetes follow-up appointment and was rebooked",
    "said metformin upset the stomach; the dose is now split across meals",
    "needs an interpreter for Portuguese at every visit",
    "felt dizzy when standing up; the blood pressure tablets were reviewed",
    "uses the reliever inhaler more than twice a week; asthma review booked",
    "is afraid of needles; numbing cream is applied before blood tests",
    "walks thirty minutes a day and lost three kilograms since the last visit",
    "sleeps badly because of night-time urination; evening fluids reduced",
    "brought a home glucose diary with readings between 6 and 11 mmol/L",
)
PLACES = ("at the clinic", "on the phone", "at a home visit", "in the pharmacy", "by video")


def medquad_documents(directory: Path, count: int, seed: int) -> list[Doc]:
    """`count` MedQuAD answers drawn with a seed (none when the directory is absent)."""
    corpus = directory / "corpus.jsonl"
    if count <= 0 or not corpus.is_file():
        return []
    seen: dict[str, tuple[str, str]] = {}
    with corpus.open() as lines:
        for line in lines:
            item = json.loads(line)
            text = str(item.get("text") or "").strip()
            if text and str(item["_id"]) not in seen:
                seen[str(item["_id"])] = (str(item.get("title") or item["_id"]), text)
    chosen = random.Random(seed).sample(sorted(seen), min(count, len(seen)))
    return [
        Doc(
            f"mq-{doc_id.lower()}"[:128],
            "",
            "text/plain",
            seen[doc_id][0][:500],
            ("medquad",),
            EL.EVIDENCE_LEVEL_MODERATE,
            "2019",
            content=seen[doc_id][1].encode(),
        )
        for doc_id in chosen
    ]


def knowledge_documents(size: DrillSize) -> list[Doc]:
    return [*CORPUS, *medquad_documents(size.medquad, size.medquad_documents, size.seed)]


def memory_blocks(size: DrillSize) -> list[record_pb2.Record]:
    """The agent's memories about the drill's patients, in the order they are remembered."""
    rng = random.Random(size.seed)
    blocks = []
    for i in range(size.memories):
        patient = i % max(size.patients, 1)
        gender = rng.choice(("female", "male"))
        who = f"{rng.choice(GIVEN[gender])} {rng.choice(FAMILY)} (p{patient:07d})"
        record = record_pb2.Record()
        block = record.memory_block
        block.memory_type = MT.MEMORY_TYPE_EPISODIC if i % 4 else MT.MEMORY_TYPE_SEMANTIC
        block.content = f"{who} {rng.choice(EVENTS)}, {rng.choice(PLACES)}, visit {i}."
        block.tags.append(f"cohort-{i % 7}")
        block.importance_score = round(rng.uniform(0.2, 0.9), 2)
        block.event_time.FromDatetime(
            datetime(2024, 1, 1, tzinfo=UTC) + timedelta(minutes=rng.randrange(525_600))
        )
        blocks.append(record)
    return blocks


def reworded(content: str, i: int) -> str:
    """The new words of every 10th memory."""
    return f"{content} Update {i}: resolved after the follow-up call."


@dataclass
class Hit:
    name: str
    score: float  # what the call ranks by (Search's fused score, Retrieve's relevance, …)
    # The hit's own scores, read from what the index holds for it: its dense similarity
    # and its BM25 score (Recall: semantic and lexical).
    own: dict[str, float] = field(default_factory=dict)


@dataclass
class Answer:
    """What one question returned, best first."""

    call: str  # "search", "retrieve", "recall", "recall as_of"
    query: str
    hits: list[Hit] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [hit.name for hit in self.hits]


def compare(before: list[Answer], after: list[Answer], tolerance: float, top: int) -> list[str]:
    """The differences that matter between two runs of the same questions (none: the same).

    * Every hit found both times has the same own scores (its vector's similarity, its
      BM25 score) within `tolerance` (relative above 1): the index holds the same vector
      and text for it. Recomputed vectors differ from the first ones in the last digits.
    * The first `top` names are the same, in the same order, except that two hits
      ranked within `tolerance` of each other (before or after) may trade places.
    Search's ranking score is not compared itself: it is min-max normalised over the 100
    candidates each retriever returns, and past the first few the dense candidates of an
    approximate (HNSW) index depend on how it was built, so the normalisation can move
    every fused score by a few hundredths while each hit's own scores stay the same.
    """
    problems = []
    for old, new in zip(before, after, strict=True):
        label = f"{old.call} {old.query!r}"
        now = {hit.name: hit for hit in new.hits}
        for hit in old.hits:
            again = now.get(hit.name)
            if again is None:
                continue
            scores = {**hit.own, **({} if old.call == "search" else {"score": hit.score})}
            for key, value in scores.items():
                other = again.own.get(key, again.score if key == "score" else None)
                if other is None:  # found by one retriever only, this time
                    continue
                if abs(other - value) > tolerance * max(1.0, abs(value)):
                    problems.append(f"{label}: {hit.name} {key} {value:.5f}, now {other}")
        for rank, hit in enumerate(old.hits[:top]):
            if rank >= len(new.hits):
                problems.append(f"{label}: {len(new.hits)} hits, {len(old.hits)} before")
                break
            if new.hits[rank].name != hit.name and not _tied(old, new, rank, tolerance):
                problems.append(f"{label}: rank {rank + 1} was {hit.name}, now {new.names[rank]}")
    return problems


def _tied(old: Answer, new: Answer, rank: int, tolerance: float) -> bool:
    """Whether the two hits found at `rank` scored within `tolerance` of each other."""
    first, second = old.hits[rank].name, new.hits[rank].name
    for answer in (old, new):
        scores = {hit.name: hit.score for hit in answer.hits}
        if (
            first in scores
            and second in scores
            and abs(scores[first] - scores[second]) <= tolerance
        ):
            return True
    return False


def overlap(before: list[Answer], after: list[Answer]) -> float:
    """The share of names found both times, over every question."""
    shared = sum(len(set(o.names) & set(n.names)) for o, n in zip(before, after, strict=True))
    return round(shared / max(sum(len(o.names) for o in before), 1), 4)


def identical(before: list[Answer], after: list[Answer]) -> int:
    """How many questions got exactly the same names in the same order."""
    return sum(old.names == new.names for old, new in zip(before, after, strict=True))
