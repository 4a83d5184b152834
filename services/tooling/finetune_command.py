"""`hacs finetune`: the command line of services/tooling/finetune.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

HELP = "fine-tune an embedding model on a labelled BEIR split (domain adaptation)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from services.tooling.finetune import Options

    d = Options()
    parser.add_argument(
        "--dataset", required=True, help="directory with corpus.jsonl, queries.jsonl, qrels/"
    )
    parser.add_argument("--split", default="train", help="qrels split to train on (default: train)")
    parser.add_argument("--out", required=True, type=Path, help="new directory for the model")
    parser.add_argument(
        "--base",
        type=Path,
        default=None,
        help="Hugging Face model directory to start from (default: the shipped all-MiniLM-L6-v2)",
    )
    parser.add_argument("--epochs", type=float, default=d.epochs)
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--learning-rate", type=float, default=d.learning_rate)
    parser.add_argument(
        "--max-length",
        type=int,
        default=d.max_length,
        help="document tokens seen in training (default: the model's maximum)",
    )
    parser.add_argument(
        "--held-out-queries",
        type=int,
        default=d.held_out_queries,
        help="questions kept out of training to measure the model before and after",
    )
    parser.add_argument(
        "--no-hard-negatives",
        dest="hard_negatives",
        action="store_false",
        help="in-batch negatives only (no mining with the base model)",
    )
    parser.add_argument("--max-pairs", type=int, default=0, help="train on the first N pairs only")
    parser.add_argument("--seed", type=int, default=d.seed)


def main(args: Any) -> int:
    from services.kernel.embedding.model_config import (
        ModelLoadError,
        read_model_config,
        shipped_model_path,
    )
    from services.tooling.beir import DatasetError, load
    from services.tooling.finetune import FinetuneError, Options, finetune
    from services.tooling.progress import Progress

    progress = Progress(sys.stderr)
    options = Options(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_length=args.max_length,
        held_out_queries=args.held_out_queries,
        hard_negatives=args.hard_negatives,
        max_pairs=args.max_pairs,
        seed=args.seed,
    )
    problems = [
        text
        for bad, text in (
            (options.batch_size < 2, "--batch-size must be at least 2"),
            (options.epochs <= 0, "--epochs must be > 0"),
            (options.learning_rate <= 0, "--learning-rate must be > 0"),
            (options.max_length < 0, "--max-length must be >= 0 (0: the model's maximum)"),
            (options.held_out_queries < 0, "--held-out-queries must be >= 0"),
            (options.max_pairs < 0, "--max-pairs must be >= 0"),
        )
        if bad
    ]
    try:
        if problems:  # named before the model or the data set is read
            raise FinetuneError("; ".join(problems))
        base = read_model_config("models/base", args.base or shipped_model_path())
        dataset = load(Path(args.dataset), args.split)
        report = finetune(base, dataset, args.split, args.out, options, say=progress.show)
    except (DatasetError, FinetuneError, ModelLoadError) as exc:
        print(f"hacs finetune: {exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {report.steps:,} steps over {report.pairs:,} pairs "
        f"in {report.seconds / 60:.1f} min"
    )
    if report.held_out_before:
        before, after = report.held_out_before, report.held_out_after
        print(
            f"held-out questions ({report.held_out:,}), dense over the whole corpus: "
            f"nDCG@10 {before['ndcg@10']:.4f} -> {after['ndcg@10']:.4f}, "
            f"Recall@100 {before['recall@100']:.4f} -> {after['recall@100']:.4f}"
        )
    print(f"measure it: hacs eval retrieval --dataset DIR --model {args.out}")
    return 0
