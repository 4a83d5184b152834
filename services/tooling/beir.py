"""BEIR-format data sets: corpus.jsonl, queries.jsonl, qrels/{split}.tsv.

corpus.jsonl: {"_id", "title", "text"} per line; queries.jsonl: {"_id",
"text"}; qrels/{split}.tsv: a header line, then query-id, corpus-id, score
(graded: 0 = not relevant, higher = more relevant).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Document:
    id: str
    title: str
    text: str


@dataclass(frozen=True)
class Dataset:
    name: str
    corpus: list[Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]  # query id -> {doc id: grade}
    duplicate_documents: int = 0  # corpus lines whose _id was already seen (skipped)


class DatasetError(Exception):
    """A data set that cannot be read as its format says (any `hacs eval` or tool format)."""


def _lines(path: Path) -> Iterator[dict[str, object]]:
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing (a BEIR data set has corpus.jsonl, queries.jsonl, qrels/)"
        )
    with path.open() as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise DatasetError(f"{path}:{number} is not JSON: {exc}") from exc


def load(directory: Path, split: str) -> Dataset:
    qrels_path = directory / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(
            f"{qrels_path} is missing; splits here: "
            f"{sorted(p.stem for p in (directory / 'qrels').glob('*.tsv'))}"
        )
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader, None)
        if header and header[-1].strip().isdigit():  # no header line
            qrels.setdefault(header[0], {})[header[1]] = int(header[2])
        for row in reader:
            if len(row) >= 3:
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    corpus: list[Document] = []
    seen: set[str] = set()
    duplicates = 0
    for d in _lines(directory / "corpus.jsonl"):
        doc = Document(str(d["_id"]), str(d.get("title") or ""), str(d.get("text") or ""))
        if doc.id in seen:  # the first document with an id wins; the rest are counted
            duplicates += 1
            continue
        seen.add(doc.id)
        corpus.append(doc)
    queries = {
        str(q["_id"]): str(q["text"])
        for q in _lines(directory / "queries.jsonl")
        if str(q["_id"]) in qrels
    }
    missing = set(qrels) - set(queries)
    if missing:
        raise DatasetError(
            f"{len(missing)} queries of {qrels_path.name} are not in queries.jsonl, "
            f"e.g. {sorted(missing)[:3]}"
        )
    return Dataset(directory.name, corpus, queries, qrels, duplicates)


def ndcg_at(ranked: list[str], grades: dict[str, int], k: int = 10) -> float:
    """nDCG@k with graded (linear) gains, as trec_eval computes it."""
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: list[str], grades: dict[str, int], k: int = 100) -> float:
    relevant = {d for d, g in grades.items() if g > 0}
    return len(relevant & set(ranked[:k])) / len(relevant) if relevant else 0.0
