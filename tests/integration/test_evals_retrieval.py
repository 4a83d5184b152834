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


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("beir") / "conditions")


async def test_eval_runs_its_rows_beside_the_plain_parts_and_a_registered_model_gives_the_same(
    dataset: Path, tmp_path: Path
) -> None:
    shipped_out, model_out = io.StringIO(), io.StringIO()
    per_query = tmp_path / "per-query.jsonl"
    shipped = await evaluate(
        dataset,
        split="test",
        max_queries=0,
        dump=None,
        out=shipped_out,
        baseline=True,
        per_query=per_query,
    )
    rows = {"bm25", "dense", "hybrid", "plain-bm25", "plain-dense"}
    assert set(shipped) == rows | {"query_parser"}
    for name in rows:
        assert set(shipped[name]) == {"ndcg@10", "recall@100"}
        assert 0.0 < shipped[name]["ndcg@10"] <= 1.0
        assert shipped[name]["recall@100"] == 1.0  # 12 documents: every answer in the top 100
    # What the parser (off in these searches) would have done to the twelve questions.
    assert shipped["query_parser"]["queries"] == 12
    assert 0 <= shipped["query_parser"]["filtered"] <= 12
    lines = [json.loads(line) for line in per_query.read_text().splitlines()]
    assert len(lines) == 12
    assert all(set(line["ndcg@10"]) == rows for line in lines)
    for name in rows:  # the per-query figures are the ones averaged in the table
        mean = sum(line["ndcg@10"][name] for line in lines) / 12
        assert abs(mean - shipped[name]["ndcg@10"]) < 1e-3
    registered = await evaluate(
        dataset, split="test", max_queries=0, dump=None, out=model_out, model=shipped_model_path()
    )
    assert "registered as models/evaluated, the default" in model_out.getvalue()
    assert "registered as" not in shipped_out.getvalue()
    assert set(registered) == {"bm25", "dense", "hybrid", "query_parser"}
    assert {k: registered[k] for k in MODES} == {k: shipped[k] for k in MODES}


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
