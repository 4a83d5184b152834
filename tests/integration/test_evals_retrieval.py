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
from services.evals.retrieval import evaluate
from services.kernel.embedding.model_config import shipped_model_path
from tests.support.beir import write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("beir") / "conditions")


async def test_eval_runs_three_rows_and_a_registered_model_gives_the_same_figures(
    dataset: Path,
) -> None:
    shipped_out, model_out = io.StringIO(), io.StringIO()
    shipped = await evaluate(dataset, split="test", max_queries=0, dump=None, out=shipped_out)
    assert set(shipped) == {"bm25", "dense", "hybrid"}
    for row in shipped.values():
        assert set(row) == {"ndcg@10", "recall@100"}
        assert 0.0 < row["ndcg@10"] <= 1.0
        assert row["recall@100"] == 1.0  # 12 documents: every answer is in the top 100
    registered = await evaluate(
        dataset, split="test", max_queries=0, dump=None, out=model_out, model=shipped_model_path()
    )
    assert "registered as models/evaluated, the default" in model_out.getvalue()
    assert "registered as" not in shipped_out.getvalue()
    assert registered == shipped


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
