"""scripts/build_dev_sets.py: the free-text development sets, built from their sources' files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from services.tooling.beir import load
from tests.support.scripts import load_script

build = load_script("build_dev_sets")


def _consumer_source(directory: Path) -> Path:
    directory.mkdir()
    icliniq = [
        {
            "question": "knee pain when running?",
            "question_text": "\r\n\t\tHi doctor,\nI am 24.\u00a0My knee hurts. Can I run?\t",
            "answer": "rest the knee for a week.",
        },
        {"question": "rash on arm", "question_text": "", "answer": "use a mild steroid cream."},
        {"question": "no answer here", "question_text": "x", "answer": ""},
    ]
    ehealth = [{"question": "dizzy after standing", "answer": "check your blood pressure."}]
    doctors = [{"question": "hip pain", "question_text": "Hip pain", "answer": "an mri helps."}]
    for name, items in (
        ("icliniqQAs.json", icliniq),
        ("ehealthforumQAs.json", ehealth),
        ("questionDoctorQAs.json", doctors),
    ):
        (directory / name).write_text(json.dumps(items))
    return directory


def test_consumer_qa_pairs_each_message_with_its_answer_among_every_answer(
    tmp_path: Path,
) -> None:
    source = _consumer_source(tmp_path / "source")
    out = tmp_path / "consumer-qa"
    assert build.main(["consumer-qa", str(source), str(out)]) == 0
    corpus = [json.loads(line) for line in (out / "corpus.jsonl").read_text().splitlines()]
    # Every answer is a document (the empty one is not); QuestionDoctors only as corpus.
    assert [d["_id"] for d in corpus] == ["icliniq-0", "icliniq-1", "ehealthforum-0",
                                          "questiondoctor-0"]  # fmt: skip
    assert all(d["title"] == "" for d in corpus)  # no title: the subject line is the query's
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (out / "queries.jsonl").read_text().splitlines()
    }
    # The subject line, then the message with its whitespace runs made single spaces.
    assert (
        queries["q-icliniq-0"]
        == "knee pain when running?\nHi doctor, I am 24. My knee hurts. Can I run?"
    )
    assert queries["q-icliniq-1"] == "rash on arm"
    assert set(queries) == {"q-icliniq-0", "q-icliniq-1", "q-ehealthforum-0"}
    splits = {split: load(out, split) for split in ("train", "test")}
    judged = {q: grades for d in splits.values() for q, grades in d.qrels.items()}
    assert judged == {
        "q-icliniq-0": {"icliniq-0": 1},
        "q-icliniq-1": {"icliniq-1": 1},
        "q-ehealthforum-0": {"ehealthforum-0": 1},
    }
    assert not set(splits["train"].qrels) & set(splits["test"].qrels)


def test_consumer_qa_titled_titles_each_answer_with_its_first_topic_tag(tmp_path: Path) -> None:
    source = _consumer_source(tmp_path / "source")
    items = json.loads((source / "icliniqQAs.json").read_text())
    items[0]["tags"] = ["knee pain", "sports"]
    (source / "icliniqQAs.json").write_text(json.dumps(items))
    out = tmp_path / "titled"
    assert build.main(["consumer-qa-titled", str(source), str(out)]) == 0
    titles = {
        json.loads(line)["_id"]: json.loads(line)["title"]
        for line in (out / "corpus.jsonl").read_text().splitlines()
    }
    assert titles["icliniq-0"] == "knee pain"
    assert titles["icliniq-1"] == ""  # no tag, no title


def test_kqa_grades_the_answer_and_its_statements(tmp_path: Path) -> None:
    source = tmp_path / "kqa"
    (source / "dataset").mkdir(parents=True)
    item = {
        "Question": "what is lexapro",
        "Free_form_answer": "An SSRI antidepressant.",
        "Must_have": ["Escitalopram is an SSRI"],
        "Nice_to_have": ["It may cause nausea", "It may cause insomnia"],
    }
    (source / "dataset" / "questions_w_answers.jsonl").write_text(json.dumps(item) + "\n")
    out = tmp_path / "out"
    assert build.main(["kqa", str(source), str(out)]) == 0
    split = build.split_of("kqa-0")
    grades = load(out, split).qrels["kqa-0"]
    assert grades == {
        "kqa-0-answer": 3,
        "kqa-0-must-have-0": 2,
        "kqa-0-nice-to-have-0": 1,
        "kqa-0-nice-to-have-1": 1,
    }


def test_a_bare_git_source_is_read_at_head_and_a_missing_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = _consumer_source(tmp_path / "work")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-qm", "data"], check=True)
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    assert build.main(["consumer-qa", str(bare), str(tmp_path / "a")]) == 0
    assert build.main(["consumer-qa", str(work), str(tmp_path / "b")]) == 0
    built_a = (tmp_path / "a" / "corpus.jsonl").read_text()
    assert built_a == (tmp_path / "b" / "corpus.jsonl").read_text()
    assert build.main(["kqa", str(bare), str(tmp_path / "c")]) == 2
    assert "has no dataset/questions_w_answers.jsonl" in capsys.readouterr().err


def test_splits_are_halves_and_stable() -> None:
    ids = [f"q-{i}" for i in range(2000)]
    test = [i for i in ids if build.split_of(i) == "test"]
    assert 900 < len(test) < 1100
    assert test == [i for i in ids if build.split_of(i) == "test"]
