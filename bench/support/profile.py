"""py-spy around a benchmark phase: a flame graph and the top frames of where a process spends.

`py-spy` (PyPI) samples a running process from outside (ptrace), without changing its code;
`--nonblocking` reads the stacks without pausing it, so the figures of the phase it samples
move little; `--gil` keeps only the thread holding the interpreter lock, so the shares are
shares of the Python CPU time (gRPC's and SQLite's C threads outside the lock are not
seen). Every `hacs serve` process of the platform (the workers too) is sampled.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.support.measure import descendants_of

PY_SPY_HINT = "py-spy is not installed: .venv/bin/pip install py-spy"


@contextmanager
def sampled(
    pid: int, directory: str | None, seconds: float, name: str = "getrecord"
) -> Iterator[None]:
    """Sample `pid` and its children for about `seconds` while the body runs (no-op without
    a directory); then write `name`.svg and `name`.txt there and print the top frames."""
    if directory is None:
        yield
        return
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit(PY_SPY_HINT)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    samplers = []
    for i, target in enumerate([pid, *descendants_of(pid)]):
        for fmt, suffix in (("flamegraph", "svg"), ("raw", "txt")):
            samplers.append(
                subprocess.Popen(
                    [
                        py_spy,
                        "record",
                        "--pid",
                        str(target),
                        "--duration",
                        str(int(seconds)),
                        "--nonblocking",
                        "--gil",  # only the thread running Python: where the CPU goes
                        "--rate",
                        "200",
                        "--format",
                        fmt,
                        "--output",
                        str(out / f"{name}-{i}.{suffix}"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    try:
        yield
    finally:
        for sampler in samplers:
            sampler.wait(timeout=seconds + 60)
    for stacks in sorted(out.glob(f"{name}-*.txt")):
        print(f"top frames of {stacks.name} (inclusive share of samples):")
        for line in top_frames(stacks.read_text()):
            print(f"  {line}")


def top_frames(collapsed: str, count: int = 20) -> list[str]:
    """Where the samples are, from py-spy's collapsed stacks: the functions with the most
    samples of their own, then HACS's functions with the most samples under them."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack or not samples.isdigit():
            continue
        n = int(samples)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return ["(no samples)"]
    lines = [f"{total} samples; own time:"]
    lines += [f"{100 * n / total:5.1f} %  {frame}" for frame, n in own.most_common(count)]
    lines.append("HACS functions, with what they call:")
    ours = [(f, n) for f, n in inclusive.most_common() if "(services/" in f]
    lines += [f"{100 * n / total:5.1f} %  {frame}" for frame, n in ours[:count]]
    return lines
