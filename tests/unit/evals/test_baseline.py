"""The plain components `hacs eval retrieval --baseline` runs beside the platform."""

from __future__ import annotations

from services.evals.baseline import plain_bm25, plain_dense
from services.kernel.embedding.model_config import shipped_model_path
from services.tooling.beir import Dataset, Document

CORPUS = [
    Document("asthma", "Asthma", "Wheezing and shortness of breath, worse at night."),
    Document("gout", "Gout", "A sudden painful swollen big toe from uric acid crystals."),
    Document("glaucoma", "Glaucoma", "Raised pressure inside the eye damages the optic nerve."),
    Document("sunburn", "Sunburn", "Red, hot, sore skin after too long in strong sunlight."),
]
QUERIES = {
    "toe": "my big toe is swollen and really painful since last night",
    "eye": "is high eye pressure dangerous for the nerve",
    "unknown": "zzzz qqqq",
}
DATASET = Dataset(
    "tiny",
    CORPUS,
    QUERIES,
    {"toe": {"gout": 1}, "eye": {"glaucoma": 1}, "unknown": {"sunburn": 1}},
)


def test_plain_bm25_ranks_by_shared_words_and_answers_nothing_for_unknown_words() -> None:
    runs = plain_bm25(DATASET, depth=10)
    assert runs["toe"][0][0] == "gout"
    assert runs["eye"][0][0] == "glaucoma"
    scores = [score for _, score in runs["toe"]]
    assert scores == sorted(scores, reverse=True) and all(s > 0 for s in scores)
    assert runs["unknown"] == []  # no document has either word: no hits, no error


def test_plain_dense_ranks_by_meaning_with_the_raw_model() -> None:
    seen: list[tuple[int, int]] = []
    runs = plain_dense(
        DATASET, shipped_model_path(), depth=2, progress=lambda _, d, t: seen.append((d, t))
    )
    assert runs["toe"][0][0] == "gout"
    assert runs["eye"][0][0] == "glaucoma"
    assert all(len(hits) == 2 for hits in runs.values())  # the depth asked for
    assert all(-1.0 <= score <= 1.0 for hits in runs.values() for _, score in hits)  # cosines
    assert seen[-1] == (4, 4)  # progress over every document
