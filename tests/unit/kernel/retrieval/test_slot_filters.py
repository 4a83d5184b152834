"""Filters in the embedded lexical engine give exactly the documents a plain reading of
the filter allows: scalar ones evaluated over the index's slots, list-valued ones in SQL,
on an index built from the file and on one kept up to date through updates and deletes."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from services.kernel.retrieval.expressions import FilterSpec, code_key, years_before
from services.kernel.retrieval.lexical_store import SqliteLexical
from services.kernel.retrieval.vector_index import IndexDoc

TYPES = ["Patient", "Observation", "Condition", "MedicationRequest"]
PATIENTS = [f"p{i}" for i in range(12)]
GENDERS = ["female", "male", "other", ""]
CODES = ["http://loinc.org|4548-4", "*|4548-4", "http://snomed.info/sct|38341003", "*|I10"]
BASE = int(datetime(2020, 1, 1, tzinfo=UTC).timestamp())


def _record(rng: random.Random, n: int) -> IndexDoc:
    births = [-1, 19400312, 19551231, 19600101, 19851115, 20100707]
    return IndexDoc(
        pk=f"t/records/{n}",
        tenant_id="t",
        name=f"n/{n}",
        kind=rng.choice(TYPES),
        text=f"glucose reading {rng.choice(['high', 'low', 'normal'])} {n}",
        vector=np.zeros(4, np.float32),
        patient_id=rng.choice(PATIENTS),
        clinical_time=BASE + rng.randrange(0, 5 * 365) * 86400,
        gender=rng.choice(GENDERS),
        birth_ymd=rng.choice(births),
        codes=rng.sample(CODES, rng.randrange(0, 3)),
        labels=rng.choice([{}, {"ward": "3b"}, {"ward": "icu"}]),
    )


def _spec(rng: random.Random) -> FilterSpec:
    spec = FilterSpec()
    if rng.random() < 0.4:
        spec.kinds = rng.sample(TYPES, rng.randrange(1, 3))
    if rng.random() < 0.3:
        # A few values (compared one by one) or many (looked up in a table).
        unknown = [f"never-seen-{i}" for i in range(rng.choice([1, 12]))]
        spec.patient_ids = [*rng.sample(PATIENTS, rng.randrange(1, 10)), *unknown]
    if rng.random() < 0.4:
        spec.min_age = rng.choice([18, 40, 65, 80])
    if rng.random() < 0.3:
        spec.max_age = rng.choice([17, 45, 70])
    if rng.random() < 0.3:
        spec.genders = rng.sample(GENDERS[:3], rng.randrange(1, 3))
    if rng.random() < 0.3:
        spec.start_time = datetime.fromtimestamp(BASE, UTC) + timedelta(days=rng.randrange(900))
    if rng.random() < 0.3:
        spec.end_time = datetime.fromtimestamp(BASE, UTC) + timedelta(days=rng.randrange(900, 1800))
    if rng.random() < 0.25:
        spec.codes = [rng.choice(["4548-4", "I10", "http://snomed.info/sct|38341003"])]
    if rng.random() < 0.2:
        spec.labels = rng.choice([{"ward": "3b"}, {"ward": ""}])
    return spec


def _allows(spec: FilterSpec, d: IndexDoc) -> bool:
    """The filter read plainly, one document at a time."""
    today = datetime.now(UTC).date()
    checks: list[bool] = [
        not spec.kinds or d.kind in spec.kinds,
        not spec.patient_ids or d.patient_id in spec.patient_ids,
        spec.min_age is None or 0 <= d.birth_ymd <= years_before(today, spec.min_age),
        spec.max_age is None or d.birth_ymd > years_before(today, spec.max_age + 1),
        not spec.genders or d.gender in spec.genders,
        not spec.codes or any(code_key(c) in d.codes for c in spec.codes),
        spec.start_time is None or d.clinical_time >= spec.start_time.timestamp(),
        spec.end_time is None or d.clinical_time < spec.end_time.timestamp(),
    ]
    for key, value in spec.labels.items():
        checks.append(key in d.labels and (not value or d.labels[key] == value))
    return all(checks)


async def _found(store: SqliteLexical, spec: FilterSpec, limit: int = 1000) -> set[str]:
    return {h.pk for h in await store.search("records", "t", "glucose", spec, limit)}


async def test_filters_match_a_plain_reading_on_built_and_updated_indexes(
    tmp_path: Path,
) -> None:
    rng = random.Random(5)
    docs = {d.pk: d for d in (_record(rng, n) for n in range(400))}
    live = SqliteLexical(tmp_path / "lexical.db")
    await live.upsert("records", list(docs.values()))
    assert len(await _found(live, FilterSpec())) == 400  # the index is built here
    # Changes caught up by the live index: fields changed in place, documents deleted.
    changed = [_record(rng, n) for n in rng.sample(range(400), 80)]
    await live.upsert("records", changed)
    docs.update((d.pk, d) for d in changed)
    gone = rng.sample(sorted(docs), 40)
    await live.delete("records", "t", gone)
    for pk in gone:
        del docs[pk]
    fresh = SqliteLexical(tmp_path / "lexical.db")  # builds its index from the file
    try:
        for _ in range(150):
            spec = _spec(rng)
            expected = {pk for pk, d in docs.items() if _allows(spec, d)}
            assert await _found(live, spec) == expected, spec
            assert await _found(fresh, spec) == expected, spec
    finally:
        live.close()
        fresh.close()


async def test_a_filtered_top_k_is_the_best_of_the_allowed(tmp_path: Path) -> None:
    """Scalar filters cut before ranking: the k best allowed, however low they score."""
    store = SqliteLexical(tmp_path / "lexical.db")
    many: list[IndexDoc] = [
        IndexDoc(
            pk=f"t/records/{n}",
            tenant_id="t",
            name=f"n/{n}",
            kind="Observation",
            text="glucose glucose glucose fasting",
            vector=np.zeros(4, np.float32),
            gender="male",
        )
        for n in range(3000)
    ]
    rare = [
        IndexDoc(
            pk=f"t/records/f{n}",
            tenant_id="t",
            name=f"n/f{n}",
            kind="Observation",
            text="glucose mentioned once in a much longer note about many other things " * 3,
            vector=np.zeros(4, np.float32),
            gender="female",
        )
        for n in range(3)
    ]
    try:
        await store.upsert("records", many + rare)
        hits = await store.search("records", "t", "glucose", FilterSpec(genders=["female"]), 2)
        assert len(hits) == 2 and all(h.pk.startswith("t/records/f") for h in hits)
    finally:
        store.close()


async def test_knowledge_filters_by_base_and_tag(tmp_path: Path) -> None:
    store = SqliteLexical(tmp_path / "lexical.db")

    def chunk(n: int, group: str, tags: list[str]) -> IndexDoc:
        return IndexDoc(
            pk=f"kb/{group}/{n}",
            tenant_id="t",
            name=f"c/{n}",
            kind="Chunk",
            text="insulin dosing guidance",
            vector=np.zeros(4, np.float32),
            group=group,
            codes=[f"tag:{t}" for t in tags],
        )

    try:
        await store.upsert(
            "knowledge",
            [chunk(1, "a", ["adult"]), chunk(2, "a", []), chunk(3, "b", ["adult", "icu"])],
        )

        async def found(**kw: Any) -> set[str]:
            hits = await store.search("knowledge", "t", "insulin", FilterSpec(**kw), 10)
            return {h.pk for h in hits}

        assert await found(groups=["a"]) == {"kb/a/1", "kb/a/2"}
        assert await found(groups=["a", "b"], document_tags=["adult"]) == {"kb/a/1", "kb/b/3"}
        assert await found(document_tags=["adult", "icu"]) == {"kb/b/3"}
        assert await found(groups=["nowhere"]) == set()
    finally:
        store.close()
