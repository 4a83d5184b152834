"""Domain adaptation: fine-tune an embedding model on a labelled BEIR split.

`hacs finetune --dataset DIR --split train --out DIR` teaches a model (the
shipped all-MiniLM-L6-v2 by default) a site's own questions and documents.
Each training pair is a question and a document judged relevant to it, both
as the platform embeds them: the question as the search service embeds it
(after query parsing), the document as the indexer renders an Evidence
record. The loss is the in-batch softmax of sentence-transformers'
MultipleNegativesRankingLoss with one mined hard negative per question:
besides every other document of the batch, each question is shown a
document the base model ranks near the top for it but that is not judged
relevant (on templated sets these are the other answers about the same
topic, which random in-batch negatives almost never are). A document judged
relevant to a question is never counted against it.

A slice of the split's questions is held out and never trained on (nor are
their documents used as negatives); the held-out questions are searched
over the whole corpus before and after, and nDCG@10 / Recall@100 printed,
so the run says whether it helped without touching any other split. The output is
an ordinary Hugging Face model directory (the base model's tokenizer and
sentence-transformers metadata, the new weights, `hacs_finetune.json`
recording the data set, split, settings and figures, and the held-out
questions' qrels, so that fusion can be tuned on them); register it with
EmbeddingService.RegisterModel by its path, or measure it first with
`hacs eval retrieval --model DIR`.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from hacs.records.v1 import record_pb2

from services.kernel.embedding.encoder import Encoder, pool
from services.kernel.embedding.model_config import ModelConfig, read_model_config
from services.kernel.records.resource_types import BY_FIELD
from services.kernel.retrieval.query_parser import QueryParser
from services.kernel.retrieval.render import render
from services.tooling.beir import Dataset, ndcg_at, recall_at

# Files of the base model that describe it rather than hold its weights.
METADATA_FILES = (
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    "1_Pooling",
)
PROVENANCE_FILE = "hacs_finetune.json"
HELD_OUT_FILE = "held_out_qrels.tsv"  # BEIR qrels of the held-out questions


class FinetuneError(Exception):
    """Training that cannot start, with a sentence that says why."""


@dataclass(frozen=True)
class Pair:
    query: str
    document: str
    document_id: str
    query_id: str
    negative: str = ""  # a mined hard negative's text ("" = none)
    negative_id: str = ""


@dataclass(frozen=True)
class Options:
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_fraction: float = 0.1
    scale: float = 20.0  # cosine similarity x scale = the softmax's logits
    max_length: int = 0  # documents; 0: the model's own maximum
    query_max_length: int = 64
    held_out_queries: int = 500
    hard_negatives: bool = True
    negative_depth: int = 10  # a negative is drawn from the base model's top N non-relevant
    max_pairs: int = 0  # 0: every pair of the split
    seed: int = 13


@dataclass
class FinetuneReport:
    pairs: int = 0
    held_out: int = 0
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)  # mean loss per tenth of training
    held_out_before: dict[str, float] = field(default_factory=dict)  # ndcg@10, recall@100
    held_out_after: dict[str, float] = field(default_factory=dict)


def evidence_text(title: str, text: str) -> str:
    """A document as the indexer embeds it (an Evidence record's rendering)."""
    record = record_pb2.Record()
    record.evidence.title = title
    record.evidence.content = text
    return render(record, BY_FIELD["evidence"])[1]


def training_pairs(
    dataset: Dataset, parser: QueryParser | None = None, corpus: Corpus | None = None
) -> list[Pair]:
    """Every (question, relevant document) of the split, as the platform embeds them
    (`corpus`: the split's documents already rendered)."""
    parser = parser or QueryParser()
    rendered = (corpus or Corpus(dataset)).text_of
    pairs = []
    for query_id, grades in sorted(dataset.qrels.items()):
        query = dataset.queries.get(query_id)
        if not query:
            continue
        query_text = parser.parse(query).text or query
        for doc_id, grade in sorted(grades.items()):
            text = rendered.get(doc_id)
            if grade > 0 and text is not None:
                pairs.append(Pair(query_text, text, doc_id, query_id))
    if not pairs:
        raise FinetuneError(
            f"{dataset.name}: no question of the split has a relevant document in the corpus"
        )
    return pairs


def split_held_out(pairs: list[Pair], count: int, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(training, held out): whole questions and their documents are held out.

    A training pair whose document is also a held-out document is dropped, so
    the held-out figure measures questions *and* documents the model never saw.
    """
    query_ids = sorted({p.query_id for p in pairs})
    if count <= 0 or len(query_ids) < 2 * count:
        return pairs, []
    held = set(random.Random(seed).sample(query_ids, count))
    held_out = [p for p in pairs if p.query_id in held]
    held_docs = {p.document_id for p in held_out}
    training = [p for p in pairs if p.query_id not in held and p.document_id not in held_docs]
    return training, held_out


class Trainer:
    """A base model, trained in place; `save` writes the result."""

    def __init__(self, config: ModelConfig, options: Options) -> None:
        import torch

        if config.kind != "embedding":
            raise FinetuneError(f"{config.name} is a {config.kind} model, not an embedding model")
        self.config = config
        self.options = options
        self._torch = torch
        torch.manual_seed(options.seed)
        # The platform's encoder in float32: its model is what gets trained, and the
        # vectors read between steps come through its batching and pooling.
        self._encoder = Encoder(config, "auto", "float32")
        self.device = self._encoder.device
        self.model = self._encoder.model
        self.tokenizer = self._encoder.tokenizer
        self.doc_max_length = min(options.max_length or config.max_length, config.max_length)

    def _embed(self, texts: list[str], max_length: int) -> Any:
        """Unit vectors with gradients, for the loss."""
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        ).to(self.device)
        output = self.model(**batch).last_hidden_state
        pooled = pool(output, batch["attention_mask"], self.config.pooling)
        # Cosine similarity, as sentence-transformers' MultipleNegativesRankingLoss.
        return self._torch.nn.functional.normalize(pooled, p=2, dim=1)

    def vectors(
        self, texts: list[str], *, query: bool, progress: Callable[[int, int], None] | None = None
    ) -> np.ndarray:
        """Unit vectors of `texts` as the trained model embeds them now."""
        max_length = self.options.query_max_length if query else self.doc_max_length
        prefix = self.config.query_prefix if query else self.config.document_prefix
        self.model.eval()
        encoded = self._encoder.encode(
            [prefix + t for t in texts], max_length=max_length, normalize=True, progress=progress
        )
        return encoded.vectors

    def train(
        self,
        pairs: list[Pair],
        relevant: dict[str, set[str]],
        progress: Callable[[int, int, float], None] | None = None,
    ) -> tuple[int, list[float]]:
        """Train on `pairs`; return (steps, mean loss per tenth of the run).

        relevant: question id -> every document judged relevant to it, none of
        which may act as that question's negative.
        """
        torch = self._torch
        o = self.options
        rng = random.Random(o.seed)
        order: list[int] = []
        for _ in range(math.ceil(o.epochs)):
            epoch = list(range(len(pairs)))
            rng.shuffle(epoch)
            order.extend(epoch)
        order = order[: max(1, round(len(pairs) * o.epochs))]
        batches = [order[i : i + o.batch_size] for i in range(0, len(order), o.batch_size)]
        batches = [b for b in batches if len(b) > 1]  # one pair alone has no negative
        if not batches:
            raise FinetuneError("too few training pairs for one batch of two")
        optimiser = torch.optim.AdamW(self.model.parameters(), lr=o.learning_rate)
        warmup = max(1, int(len(batches) * o.warmup_fraction))

        def rate(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (len(batches) - step) / max(1, len(batches) - warmup))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
        self.model.train()
        losses: list[float] = []
        tenths: list[float] = []
        q_prefix, d_prefix = self.config.query_prefix, self.config.document_prefix
        for step, batch in enumerate(batches):
            chosen = [pairs[i] for i in batch]
            texts = [d_prefix + p.document for p in chosen]
            ids = [p.document_id for p in chosen]
            for p in chosen:
                if p.negative_id:
                    texts.append(d_prefix + p.negative)
                    ids.append(p.negative_id)
            queries = self._embed([q_prefix + p.query for p in chosen], o.query_max_length)
            docs = self._embed(texts, self.doc_max_length)
            logits = queries @ docs.T * o.scale
            # A document judged relevant to a question is no negative for it.
            judged = torch.tensor(
                [[d in relevant.get(p.query_id, ()) for d in ids] for p in chosen],
                device=self.device,
            )
            judged[:, : len(chosen)].fill_diagonal_(False)
            logits = logits.masked_fill(judged, float("-inf"))
            target = torch.arange(len(chosen), device=self.device)
            loss = torch.nn.functional.cross_entropy(logits, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, len(batches), float(np.mean(losses[-20:])))
            if (step + 1) * 10 // len(batches) > len(tenths):
                tenths.append(round(float(np.mean(losses[-max(1, len(batches) // 10) :])), 4))
        self.model.eval()
        return len(batches), tenths

    def save(self, out: Path, provenance: dict[str, Any]) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(out), safe_serialization=True)
        self.tokenizer.save_pretrained(str(out))
        for name in METADATA_FILES:
            source = self.config.path / name
            if source.is_dir():
                shutil.copytree(source, out / name, dirs_exist_ok=True)
            elif source.is_file():
                shutil.copy2(source, out / name)
        (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")


def finetune(
    base: ModelConfig,
    dataset: Dataset,
    split: str,
    out: Path,
    options: Options,
    say: Callable[[str, bool], None] | None = None,
) -> FinetuneReport:
    """Train `base` on the split's pairs, measure it on held-out questions, save it to `out`."""
    if out.exists() and any(out.iterdir()):
        raise FinetuneError(f"{out} exists and is not empty; choose a new directory")
    say = say or (lambda _line, _final: None)
    corpus = Corpus(dataset)
    pairs = training_pairs(dataset, corpus=corpus)
    training, held_out = split_held_out(pairs, options.held_out_queries, options.seed)
    if options.max_pairs:
        training = training[: options.max_pairs]
    relevant: dict[str, set[str]] = {}
    for query_id, grades in dataset.qrels.items():
        relevant[query_id] = {d for d, g in grades.items() if g > 0}
    report = FinetuneReport(pairs=len(training), held_out=len(held_out))
    say(f"{len(training):,} training pairs, {len(held_out):,} questions held out", True)
    trainer = Trainer(base, options)

    def embedding(label: str) -> Callable[[int, int], None]:
        return lambda done, total: say(f"{label}: {done:,}/{total:,}", done == total)

    vectors = trainer.vectors(corpus.texts, query=False, progress=embedding("corpus, base model"))
    if held_out:
        report.held_out_before = corpus.figures(trainer, vectors, held_out, dataset)
        say(f"held-out questions, base model: {_figures(report.held_out_before)}", True)
    if options.hard_negatives:
        excluded = {p.document_id for p in held_out}
        training = corpus.mine_negatives(trainer, vectors, training, relevant, excluded, options)
        say(f"hard negatives for {sum(1 for p in training if p.negative_id):,} pairs", True)
    started = time.monotonic()

    def progress(step: int, total: int, loss: float) -> None:
        left = (time.monotonic() - started) / step * (total - step)
        say(
            f"training: step {step:,}/{total:,}, loss {loss:.3f}, {left / 60:.0f} min left",
            step == total,
        )

    report.steps, report.losses = trainer.train(training, relevant, progress)
    report.seconds = round(time.monotonic() - started, 1)
    if held_out:
        vectors = trainer.vectors(corpus.texts, query=False, progress=embedding("corpus, trained"))
        report.held_out_after = corpus.figures(trainer, vectors, held_out, dataset)
        say(f"held-out questions, trained:    {_figures(report.held_out_after)}", True)
    trainer.save(
        out,
        {
            "base_model": str(base.path),
            "dataset": dataset.name,
            "split": split,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": asdict(options),
            "report": asdict(report),
        },
    )
    if held_out:
        lines = ["query-id\tcorpus-id\tscore"] + [
            f"{q}\t{d}\t{g}"
            for q in sorted({p.query_id for p in held_out})
            for d, g in sorted(dataset.qrels[q].items())
        ]
        (out / HELD_OUT_FILE).write_text("\n".join(lines) + "\n")
    read_model_config("models/finetuned", out)  # what was written loads as a model
    return report


class Corpus:
    """Every document of the data set, rendered as the indexer renders it."""

    def __init__(self, dataset: Dataset) -> None:
        self.ids = [d.id for d in dataset.corpus]
        self.texts = [evidence_text(d.title, d.text) for d in dataset.corpus]
        self.text_of = dict(zip(self.ids, self.texts, strict=True))

    def _top(self, queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
        """Row i: the indices of the k best documents for query i, best first."""
        k = min(k, len(self.ids))
        tops = []
        for start in range(0, len(queries), 1024):
            scores = queries[start : start + 1024] @ vectors.T
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            best = np.take_along_axis(scores, part, axis=1)
            tops.append(np.take_along_axis(part, np.argsort(-best, axis=1, kind="stable"), axis=1))
        return np.concatenate(tops) if tops else np.zeros((0, k), np.int64)

    def figures(
        self, trainer: Trainer, vectors: np.ndarray, held_out: list[Pair], dataset: Dataset
    ) -> dict[str, float]:
        """Dense-only nDCG@10 and Recall@100 of the held-out questions over the whole corpus."""
        query_ids = sorted({p.query_id for p in held_out})
        text = {p.query_id: p.query for p in held_out}
        queries = trainer.vectors([text[q] for q in query_ids], query=True)
        top = self._top(queries, vectors, 100)
        ndcg, recall = [], []
        for query_id, row in zip(query_ids, top, strict=True):
            ranked = [self.ids[i] for i in row]
            ndcg.append(ndcg_at(ranked, dataset.qrels[query_id]))
            recall.append(recall_at(ranked, dataset.qrels[query_id]))
        return {
            "ndcg@10": round(float(np.mean(ndcg)), 4),
            "recall@100": round(float(np.mean(recall)), 4),
        }

    def mine_negatives(
        self,
        trainer: Trainer,
        vectors: np.ndarray,
        pairs: list[Pair],
        relevant: dict[str, set[str]],
        excluded: set[str],
        options: Options,
    ) -> list[Pair]:
        """Each pair with a document the base model ranks high but nobody judged relevant.

        Drawn at random from the top `negative_depth` such documents; never a
        document judged relevant to the question, one with the same text as
        its answer (a duplicate), or one of `excluded` (held-out documents).
        """
        rng = random.Random(options.seed)
        queries = trainer.vectors([p.query for p in pairs], query=True)
        top = self._top(queries, vectors, options.negative_depth + 20)
        mined = []
        for pair, row in zip(pairs, top, strict=True):
            judged = relevant.get(pair.query_id, set())
            choices = [
                i
                for i in row
                if self.ids[i] not in judged
                and self.ids[i] not in excluded
                and self.texts[i] != pair.document
            ][: options.negative_depth]
            if choices:
                i = rng.choice(choices)
                pair = replace(pair, negative=self.texts[i], negative_id=self.ids[i])
            mined.append(pair)
        return mined


def _figures(figures: dict[str, float]) -> str:
    return f"dense nDCG@10 {figures['ndcg@10']:.4f}, Recall@100 {figures['recall@100']:.4f}"
