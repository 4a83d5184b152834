"""Build the free-text development sets for retrieval (BEIR format) from public sources.

MedQuAD's questions are templates that repeat their answer's title ("What are
the symptoms of X?"); defaults tuned on them alone did not hold on real
questions. These sets are people's own questions. Neither is copied into the
repository: each is built from a snapshot of its public GitHub repository
(`fetch`, or `git clone`), into a directory you name. docs/evaluation-data.md
says where each comes from, its licence, and how it is made.

    consumer-qa  LasseRegin/medical-question-answer-data (MIT; the text itself was
                 published on iCliniq, eHealthForum and QuestionDoctors). Queries: the
                 636 iCliniq and eHealthForum messages, subject line and body, as their
                 authors wrote them (long, often several questions, misspellings).
                 Corpus: every doctor's answer in the three files (6,315), no title.
                 Relevant (grade 1): the answer given to that message.
    consumer-qa-titled
                 The same, each answer titled with its question's first topic tag
                 on the site ("hypothyroidism", "levocetirizine"), as MedQuAD's
                 answers are titled with their focus: for the title weight's effect
                 on free-text questions.
    kqa          Itaymanes/K-QA (MIT): 201 real patient questions with a physician's
                 answer and the statements an answer must (2) or may (1) contain.
                 Corpus: each physician answer (grade 3 for its question) and each
                 statement (grade 2 must-have, 1 nice-to-have), plus the consumer-qa
                 answers as distractors when --distractors names that source.

Splits: test and train, half each, by a hash of the query id (stable across
runs and machines). Tune on train; report on test.

    .venv/bin/python scripts/build_dev_sets.py consumer-qa SOURCE OUT
    .venv/bin/python scripts/build_dev_sets.py kqa SOURCE OUT [--distractors SOURCE2]

SOURCE is a checkout or a bare git directory (its HEAD is read).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

Documents = list[dict[str, str]]
Qrels = list[tuple[str, str, int]]

CONSUMER_FILES = ("icliniqQAs.json", "ehealthforumQAs.json", "questionDoctorQAs.json")
QUERY_FILES = ("icliniqQAs.json", "ehealthforumQAs.json")  # long messages (QuestionDoctors:
# the title only, and several answers per question)
KQA_FILE = "dataset/questions_w_answers.jsonl"


class SourceError(Exception):
    pass


def read_source(source: Path, path: str) -> str:
    """A file of a checkout, or of a bare git directory's HEAD."""
    if (source / path).is_file():
        return (source / path).read_text(encoding="utf-8")
    if (source / "HEAD").is_file():  # a bare repository
        shown = subprocess.run(
            ["git", f"--git-dir={source}", "show", f"HEAD:{path}"],
            capture_output=True,
            check=False,
        )
        if shown.returncode == 0:
            return shown.stdout.decode("utf-8")
    raise SourceError(f"{source} has no {path}")


def split_of(query_id: str) -> str:
    return "test" if int(hashlib.sha256(query_id.encode()).hexdigest(), 16) % 2 == 0 else "train"


def clean(text: str) -> str:
    """Whitespace runs to one space (the scraped text carries tabs, CRs, NBSPs)."""
    return re.sub(r"\s+", " ", text.replace("\u00a0", " ")).strip()


def consumer_answers(source: Path) -> Iterable[tuple[str, str, dict[str, object]]]:
    """(file, doc id, item) for every answer of the three files, in file order."""
    for name in CONSUMER_FILES:
        items = json.loads(read_source(source, name))
        prefix = name.removesuffix("QAs.json").lower()
        for number, item in enumerate(items):
            yield name, f"{prefix}-{number}", item


def build_consumer_qa(source: Path, titled: bool = False) -> tuple[Documents, Documents, Qrels]:
    corpus: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    qrels: list[tuple[str, str, int]] = []
    for name, doc_id, item in consumer_answers(source):
        answer = clean(str(item.get("answer") or ""))
        if not answer:
            continue
        tags = [clean(str(t)) for t in item.get("tags") or [] if str(t).strip()]
        title = tags[0] if titled and tags else ""
        corpus.append({"_id": doc_id, "title": title, "text": answer})
        if name in QUERY_FILES:
            subject = clean(str(item.get("question") or ""))
            body = clean(str(item.get("question_text") or ""))
            text = f"{subject}\n{body}" if body and body.lower() != subject.lower() else subject
            if text:
                query_id = f"q-{doc_id}"
                queries.append({"_id": query_id, "text": text})
                qrels.append((query_id, doc_id, 1))
    return corpus, queries, qrels


def build_kqa(source: Path, distractors: Path | None) -> tuple[Documents, Documents, Qrels]:
    corpus: list[dict[str, str]] = []
    queries: list[dict[str, str]] = []
    qrels: list[tuple[str, str, int]] = []
    lines = [line for line in read_source(source, KQA_FILE).splitlines() if line.strip()]
    for number, line in enumerate(lines):
        item = json.loads(line)
        query_id = f"kqa-{number}"
        queries.append({"_id": query_id, "text": clean(item["Question"])})
        answer_id = f"kqa-{number}-answer"
        corpus.append({"_id": answer_id, "title": "", "text": clean(item["Free_form_answer"])})
        qrels.append((query_id, answer_id, 3))
        for grade, key in ((2, "Must_have"), (1, "Nice_to_have")):
            for k, statement in enumerate(item.get(key) or []):
                doc_id = f"kqa-{number}-{key.lower().replace('_', '-')}-{k}"
                corpus.append({"_id": doc_id, "title": "", "text": clean(statement)})
                qrels.append((query_id, doc_id, grade))
    if distractors is not None:
        for _, doc_id, item in consumer_answers(distractors):
            answer = clean(str(item.get("answer") or ""))
            if answer:
                corpus.append({"_id": doc_id, "title": "", "text": answer})
    return corpus, queries, qrels


def write(out: Path, corpus: Documents, queries: Documents, qrels: Qrels) -> dict[str, int]:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w") as f:
        for doc in corpus:
            f.write(json.dumps(doc, ensure_ascii=False) + "\n")
    with (out / "queries.jsonl").open("w") as f:
        for query in queries:
            f.write(json.dumps(query, ensure_ascii=False) + "\n")
    counts = {"documents": len(corpus), "queries": len(queries)}
    for split in ("train", "test"):
        rows = [r for r in qrels if split_of(r[0]) == split]
        with (out / "qrels" / f"{split}.tsv").open("w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for query_id, doc_id, grade in rows:
                f.write(f"{query_id}\t{doc_id}\t{grade}\n")
        counts[f"{split}_queries"] = len({r[0] for r in rows})
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("set", choices=("consumer-qa", "consumer-qa-titled", "kqa"))
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--distractors",
        type=Path,
        default=None,
        help="kqa: add the consumer-qa answers of this source as unjudged documents",
    )
    args = parser.parse_args(argv)
    try:
        if args.set.startswith("consumer-qa"):
            built = build_consumer_qa(args.source, titled=args.set == "consumer-qa-titled")
        else:
            built = build_kqa(args.source, args.distractors)
    except (SourceError, ValueError, KeyError) as exc:
        print(f"build_dev_sets: {exc}", file=sys.stderr)
        return 2
    counts = write(args.out, *built)
    print(json.dumps({"set": args.set, "out": str(args.out), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
