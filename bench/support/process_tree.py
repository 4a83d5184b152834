"""Memory and CPU of a process with every process it started (read from /proc).

A pod's memory is its whole process tree's: a `hacs serve` process and, for the
embedding service, the child process the model runs in. The sum of the tree's
resident sizes (VmRSS) counts a page shared between two members of one tree twice
(the shared libraries both map), so it errs high, never low; RssAnon, the
private part, is given beside it. Neither includes the page cache a pod's memory
cgroup is also charged with (reclaimable file pages: the model's files, SQLite's).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """`pid` and every descendant still running (children, their children...)."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                pending += [int(c) for c in (task / "children").read_text().split()]
            except OSError:  # the thread or the process ended
                continue
    return found


def _status_kib(pid: int, keys: tuple[str, ...]) -> dict[str, int]:
    values = dict.fromkeys(keys, 0)
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in values:
                values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):  # the process ended
        pass
    return values


@dataclass(frozen=True)
class TreeMemory:
    rss_mib: float  # sum of VmRSS over the tree
    anon_mib: float  # sum of RssAnon (private, not file-backed)
    hwm_mib: float  # sum of each member's own VmHWM (an upper bound of the tree's peak)
    processes: int


def memory(pid: int) -> TreeMemory:
    rss = anon = hwm = 0
    members = tree(pid)
    for member in members:
        values = _status_kib(member, ("VmRSS", "RssAnon", "VmHWM"))
        rss, anon, hwm = rss + values["VmRSS"], anon + values["RssAnon"], hwm + values["VmHWM"]
    return TreeMemory(
        round(rss / 1024, 1), round(anon / 1024, 1), round(hwm / 1024, 1), len(members)
    )


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the tree's running members have used."""
    total = 0
    for member in tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


@dataclass
class PeakSampler:
    """Samples each tree's resident size every `interval` seconds in a thread; keeps the max."""

    pids: dict[str, int]
    interval: float = 0.2
    peak_mib: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PeakSampler:
        self.peak_mib = dict.fromkeys(self.pids, 0.0)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="peak-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()  # one last look

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            self.peak_mib[name] = max(self.peak_mib[name], memory(pid).rss_mib)
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._sample()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
