"""The embedded BM25 engine (SQLite FTS5): ranking, filters, tenant scoping, deletes."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from services.search.expressions import FilterSpec
from services.search.lexical import LAYOUT_VERSION, Fts5Lexical, fts_query
from services.search.vector_index import IndexDoc


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
    fts = Fts5Lexical(tmp_path / "lexical.db")
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


def test_query_words_cannot_be_fts_syntax() -> None:
    assert (
        fts_query('NEAR(a b) OR "x" -y AND z*')
        == '"near" OR "a" OR "b" OR "or" OR "x" OR "y" OR "and" OR "z"'
    )
    assert fts_query("?!") == ""


async def test_a_title_match_outranks_a_passing_mention_in_records(tmp_path: Path) -> None:
    fts = Fts5Lexical(tmp_path / "lexical.db")
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
    assert [h.pk for h in hits] == ["a/titled", "a/mention"]
    fts.close()


async def test_a_version_1_index_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "lexical.db"
    fts = Fts5Lexical(path)
    await fts.upsert("records", [doc("a/1", "a", "Asthma. Wheezing at night.", title="Asthma")])
    fts.close()
    # Rewrite the file to the version 1 layout: one fts column, user_version 0.
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        DROP TABLE fts;
        CREATE VIRTUAL TABLE fts USING fts5 (text, tokenize = 'porter unicode61');
        INSERT INTO fts (rowid, text) SELECT id, 'Asthma. Wheezing at night.' FROM docs;
        PRAGMA user_version = 0;
        """
    )
    conn.close()

    fts = Fts5Lexical(path)
    hits = await fts.search("records", "a", "wheezing", FilterSpec(), 10)
    assert [(h.pk, h.fields["text"]) for h in hits] == [("a/1", "Asthma. Wheezing at night.")]
    fts.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (LAYOUT_VERSION,)
    assert [r[1] for r in conn.execute("PRAGMA table_info(fts)")] == ["title", "text"]
    assert conn.execute("SELECT title FROM fts").fetchall() == [("Asthma",)]
    conn.close()
