"""scripts/tune_search_fusion.py: settings ranked by their worst margin over every part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.scripts import ROOT, load_script

tune = load_script("tune_search_fusion")

# "gout" is in one document's title and another's body: the title weight decides which
# of the two BM25 ranks first for the question about gout.
CORPUS = [
    {"_id": "d-title", "title": "Gout", "text": "Joint pain from crystals in the big toe."},
    {"_id": "d-body", "title": "Diet", "text": "Gout gout gout gout: less red meat and beer."},
    {"_id": "d-other", "title": "Asthma", "text": "Wheezing and shortness of breath."},
]
QUERIES = [{"_id": "q1", "text": "gout"}, {"_id": "q2", "text": "wheezing"}]
QRELS = {"q1": {"d-title": 1}, "q2": {"d-other": 1}}


def _dataset(directory: Path) -> Path:
    (directory / "qrels").mkdir(parents=True)
    (directory / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in CORPUS) + "\n")
    (directory / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in QUERIES) + "\n")
    lines = ["query-id\tcorpus-id\tscore"]
    lines += [f"{q}\t{d}\t{g}" for q, grades in QRELS.items() for d, g in grades.items()]
    (directory / "qrels" / "train.tsv").write_text("\n".join(lines) + "\n")
    return directory


def _dump(path: Path, dataset: Path | None, split: str = "train") -> Path:
    wrong = {"q1": [["d-other", 0.9], ["d-body", 0.5]], "q2": [["d-title", 0.9]]}
    right = {"q1": [["d-title", 0.9]], "q2": [["d-other", 0.9]]}
    payload = {
        "split": split,
        "qrels": QRELS,
        # The platform's dense list is wrong on both questions; the plain model is right.
        "runs": {"dense": wrong, "bm25": wrong, "plain-dense": right, "plain-bm25": wrong},
    }
    if dataset is not None:
        payload["dataset"] = str(dataset)
    path.write_text(json.dumps(payload))
    return path


def test_the_title_weight_reranks_with_the_platform_engine(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "set")
    dev = tune.read_set(str(_dump(tmp_path / "dump.json", dataset)), [1.0, 5.0])
    # Weight 1: four body mentions beat one title mention; weight 5: the title wins.
    assert dev.lexical[1.0]["q1"][0][0] == "d-body"
    assert dev.lexical[5.0]["q1"][0][0] == "d-title"
    assert dev.parts["bm25 x5.0"] == pytest.approx(1.0)
    assert dev.parts["bm25 x1.0"] < 1.0


def test_the_margin_is_taken_over_the_plain_parts_too(tmp_path: Path) -> None:
    dataset = _dataset(tmp_path / "set")
    dev = tune.read_set(str(_dump(tmp_path / "dump.json", None)) + f"={dataset}", [1.0])
    # The plain model ranks both right: no fusion of the platform's lists may claim a win.
    assert tune.best_part(dev, 1.0) == pytest.approx(1.0)
    fusion = tune.Fusion(method="weighted", semantic_weight=0.7, lexical_weight=0.3)
    assert tune.hybrid(dev, dev.lexical[1.0], fusion) - tune.best_part(dev, 1.0) < 0


def test_a_test_split_is_refused(tmp_path: Path) -> None:
    dump = _dump(tmp_path / "dump.json", _dataset(tmp_path / "set"), split="test")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "tune_search_fusion.py"), str(dump)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0 and "refusing to tune on a test split" in run.stderr


def test_a_dump_without_its_data_set_says_how_to_name_it(tmp_path: Path) -> None:
    dump = _dump(tmp_path / "dump.json", None)
    with pytest.raises(SystemExit, match="DATASET_DIR"):
        tune.read_set(str(dump), [1.0])
