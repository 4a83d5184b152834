"""`hacs eval retrieval` end to end on a small data set, with the shipped model and with --model.

The model given with --model here is the shipped model's own directory,
registered under another name: the path (registration through
EmbeddingService, the platform restarted with it as the default, indexing
and search) must then give exactly the shipped model's figures.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from services.evals import retrieval
from services.evals.retrieval import MODES, evaluate
from services.kernel.embedding.model_config import shipped_model_path
from tests.support.beir import write_dataset

# A person's message longer than Search takes (10,000 characters): refused, so it ranks
# nothing for the platform's rows, while the plain parts still rank it.
LONG = "wheezing and a cough at night " * 400


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("beir") / "conditions")


@pytest.fixture(scope="module")
def with_long_question(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = write_dataset(tmp_path_factory.mktemp("beir") / "long")
    with (directory / "queries.jsonl").open("a") as f:
        f.write(json.dumps({"_id": "q-long", "text": LONG}) + "\n")
    with (directory / "qrels" / "test.tsv").open("a") as f:
        f.write("q-long\tasthma-symptoms\t1\n")
    return directory


async def test_eval_runs_its_rows_beside_the_plain_parts_and_a_registered_model_gives_the_same(
    dataset: Path, with_long_question: Path, tmp_path: Path
) -> None:
    shipped_out, model_out = io.StringIO(), io.StringIO()
    per_query = tmp_path / "per-query.jsonl"
    shipped = await evaluate(
        with_long_question,
        split="test",
        max_queries=0,
        dump=None,
        out=shipped_out,
        baseline=True,
        per_query=per_query,
    )
    rows = {"bm25", "dense", "hybrid", "plain-bm25", "plain-dense"}
    assert set(shipped) == rows | {"query_parser", "refused_queries"}
    for name in rows:
        assert set(shipped[name]) == {"ndcg@10", "recall@100"}
        assert 0.0 < shipped[name]["ndcg@10"] <= 1.0
    # 12 documents: every answer is in the top 100 — but the refused question's, for the
    # platform's rows.
    assert all(shipped[name]["recall@100"] == round(12 / 13, 4) for name in MODES)
    assert shipped["plain-bm25"]["recall@100"] == shipped["plain-dense"]["recall@100"] == 1.0
    assert shipped["refused_queries"] == {"count": 1}
    assert "1 questions refused by Search" in shipped_out.getvalue()
    # What the parser (off in these searches) would have done to the thirteen questions.
    assert shipped["query_parser"]["queries"] == 13
    assert 0 <= shipped["query_parser"]["filtered"] <= 13
    lines = {line["query_id"]: line for line in map(json.loads, per_query.read_text().splitlines())}
    assert len(lines) == 13
    assert all(set(line["ndcg@10"]) == rows for line in lines.values())
    assert all(lines["q-long"]["ndcg@10"][name] == 0.0 for name in MODES)
    assert lines["q-long"]["ndcg@10"]["plain-bm25"] > 0.0
    for name in rows:  # the per-query figures are the ones averaged in the table
        mean = sum(line["ndcg@10"][name] for line in lines.values()) / 13
        assert abs(mean - shipped[name]["ndcg@10"]) < 1e-3
    dump = tmp_path / "candidates.json"
    plain = await evaluate(dataset, split="test", max_queries=0, dump=dump, out=io.StringIO())
    # The dump keeps each retriever's own scores (fusing offline normalises them again).
    dumped = json.loads(dump.read_text())
    runs = dumped["runs"]
    # It names its data set, so scripts/tune_search_fusion.py can rank the corpus again.
    assert Path(dumped["dataset"]) == dataset and dumped["split"] == "test"  # tmp_path: resolved
    for query, hits in runs["dense"].items():
        scores = [score for _, score in hits]
        assert scores == sorted(scores, reverse=True) and 0.0 < scores[0] < 1.0, query
    assert any(hits[0][1] > 1.0 for hits in runs["bm25"].values())  # BM25, not min-max
    registered = await evaluate(
        dataset, split="test", max_queries=0, dump=None, out=model_out, model=shipped_model_path()
    )
    assert "registered as models/evaluated, the default" in model_out.getvalue()
    assert "registered as" not in shipped_out.getvalue()
    assert set(registered) == {"bm25", "dense", "hybrid", "query_parser", "refused_queries"}
    assert all(plain[mode]["recall@100"] == 1.0 for mode in MODES)
    assert registered == plain


def test_a_model_directory_that_cannot_load_is_refused_before_any_work(
    dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 384}))
    args = _args(dataset, model=tmp_path)
    assert retrieval.main(args) == 2
    assert "has no weights" in capsys.readouterr().err


def _args(dataset: Path, *, model: Path | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    retrieval.add_arguments(parser)
    argv = ["--dataset", str(dataset)] + (["--model", str(model)] if model else [])
    return parser.parse_args(argv)
