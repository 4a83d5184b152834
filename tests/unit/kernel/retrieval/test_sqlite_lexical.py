"""The embedded BM25 engine (SQLite store, in-memory scoring): ranking, filters, tenant
scoping, deletes, several writers on one file, the upgrade from the FTS5 layout."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from services.kernel.retrieval import lexical_store
from services.kernel.retrieval.expressions import FilterSpec
from services.kernel.retrieval.lexical_store import LAYOUT_VERSION, TITLE_WEIGHTS, SqliteLexical
from services.kernel.retrieval.terms import query_terms
from services.kernel.retrieval.vector_index import IndexDoc


def doc(pk: str, tenant: str, text: str, **kw: Any) -> IndexDoc:
    return IndexDoc(
        pk=pk,
        tenant_id=tenant,
        name=f"n/{pk}",
        kind=str(kw.pop("kind", "Condition")),
        text=text,
        vector=np.zeros(4, dtype=np.float32),
        **kw,
    )


async def test_bm25_ranking_filters_and_tenants(tmp_path: Path) -> None:
    fts = SqliteLexical(tmp_path / "lexical.db")
    await fts.upsert(
        "records",
        [
            doc(
                "a/1",
                "a",
                "Condition: Hypertension. Codes: ICD-10-CM I10.",
                codes=["http://hl7.org/fhir/sid/icd-10-cm|I10", "*|I10"],
                gender="female",
                birth_ymd=19500101,
            ),
            doc(
                "a/2",
                "a",
                "Condition: Asthma. Wheezing and shortness of breath.",
                gender="male",
                birth_ymd=20120101,
            ),
            doc(
                "a/3",
                "a",
                "Observation: blood pressure 150/95 mmHg, hypertension suspected",
                kind="Observation",
                labels={"ward": "3b"},
            ),
            doc("b/1", "b", "Condition: Hypertension, treated.", codes=["*|I10"]),
        ],
    )
    hits = await fts.search("records", "a", "hypertension", FilterSpec(), 10)
    assert {h.pk for h in hits} == {"a/1", "a/3"}
    assert all(h.pk.startswith("a/") for h in hits) and all(h.score > 0 for h in hits)
    assert [h.pk for h in await fts.search("records", "a", "I10", FilterSpec(), 10)] == ["a/1"]
    assert [
        h.pk
        for h in await fts.search("records", "a", "hypertension", FilterSpec(codes=["I10"]), 10)
    ] == ["a/1"]
    assert [
        h.pk
        for h in await fts.search(
            "records", "a", "hypertension", FilterSpec(kinds=["Observation"]), 10
        )
    ] == ["a/3"]
    assert [
        h.pk
        for h in await fts.search(
            "records", "a", "hypertension", FilterSpec(labels={"ward": "3b"}), 10
        )
    ] == ["a/3"]
    older = FilterSpec(min_age=65)
    assert [h.pk for h in await fts.search("records", "a", "hypertension asthma", older, 10)] == [
        "a/1"
    ]
    assert [
        h.pk for h in await fts.search("records", "a", "asthma", FilterSpec(genders=["male"]), 10)
    ] == ["a/2"]
    await fts.delete("records", "a", ["a/1"])
    assert "a/1" not in [
        h.pk for h in await fts.search("records", "a", "hypertension", FilterSpec(), 10)
    ]
    await fts.delete_all("records", "a")
    assert await fts.count("records", "a") == 0 and await fts.count("records", "b") == 1
    fts.close()


def test_query_terms_are_stemmed_distinct_words_and_punctuation_is_nothing() -> None:
    assert query_terms('NEAR(a b) OR "x" -y AND z* Hypertensive hypertension') == [
        "near",
        "a",
        "b",
        "or",
        "x",
        "y",
        "and",
        "z",
        "hypertens",
    ]
    assert query_terms("Ménière's") == ["menier", "s"]  # as FTS5: short words unstemmed
    assert query_terms("as is") == ["as", "is"]
    assert query_terms("?!") == []


async def test_a_query_of_punctuation_finds_nothing(tmp_path: Path) -> None:
    store = SqliteLexical(tmp_path / "lexical.db")
    await store.upsert("records", [doc("a/1", "a", "Asthma")])
    assert await store.search("records", "a", "?!", FilterSpec(), 10) == []
    assert await store.search("records", "a", "unheardofword", FilterSpec(), 10) == []
    store.close()


@pytest.mark.parametrize(("weight", "first"), [(1.0, "a/mention"), (5.0, "a/titled")])
async def test_a_records_title_counts_by_its_weight(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, weight: float, first: str
) -> None:
    """A title is indexed apart from the body and weighted per kind (TITLE_WEIGHTS). At the
    shipped 1 a record titled "Asthma" whose long body never says it still matches, behind
    a short note that does (BM25's length normalisation); at 5 the title match wins."""
    monkeypatch.setitem(TITLE_WEIGHTS, "records", weight)
    fts = SqliteLexical(tmp_path / "lexical.db")
    await fts.upsert(
        "records",
        [
            doc("a/mention", "a", "Asthma inhaler refilled.", title="Repeat prescription"),
            doc(
                "a/titled",
                "a",
                "Action plan reviewed with the family: inhaler technique checked, spacer "
                "given, peak flow diary started, follow-up in three months.",
                title="Asthma",
            ),
        ],
    )
    hits = await fts.search("records", "a", "asthma", FilterSpec(), 10)
    assert len(hits) == 2 and hits[0].pk == first
    fts.close()


_VERSION_2 = """
CREATE TABLE docs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, pk TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, title TEXT NOT NULL,
    patient_id TEXT NOT NULL, birth_ymd INTEGER NOT NULL, gender TEXT NOT NULL,
    clinical_time INTEGER NOT NULL, codes TEXT NOT NULL, labels TEXT NOT NULL,
    grp TEXT NOT NULL, extra TEXT NOT NULL
);
CREATE INDEX docs_scope ON docs (tenant_id, kind, type);
CREATE VIRTUAL TABLE fts USING fts5 (title, text, tokenize = 'porter unicode61');
INSERT INTO docs VALUES
    (1, 'records', 'a/1', 'a', 'n/a/1', 'Condition', 'Asthma', '', -1, '', 0, '[]', '{}', '', '{}'),
    (2, 'records', 'a/2', 'a', 'n/a/2', 'Condition', 'Gout', '', -1, '', 0, '[]', '{}', '', '{}');
INSERT INTO fts (rowid, title, text) VALUES
    (1, 'Asthma', 'Asthma. Wheezing at night.'), (2, 'Gout', 'Gout. Painful big toe.');
PRAGMA user_version = 2;
"""


async def test_an_fts5_index_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "lexical.db"
    conn = sqlite3.connect(path)
    conn.executescript(_VERSION_2)
    conn.close()

    store = SqliteLexical(path)
    hits = await store.search("records", "a", "wheezing", FilterSpec(), 10)
    assert [(h.pk, h.fields["text"]) for h in hits] == [("a/1", "Asthma. Wheezing at night.")]
    assert [h.pk for h in await store.search("records", "a", "gout", FilterSpec(), 10)] == ["a/2"]
    store.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (LAYOUT_VERSION,)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "fts" not in tables
    conn.close()


async def test_scores_are_fts5_bm25(tmp_path: Path) -> None:
    """Same formula, stemmer and title weighting as FTS5's bm25() (what RAG is calibrated on)."""
    texts = [
        ("Hypertension", "Hypertension. Blood pressure 150/95 mmHg on two visits."),
        ("Asthma", "Asthma. Wheezing and shortness of breath at night."),
        ("Diabetes", "Type 2 diabetes mellitus. HbA1c 8.1 %, metformin started."),
        ("Follow-up", "Blood pressure controlled; diabetes reviewed; asthma quiet."),
        ("Chest pain", "Chest pain on exertion, no shortness of breath at rest."),
    ]
    store = SqliteLexical(tmp_path / "lexical.db")
    await store.upsert(
        "records", [doc(f"a/{i}", "a", text, title=title) for i, (title, text) in enumerate(texts)]
    )
    fts = sqlite3.connect(":memory:")
    fts.execute(
        "CREATE VIRTUAL TABLE fts USING fts5 "
        "(title, text, tokenize = 'porter unicode61 remove_diacritics 2')"
    )
    fts.executemany(
        "INSERT INTO fts (rowid, title, text) VALUES (?, ?, ?)",
        [(i, title, text) for i, (title, text) in enumerate(texts)],
    )
    weighted = f"bm25(fts, {TITLE_WEIGHTS['records']}, 1.0)"
    for query in ("blood pressure", "shortness of breath at night", "diabetes asthma"):
        match = " OR ".join(f'"{w}"' for w in dict.fromkeys(query.split()))
        expected = {
            f"a/{row}": -score
            for row, score in fts.execute(
                f"SELECT rowid, {weighted} FROM fts WHERE fts MATCH ?",
                (match,),
            )
        }
        hits = await store.search("records", "a", query, FilterSpec(), 10)
        assert {h.pk: h.score for h in hits} == pytest.approx(expected, rel=1e-4)
    store.close()


async def test_every_store_on_the_file_sees_every_committed_write(tmp_path: Path) -> None:
    """Two stores on one file stand for two processes (search, RAG ingest, a backfill)."""
    path = tmp_path / "lexical.db"
    writer, reader = SqliteLexical(path), SqliteLexical(path)
    await writer.upsert("records", [doc("a/1", "a", "Asthma, wheezing")])
    assert [h.pk for h in await reader.search("records", "a", "wheezing", FilterSpec(), 10)] == [
        "a/1"
    ]  # the reader's index is built now; later writes reach it as changes
    await writer.upsert(
        "records", [doc("a/2", "a", "Wheezing again"), doc("a/1", "a", "Gout, toe pain")]
    )
    assert [h.pk for h in await reader.search("records", "a", "wheezing", FilterSpec(), 10)] == [
        "a/2"
    ]
    assert [h.pk for h in await reader.search("records", "a", "gout", FilterSpec(), 10)] == ["a/1"]
    await writer.delete("records", "a", ["a/2"])
    assert await reader.search("records", "a", "wheezing", FilterSpec(), 10) == []
    writer.close()
    reader.close()


async def test_one_tenants_documents_do_not_change_anothers_scores(tmp_path: Path) -> None:
    store = SqliteLexical(tmp_path / "lexical.db")
    await store.upsert(
        "records",
        [doc("a/1", "a", "Hypertension, treated"), doc("a/2", "a", "Asthma, wheezing")],
    )
    before = [
        (h.pk, h.score)
        for h in await store.search("records", "a", "hypertension", FilterSpec(), 10)
    ]
    await store.upsert("records", [doc(f"b/{i}", "b", "Hypertension follow-up") for i in range(50)])
    after = [
        (h.pk, h.score)
        for h in await store.search("records", "a", "hypertension", FilterSpec(), 10)
    ]
    assert after == before
    store.close()


async def test_a_selective_filter_still_finds_a_low_scoring_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The one allowed document ranks below every other: found by naming what the filter allows."""
    store = SqliteLexical(tmp_path / "lexical.db")
    many = [doc(f"a/{i}", "a", "Asthma asthma asthma", patient_id="p/other") for i in range(300)]
    store_docs = [
        *many,
        doc(
            "a/mine",
            "a",
            "Asthma noted once in a long letter about other things entirely",
            patient_id="p/1",
        ),
    ]
    await store.upsert("records", store_docs)
    only_mine = FilterSpec(patient_ids=["p/1"])
    hits = await store.search("records", "a", "asthma", only_mine, 5)
    assert [h.pk for h in hits] == ["a/mine"]  # found in the rounds of best-scoring documents
    monkeypatch.setattr(lexical_store, "FILTER_ROUNDS", (1,))  # one short round: not there
    hits = await store.search("records", "a", "asthma", only_mine, 5)
    assert [h.pk for h in hits] == ["a/mine"]  # found by naming the documents allowed
    store.close()


async def test_hits_without_fields_and_fields_read_by_pk_within_the_tenant(tmp_path: Path) -> None:
    store = SqliteLexical(tmp_path / "lexical.db")
    await store.upsert(
        "records", [doc("a/1", "a", "Asthma, wheezing", title="Asthma"), doc("b/1", "b", "Asthma")]
    )
    bare = await store.search("records", "a", "asthma", FilterSpec(), 10, with_fields=False)
    assert [(h.pk, h.fields) for h in bare] == [("a/1", {})]
    stored = await store.documents("records", "a", ["a/1", "b/1", "a/none"])
    assert list(stored) == ["a/1"]  # b/1 belongs to another tenant
    assert stored["a/1"]["text"] == "Asthma, wheezing" and stored["a/1"]["title"] == "Asthma"
    store.close()


async def test_a_reader_behind_the_tombstones_kept_rebuilds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lexical_store, "TOMBSTONE_WRITES_KEPT", 2)
    path = tmp_path / "lexical.db"
    writer, reader = SqliteLexical(path), SqliteLexical(path)
    await writer.upsert("records", [doc(f"a/{i}", "a", "Asthma") for i in range(5)])
    assert len(await reader.search("records", "a", "asthma", FilterSpec(), 10)) == 5
    for i in range(4):  # four write transactions: the first deletes' tombstones are forgotten
        await writer.delete("records", "a", [f"a/{i}"])
    assert [h.pk for h in await reader.search("records", "a", "asthma", FilterSpec(), 10)] == [
        "a/4"
    ]
    writer.close()
    reader.close()


async def test_a_reused_row_id_never_shows_another_tenants_document(tmp_path: Path) -> None:
    path = tmp_path / "lexical.db"
    writer, reader = SqliteLexical(path), SqliteLexical(path)
    await writer.upsert("records", [doc("a/1", "a", "Asthma"), doc("a/2", "a", "Asthma again")])
    assert len(await reader.search("records", "a", "asthma", FilterSpec(), 10)) == 2
    await writer.delete("records", "a", ["a/2"])  # the highest row id: SQLite hands it out again
    await writer.upsert("records", [doc("b/1", "b", "Asthma in tenant b")])
    hits = await reader.search("records", "a", "asthma", FilterSpec(), 10)
    assert [h.pk for h in hits] == ["a/1"]
    assert [h.pk for h in await reader.search("records", "b", "asthma", FilterSpec(), 10)] == [
        "b/1"
    ]
    writer.close()
    reader.close()


async def test_a_cancelled_search_leaves_the_store_usable(tmp_path: Path) -> None:
    store = SqliteLexical(tmp_path / "lexical.db", readers=1)
    await store.upsert("records", [doc(f"a/{i}", "a", f"Asthma {i}") for i in range(2000)])
    searches = [
        asyncio.create_task(store.search("records", "a", "asthma", FilterSpec(), 10))
        for _ in range(5)
    ]
    await asyncio.sleep(0)
    for task in searches[::2]:
        task.cancel()
    done = await asyncio.gather(*searches, return_exceptions=True)
    assert all(len(r) == 10 for r in done if isinstance(r, list))
    assert len(await store.search("records", "a", "asthma", FilterSpec(), 10)) == 10
    assert await store.count("records", "a") == 2000
    store.close()


async def test_an_fts5_table_recreated_by_an_older_version_is_folded_in(tmp_path: Path) -> None:
    path = tmp_path / "lexical.db"
    store = SqliteLexical(path)
    await store.upsert("records", [doc("a/1", "a", "Asthma. Wheezing at night.")])
    store.close()
    # An older HACS opens the file: it recreates `fts` and writes a document its way.
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE VIRTUAL TABLE fts USING fts5 (title, text, tokenize = 'porter unicode61');
        INSERT INTO docs (kind, pk, tenant_id, name, type, title, patient_id, birth_ymd, gender,
                          clinical_time, codes, labels, grp, extra)
        VALUES ('records', 'a/2', 'a', 'n/a/2', 'Condition', 'Gout', '', -1, '', 0, '[]', '{}',
                '', '{}');
        INSERT INTO fts (rowid, title, text)
        SELECT id, 'Gout', 'Gout. Painful big toe.' FROM docs WHERE pk = 'a/2';
        """
    )
    conn.close()
    store = SqliteLexical(path)
    assert [h.pk for h in await store.search("records", "a", "wheezing", FilterSpec(), 10)] == [
        "a/1"
    ]
    hits = await store.search("records", "a", "toe", FilterSpec(), 10)
    assert [(h.pk, h.fields["text"]) for h in hits] == [("a/2", "Gout. Painful big toe.")]
    store.close()


async def test_preload_builds_every_tenants_index_before_any_search(tmp_path: Path) -> None:
    path = tmp_path / "lexical.db"
    writer = SqliteLexical(path)
    await writer.upsert("records", [doc("a/1", "a", "Asthma"), doc("b/1", "b", "Gout")])
    await writer.upsert("knowledge", [doc("a/k1", "a", "Asthma guideline", kind="Chunk")])
    store = SqliteLexical(path)
    assert await store.preload() == 3
    built = {key: scope.index.live for key, scope in store._scopes.items() if scope.index}
    assert built == {("a", "records"): 1, ("b", "records"): 1, ("a", "knowledge"): 1}
    assert [h.pk for h in await store.search("knowledge", "a", "asthma", FilterSpec(), 10)] == [
        "a/k1"
    ]
    writer.close()
    store.close()


async def test_an_index_built_in_chunks_ranks_as_one_built_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = SqliteLexical(tmp_path / "lexical.db")
    words = ["glucose", "insulin", "fasting", "hba1c", "renal", "retinopathy", "statin"]
    await writer.upsert(
        "records",
        [
            doc(f"t/{n}", "t", " ".join(words[(n * k) % 7] for k in range(1, 2 + n % 5)))
            for n in range(40)
        ],
    )
    whole = await writer.search("records", "t", "glucose insulin renal", FilterSpec(), 40)
    monkeypatch.setattr(lexical_store, "BUILD_CHUNK", 3)
    chunked = SqliteLexical(tmp_path / "lexical.db")
    try:
        again = await chunked.search("records", "t", "glucose insulin renal", FilterSpec(), 40)
        assert [(h.pk, round(h.score, 9)) for h in again] == [
            (h.pk, round(h.score, 9)) for h in whole
        ]
        assert len(whole) > 10
    finally:
        writer.close()
        chunked.close()


async def test_concurrent_searches_during_writes_see_whole_snapshots(tmp_path: Path) -> None:
    """Searches of one tenant run together (they share the index for reading) while
    another store on the file keeps writing: every search finds a whole batch or none of
    it, each hit with its fields, and afterwards every store agrees with a fresh one."""
    path = tmp_path / "lexical.db"
    writer, reader = SqliteLexical(path), SqliteLexical(path, readers=4)
    await writer.upsert("records", [doc(f"a/seed{i}", "a", f"Asthma note {i}") for i in range(50)])
    seen: list[int] = []

    async def search_repeatedly() -> None:
        for _ in range(15):
            hits = await reader.search("records", "a", "wheezing", FilterSpec(), 1000)
            assert all(h.fields.get("text", "").startswith("Wheezing") for h in hits)
            assert len(hits) % 20 == 0, f"{len(hits)} hits: a batch of 20 seen in part"
            seen.append(len(hits))

    async def write_batches() -> None:
        for batch in range(10):
            docs = [doc(f"a/w{batch}-{i}", "a", f"Wheezing episode {batch} {i}") for i in range(20)]
            await writer.upsert("records", docs)
            await asyncio.sleep(0.005)

    await asyncio.gather(write_batches(), *(search_repeatedly() for _ in range(6)))
    assert len(seen) == 90 and max(seen) <= 200
    final = await reader.search("records", "a", "wheezing", FilterSpec(), 1000)
    fresh = SqliteLexical(path)
    expected = await fresh.search("records", "a", "wheezing", FilterSpec(), 1000)
    assert [(h.pk, round(h.score, 6)) for h in final] == [
        (h.pk, round(h.score, 6)) for h in expected
    ]
    assert len(final) == 200
    for store in (writer, reader, fresh):
        store.close()
