"""Timing, CPU and memory: the concurrent loader, the fixed-duration latency runner, /proc reads."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from hacs.client import HacsClient
from hacs.records.v1 import record_service_pb2 as pb

TICKS = os.sysconf("SC_CLK_TCK")

# -- processes -------------------------------------------------------------------


def memory_of(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and its peak (VmHWM) of a process, in MiB; with its
    child processes (the embedding model's process) when it has any, also their total."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)  # kB -> MiB
    figures = {"rss_mib": values["VmRSS"], "peak_rss_mib": values["VmHWM"]}
    children = descendants_of(pid)
    if children:
        figures["children_rss_mib"] = round(sum(_rss_mib(c) for c in children), 1)
    return figures


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def children_of(pid: int) -> list[int]:
    """The processes `pid` started (the embedding model's process of a `hacs serve`)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended
            continue
    return found


def descendants_of(pid: int) -> list[int]:
    """Every process `pid` started, and theirs: the workers of `hacs serve --workers N` and
    each worker's embedding model process."""
    found = []
    for child in children_of(pid):
        found += [child, *descendants_of(child)]
    return found


def machine_ticks() -> tuple[int, int]:
    """Clock ticks the whole machine has spent busy, and in all (/proc/stat; idle and
    iowait are not busy): every process, ours or not."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values) - values[3] - values[4], sum(values)


def machine_busy_percent(seconds: float = 3.0) -> float:
    """How busy every core of the machine is, sampled over `seconds` (before we add load)."""
    busy0, total0 = machine_ticks()
    time.sleep(seconds)
    busy1, total1 = machine_ticks()
    return round(100 * (busy1 - busy0) / max(total1 - total0, 1), 1)


def wait_until_quiet(
    busy_below: float = 30.0, window: float = 5.0, give_up_after: float = 900.0
) -> float:
    """Wait until the machine is idle enough to measure on (background index builds,
    compactions, a server's start-up work); returns the busy percent last seen."""
    deadline = time.monotonic() + give_up_after
    busy = machine_busy_percent(window)
    while busy >= busy_below and time.monotonic() < deadline:
        print(f"\r  waiting for the machine to settle ({busy:.0f}% busy)", end="", file=sys.stderr)
        busy = machine_busy_percent(window)
    print(file=sys.stderr)
    return busy


def machine_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy."""
    return machine_ticks()[0] / TICKS


def _cpu_of(stat_text: str) -> float:
    fields = stat_text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds used so far: the machine, the record service, PostgreSQL, the rest of ours.

    "Ours" is the service (with its child processes: the embedding model's), every
    PostgreSQL process, this benchmark process and the other platform processes (Envoy,
    the tenant service).
    Whatever else the machine did meanwhile is reported as `other`, so a
    figure measured next to someone else's work says so.
    """

    machine_busy: float
    machine_total: float
    service: float
    postgres: dict[int, float]
    platform: dict[int, float]
    bench: float

    @classmethod
    def take(cls, service_pid: int, platform_pids: tuple[int, ...] = ()) -> CpuSnapshot:
        machine_busy, machine_total = machine_ticks()
        postgres: dict[int, float] = {}
        platform: dict[int, float] = {}
        service = 0.0
        service_children = set(descendants_of(service_pid))
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                text = stat.read_text()
            except OSError:  # the process ended
                continue
            pid = int(stat.parent.name)
            if pid == service_pid or pid in service_children:
                service += _cpu_of(text)
            elif pid in platform_pids:
                platform[pid] = _cpu_of(text)
            elif "(postgres)" in text:
                postgres[pid] = _cpu_of(text)
        times = os.times()
        return cls(
            machine_busy=machine_busy / TICKS,
            machine_total=machine_total / TICKS,
            service=service,
            postgres=postgres,
            platform=platform,
            bench=times.user + times.system,
        )

    def since(self, before: CpuSnapshot, wall_seconds: float, cores: int) -> dict[str, float]:
        """CPU used between two snapshots, in seconds and as % of one core over `wall_seconds`.

        PostgreSQL processes that ended in between are not counted (their time is lost).
        """

        def grown(now: dict[int, float], then: dict[int, float]) -> float:
            return sum(seconds - then.get(pid, 0.0) for pid, seconds in now.items())

        used = {
            "service": self.service - before.service,
            "postgres": grown(self.postgres, before.postgres),
            "envoy_and_tenant_service": grown(self.platform, before.platform),
            "bench_client": self.bench - before.bench,
        }
        busy = self.machine_busy - before.machine_busy
        total = self.machine_total - before.machine_total
        used["other_processes"] = max(0.0, busy - sum(used.values()))
        figures = {f"{k}_cpu_seconds": round(v, 1) for k, v in used.items()}
        figures |= {f"{k}_cpu_percent": round(100 * v / wall_seconds, 1) for k, v in used.items()}
        figures["machine_busy_percent_of_all_cores"] = round(100 * busy / max(total, 1e-9), 1)
        figures["cores"] = cores
        return figures


# -- statistics ------------------------------------------------------------------


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, round(fraction * len(sorted_values) + 0.5))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summary_ms(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)

    def ms(value: float) -> float:
        return round(value * 1000, 2)

    return {
        "p50_ms": ms(percentile(ordered, 0.50)),
        "p95_ms": ms(percentile(ordered, 0.95)),
        "p99_ms": ms(percentile(ordered, 0.99)),
        "max_ms": ms(ordered[-1]) if ordered else float("nan"),
        "mean_ms": ms(sum(ordered) / len(ordered)) if ordered else float("nan"),
    }


# -- loading ---------------------------------------------------------------------


@dataclass
class LoadResult:
    records: int = 0
    batches: int = 0
    seconds: float = 0.0
    batch_seconds: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def figures(self) -> dict[str, Any]:
        per_record = {
            f"{who}_cpu_ms_per_record": round(
                1000 * self.cpu[f"{who}_cpu_seconds"] / max(self.records, 1), 3
            )
            for who in ("service", "postgres")
        }
        return {
            "records": self.records,
            "batches": self.batches,
            "seconds": round(self.seconds, 1),
            "records_per_second": round(self.records / self.seconds, 1) if self.seconds else 0,
            "batch_call": summary_ms(self.batch_seconds),
            **per_record,
            "cpu": self.cpu,
        }


class Progress:
    """Prints a line to stderr every `every` records (and at the end)."""

    def __init__(self, what: str, total: int, every: int = 50_000) -> None:
        self.what, self.total, self.every = what, total, every
        self.done = 0
        self.started = time.perf_counter()
        self._next = every

    def add(self, count: int) -> None:
        self.done += count
        if self.done >= self._next or self.done >= self.total:
            self._next = (self.done // self.every + 1) * self.every
            elapsed = time.perf_counter() - self.started
            rate = self.done / elapsed if elapsed else 0.0
            left = (self.total - self.done) / rate if rate else 0.0
            print(
                f"  {self.what}: {self.done:,}/{self.total:,} in {elapsed:,.0f} s "
                f"({rate:,.0f}/s, ~{left:,.0f} s left)",
                file=sys.stderr,
                flush=True,
            )


async def load(
    client: HacsClient,
    batches: Iterator[pb.BatchCreateRecordsRequest],
    *,
    loaders: int,
    progress: Progress,
    service_pid: int,
    platform_pids: tuple[int, ...] = (),
    call_timeout: float = 300.0,
) -> LoadResult:
    """Send every batch through BatchCreateRecords with `loaders` concurrent tasks."""
    result = LoadResult()

    async def loader() -> None:
        # The tasks share one generator: next() never awaits, so no batch is sent twice.
        for batch in batches:
            started = time.perf_counter()
            reply = await client.records.BatchCreateRecords(batch, timeout=call_timeout)
            result.batch_seconds.append(time.perf_counter() - started)
            if len(reply.records) != len(batch.requests):
                raise RuntimeError(f"sent {len(batch.requests)}, created {len(reply.records)}")
            result.records += len(reply.records)
            result.batches += 1
            progress.add(len(reply.records))

    before = CpuSnapshot.take(service_pid, platform_pids)
    started = time.perf_counter()
    await asyncio.gather(*(loader() for _ in range(loaders)))
    result.seconds = time.perf_counter() - started
    after = CpuSnapshot.take(service_pid, platform_pids)
    result.cpu = after.since(before, result.seconds, os.cpu_count() or 1)
    return result


# -- latency ---------------------------------------------------------------------


async def run_clients(
    name: str,
    call: Callable[[int], Awaitable[object]],
    *,
    clients: int,
    seconds: float,
    warmup: float,
    service_pid: int,
    platform_pids: tuple[int, ...] = (),
) -> dict[str, Any]:
    """`clients` tasks call back to back for warmup + seconds; latencies after warmup count.

    `call(i)` makes one call; i is the call's running number.
    """
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    counter = iter(range(10**12))

    async def client_task(until: float, record: bool) -> None:
        while (started := time.perf_counter()) < until:
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError as error:
                if record:
                    errors[error.code().name] += 1
                continue
            if record:
                latencies.append(time.perf_counter() - started)

    # The warm-up ends when its last calls return; then every client starts measuring.
    warm_until = time.perf_counter() + warmup
    await asyncio.gather(*(client_task(warm_until, False) for _ in range(clients)))
    before = CpuSnapshot.take(service_pid, platform_pids)
    begin = time.perf_counter()
    await asyncio.gather(*(client_task(begin + seconds, True) for _ in range(clients)))
    elapsed = time.perf_counter() - begin
    after = CpuSnapshot.take(service_pid, platform_pids)
    return {
        "call": name,
        "clients": clients,
        "measured_seconds": round(elapsed, 1),
        "warmup_seconds": warmup,
        "calls": len(latencies),
        "errors": dict(errors),
        "calls_per_second": round(len(latencies) / elapsed, 1),
        **summary_ms(latencies),
        "cpu": after.since(before, elapsed, os.cpu_count() or 1),
    }


async def back_to_back(
    callers: list[HacsClient],
    call: Callable[[HacsClient], Awaitable[object]],
    *,
    seconds: float,
    warmup_calls: int = 1,
) -> dict[str, float]:
    """Each caller (its own connection) calls back to back for `seconds`, after
    `warmup_calls` calls each to open its connection and fetch its token; any error ends the
    run. Calls/s, p50 and p99 of the timed calls."""
    latencies: list[float] = []
    for caller in callers:  # connections and tokens before the clock starts
        for _ in range(warmup_calls):
            await call(caller)
    deadline = time.monotonic() + seconds

    async def run(caller: HacsClient) -> None:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            await call(caller)
            latencies.append(time.perf_counter() - started)

    began = time.monotonic()
    await asyncio.gather(*(run(c) for c in callers))
    elapsed = time.monotonic() - began
    ordered = sorted(latencies)
    return {
        "calls_per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[int(len(ordered) * 0.99)] * 1000, 2),
        "calls": len(latencies),
    }
