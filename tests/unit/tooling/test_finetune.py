"""`hacs finetune`: pairs as the platform embeds them, clean held-out data, a real model trained.

The model is the shipped all-MiniLM-L6-v2 on the CPU; the data set is the small
BEIR directory of tests/support/beir.py, where every question has sibling
answers about the same condition (the hard negatives the miner should find).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.model_config import read_model_config, shipped_model_path
from services.kernel.retrieval.query_parser import QueryParser
from services.tooling.beir import Dataset, load
from services.tooling.finetune import (
    HELD_OUT_FILE,
    PROVENANCE_FILE,
    Corpus,
    FinetuneError,
    Options,
    Trainer,
    evidence_text,
    finetune,
    split_held_out,
    training_pairs,
)
from tests.support.beir import FACTS, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Dataset:
    return load(write_dataset(tmp_path / "set"), "train")


def test_pairs_are_what_the_platform_embeds(dataset: Dataset) -> None:
    pairs = training_pairs(dataset)
    assert len(pairs) == 12
    gout = next(p for p in pairs if p.document_id == "gout-causes")
    # The document as the indexer renders an Evidence record: title, then content.
    assert gout.document == "Gout\nUric acid crystals in the joint when blood uric acid stays high."
    assert gout.document == evidence_text("Gout", FACTS["gout"]["causes"])
    # The question as the search service embeds it: what query parsing leaves of it — a
    # question is left as written (no filter phrase is read from what a person asks).
    assert gout.query == QueryParser().parse("What causes gout ?").text == "What causes gout ?"
    assert QueryParser().parse("causes of gout in women").text == "causes gout"
    assert gout.negative_id == ""


def test_unjudged_and_irrelevant_pairs_are_left_out(tmp_path: Path) -> None:
    extra = "q-gout-causes\tasthma-causes\t0\nq-gout-causes\tno-such-document\t1\n"
    pairs = training_pairs(load(write_dataset(tmp_path / "set", extra_qrels=extra), "train"))
    assert {p.document_id for p in pairs if p.query_id == "q-gout-causes"} == {"gout-causes"}


def test_a_split_with_nothing_to_learn_is_refused() -> None:
    empty = Dataset("empty", [], {"q": "What is gout?"}, {"q": {"missing": 1}})
    with pytest.raises(FinetuneError, match="no question of the split"):
        training_pairs(empty)


def test_held_out_questions_and_their_documents_are_never_trained_on(dataset: Dataset) -> None:
    pairs = training_pairs(dataset)
    training, held_out = split_held_out(pairs, 3, seed=7)
    assert len({p.query_id for p in held_out}) == 3
    held_docs = {p.document_id for p in held_out}
    assert not held_docs & {p.document_id for p in training}
    assert not {p.query_id for p in held_out} & {p.query_id for p in training}
    again = split_held_out(pairs, 3, seed=7)
    assert again == (training, held_out)  # the seed fixes the split
    assert split_held_out(pairs, 7, seed=7) == (pairs, [])  # too few questions to hold out


@pytest.fixture(scope="module")
def trainer() -> Trainer:
    config = read_model_config("models/base", shipped_model_path())
    return Trainer(config, Options(batch_size=6, epochs=4, learning_rate=5e-5, max_length=64))


def test_the_trainer_reads_vectors_as_the_platform_embeds(
    dataset: Dataset, trainer: Trainer
) -> None:
    """The held-out figures and mined negatives come from the platform's own encoder."""
    texts = Corpus(dataset).texts
    seen: list[tuple[int, int]] = []
    mine = trainer.vectors(texts, query=False, progress=lambda d, t: seen.append((d, t)))
    platform = Encoder(trainer.config, device="cpu", precision="float32")
    theirs = platform.encode(texts, max_length=64, normalize=True).vectors
    np.testing.assert_allclose(mine, theirs, atol=1e-5)
    assert np.allclose(np.linalg.norm(mine, axis=1), 1.0, atol=1e-5)
    assert seen[-1] == (len(texts), len(texts))


def test_mined_negatives_are_near_misses_never_answers(dataset: Dataset, trainer: Trainer) -> None:
    pairs = training_pairs(dataset)
    training, held_out = split_held_out(pairs, 2, seed=1)
    excluded = {p.document_id for p in held_out}
    relevant = {q: set(g) for q, g in dataset.qrels.items()}
    corpus = Corpus(dataset)
    vectors = trainer.vectors(corpus.texts, query=False)
    options = Options(negative_depth=1)  # the best-ranked document nobody judged relevant
    mined = corpus.mine_negatives(trainer, vectors, training, relevant, excluded, options)
    assert [p.document_id for p in mined] == [p.document_id for p in training]
    for pair in mined:
        assert pair.negative_id
        assert pair.negative_id not in relevant[pair.query_id]
        assert pair.negative_id not in excluded
        assert pair.negative != pair.document
    # A near miss: most questions get another answer about the same condition.
    same_condition = sum(p.negative_id.split("-")[0] == p.document_id.split("-")[0] for p in mined)
    assert same_condition >= len(mined) // 2


def test_training_separates_answers_from_their_siblings(dataset: Dataset, tmp_path: Path) -> None:
    base = read_model_config("models/base", shipped_model_path())
    out = tmp_path / "model"
    options = Options(
        batch_size=5, epochs=6, learning_rate=5e-5, max_length=64, held_out_queries=2, seed=3
    )
    report = finetune(base, dataset, "train", out, options)
    assert report.steps == 12 and report.pairs == 10 and report.held_out == 2
    assert report.losses[-1] < report.losses[0]
    assert set(report.held_out_before) == set(report.held_out_after) == {"ndcg@10", "recall@100"}
    held_out = (out / HELD_OUT_FILE).read_text().splitlines()
    assert held_out[0] == "query-id\tcorpus-id\tscore" and len(held_out) == 3

    # What was written is an ordinary model directory the platform loads.
    config = read_model_config("models/tuned", out)
    assert (config.dimension, config.pooling, config.max_length) == (384, "mean", 256)
    provenance = json.loads((out / PROVENANCE_FILE).read_text())
    assert provenance["dataset"] == "set" and provenance["split"] == "train"

    def margin(encoder: Encoder) -> float:
        """Mean (answer score - best sibling score) over the questions."""
        pairs = training_pairs(dataset)
        queries = encoder.encode([p.query for p in pairs], max_length=64, normalize=True)
        texts = Corpus(dataset)
        docs = encoder.encode(texts.texts, max_length=64, normalize=True)
        scores = queries.vectors @ docs.vectors.T
        margins = []
        for row, pair in zip(scores, pairs, strict=True):
            own = texts.ids.index(pair.document_id)
            siblings = [
                s
                for i, s in enumerate(row)
                if i != own and texts.ids[i].split("-")[0] == pair.document_id.split("-")[0]
            ]
            margins.append(row[own] - max(siblings))
        return float(np.mean(margins))

    before = margin(Encoder(base, device="cpu"))
    after = margin(Encoder(config, device="cpu"))
    assert after > before + 0.02, (before, after)

    with pytest.raises(FinetuneError, match="not empty"):
        finetune(base, dataset, "train", out, options)


def test_the_command_refuses_bad_settings_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.cli import main

    data = write_dataset(tmp_path / "set")
    out = tmp_path / "model"
    argv = ["finetune", "--dataset", str(data), "--out", str(out)]
    assert main([*argv, "--batch-size", "1", "--max-length", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--batch-size must be at least 2" in err and "--max-length must be >= 0" in err
    nowhere = ["finetune", "--dataset", str(tmp_path / "nowhere"), "--out", str(out)]
    assert main([*nowhere, "--epochs", "0"]) == 2  # settings first: no data set is read
    assert "--epochs must be > 0" in capsys.readouterr().err
    assert main([*argv, "--split", "dev"]) == 2
    assert "qrels/dev.tsv is missing" in capsys.readouterr().err
    assert not out.exists()
