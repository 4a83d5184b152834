"""`hacs serve --workers N`: N worker processes serving one port, and the process that runs them.

One Python process runs Python on one core at a time, so a `hacs serve` alone leaves the
machine's other cores to the database and Envoy. With `--workers N` (HACS_WORKERS; `0`: one
per core) this process becomes the **supervisor** and serves no calls itself:

* it starts **worker 0** alone and waits until it serves: on a fresh data directory that
  worker migrates the database and creates the signing keys and the operator key, so no two
  processes race to create them; then it starts the others (HACS_AUTO_MIGRATE=false: the
  schema is at head already);
* every worker is a whole `hacs serve` for the same services, bound to the same gRPC and HTTP
  ports (SO_REUSEPORT: the kernel spreads connections over the workers), and also to an own
  gRPC address on the same host, so Envoy can balance calls, not connections, over them
  (`workers.json` in the data directory lists them; `hacs up` renders Envoy from it);
* **worker 0 runs the indexers** (HACS_INDEXER_ENABLED=false on the others), so no two
  workers index the same change twice; the others wake it through the hub when they write;
* its **relay hub** (services/common/runtime/relay.py) carries change notices, registry
  announcements (a revoked key is refused by every worker at once) and sync's shared values
  between the workers, as Redis does between the replicas of the mesh;
* a worker that dies is started again (same index, same own address) after a pause that
  grows while it keeps dying; one that cannot start at all stops the whole process;
* one scrape of the shared metrics port returns every worker's metrics summed
  (PROMETHEUS_MULTIPROC_DIR, services/common/runtime/metrics.py);
* SIGTERM or SIGINT stops every worker gracefully (each drains its calls for
  HACS_SHUTDOWN_GRACE_SECONDS); a worker whose supervisor disappears stops by itself;
* Milvus Lite keeps its files open in one process: when the hosted services use it, the
  supervisor runs it in a process of its own (`LiteServer`) and the workers reach it over
  loopback gRPC, still treating it as Lite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from services.common.runtime.metrics import MULTIPROCESS_DIR
from services.common.runtime.relay import RelayHub, WorkerInfo
from services.common.settings import Settings, is_milvus_lite

log = logging.getLogger(__name__)

WORKERS_FILE = "workers.json"
START_TIMEOUT_SECONDS = 300.0
# A worker that dies within this long of starting, this many times running, is not
# going to start: stop instead of restarting it forever.
EARLY_DEATH_SECONDS = 30.0
EARLY_DEATHS_TO_GIVE_UP = 5


def worker_count(settings: Settings) -> int:
    """HACS_WORKERS, with 0 meaning one per core this process may run on."""
    if settings.workers:
        return settings.workers
    return usable_cores()


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity, capped by a cgroup CPU quota."""
    cores = len(os.sched_getaffinity(0))
    with contextlib.suppress(OSError, ValueError):
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    return max(1, cores)


# The services whose kernel modules include the vector index (registry.kernel_modules says
# so too; a unit test holds the two together). Named here so that the supervisor does not
# import every service's wiring, and their libraries, only to ask: it stays ~100 MB.
VECTOR_SERVICES = frozenset({"search", "rag", "memory"})


def lite_path(settings: Settings) -> str:
    """The Milvus Lite data these services use, which the supervisor must serve ("" when
    they use none, or a Milvus server)."""
    uses_vectors = bool(VECTOR_SERVICES & set(settings.enabled_services))
    uri = settings.resolved_milvus_uri
    if uses_vectors and is_milvus_lite(uri):
        return uri
    return ""


class LiteServer:
    """Milvus Lite in a process of its own, which the workers reach over gRPC on loopback.

    Milvus Lite keeps its files open in one process (a lock on its data directory), so the
    workers cannot each open it: the supervisor runs `python -m milvus_lite server` on the
    same data and hands the workers its address; they still treat it as Lite (its version
    says so). Stopped with SIGINT, which makes it close its data cleanly.
    """

    def __init__(self, data: str) -> None:
        self.data = data
        self.address = ""
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        port = int(_concrete("127.0.0.1:0").rpartition(":")[2])
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "milvus_lite",
            "server",
            "--data-dir",
            self.data,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            stdout=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"Milvus Lite ({self.data}) exited with {self.process.returncode} at start"
                )
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Milvus Lite did not listen on {port}") from None
                await asyncio.sleep(0.1)
        self.address = f"http://127.0.0.1:{port}"
        log.info("Milvus Lite (%s) serves the workers at %s", self.data, self.address)

    async def stop(self) -> None:
        process = self.process
        if process is None or process.returncode is not None:
            return
        process.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            log.error("Milvus Lite did not stop in 30 s; killing it")
            process.kill()
            await process.wait()


@dataclass
class _Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    info: WorkerInfo | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    own_listen: str = ""
    early_deaths: int = 0


class Supervisor:
    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self._run_dir = Path(tempfile.mkdtemp(prefix="hacs-workers-"))  # 0700
        self._hub = RelayHub(self._run_dir / "relay.sock", on_hello=self._hello)
        # Each worker's metric values, summed by whichever worker a scrape reaches.
        self._metrics_dir = self._run_dir / "metrics"
        self._metrics_dir.mkdir(mode=0o700)
        self._workers = [_Worker(i) for i in range(count)]
        self._stopping = asyncio.Event()
        self._serving = False  # every worker has said it serves, once
        self._grpc_listen = _concrete(settings.grpc_listen)
        self._lite = LiteServer(lite) if (lite := lite_path(settings)) else None
        self._http_listen = _concrete(settings.http_listen)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stopping.set)
        await self._hub.start()
        try:
            if self._lite is not None:
                try:
                    await self._lite.start()
                except RuntimeError as exc:
                    log.error("cannot start: %s", exc)
                    return 1
            if not await self._start_all():
                return 1
            self._serving = True
            self._write_workers_file()
            log.info(
                "hacs serve: %d workers serving %s on gRPC %s (own addresses %s), HTTP %s",
                self.count,
                ", ".join(self.settings.enabled_services),
                self._grpc_listen,
                ", ".join(w.info.grpc for w in self._workers if w.info),
                self._http_listen,
            )
            return await self._supervise()
        finally:
            await self._stop_all()
            if self._lite is not None:
                await self._lite.stop()
            await self._hub.close()
            shutil.rmtree(self._run_dir, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.settings.data_path / WORKERS_FILE).unlink()

    # -- starting ----------------------------------------------------------------------

    async def _start_all(self) -> bool:
        first, *rest = self._workers
        await self._spawn(first)
        if not await self._until_ready([first]):
            return False
        for worker in rest:
            await self._spawn(worker)
        return await self._until_ready(rest)

    async def _spawn(self, worker: _Worker) -> None:
        settings = self.settings
        host = self._grpc_listen.rpartition(":")[0]
        env = {
            **os.environ,
            "HACS_WORKERS": "1",
            "HACS_WORKER_INDEX": str(worker.index),
            "HACS_RELAY_SOCKET": str(self._hub.socket_path),
            "HACS_WORKER_GRPC_LISTEN": worker.own_listen or f"{host}:0",
            "HACS_GRPC_LISTEN": self._grpc_listen,
            "HACS_HTTP_LISTEN": self._http_listen,
            "HACS_SERVICES": settings.services,
            MULTIPROCESS_DIR: str(self._metrics_dir),
        }
        if self._lite is not None:
            env["HACS_MILVUS_URI"] = self._lite.address
        if worker.index > 0:
            env["HACS_AUTO_MIGRATE"] = "false"
            env["HACS_INDEXER_ENABLED"] = "false"
        worker.ready.clear()
        worker.info = None
        worker.started = time.monotonic()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "serve", env=env
        )
        log.info("worker %d started (pid %d)", worker.index, worker.process.pid)

    def _hello(self, info: WorkerInfo) -> None:
        if 0 <= info.index < self.count:
            worker = self._workers[info.index]
            worker.info = info
            worker.own_listen = worker.own_listen or info.grpc  # the same on every restart
            worker.ready.set()
            if self._serving:  # a worker started again: its new pid
                self._write_workers_file()

    async def _until_ready(self, workers: list[_Worker]) -> bool:
        """Every one of `workers` says it serves; False if one exits first, or on a stop."""
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not all(w.ready.is_set() for w in workers):
            for worker in workers:
                assert worker.process is not None
                if worker.process.returncode is not None:
                    log.error(
                        "worker %d exited with %d while starting; stopping",
                        worker.index,
                        worker.process.returncode,
                    )
                    return False
            if self._stopping.is_set():
                return False
            if time.monotonic() > deadline:
                log.error("the workers did not start within %.0f s", START_TIMEOUT_SECONDS)
                return False
            await asyncio.sleep(0.05)
        return True

    def _write_workers_file(self) -> None:
        document = {
            "supervisor_pid": os.getpid(),
            "grpc": self._grpc_listen,
            "http": self._http_listen,
            "workers": [
                {"index": w.index, "pid": w.info.pid, "grpc": w.info.grpc}
                for w in self._workers
                if w.info is not None
            ],
        }
        path = self.settings.data_path / WORKERS_FILE
        path.write_text(json.dumps(document, indent=2) + "\n")

    # -- running -----------------------------------------------------------------------

    async def _supervise(self) -> int:
        while not self._stopping.is_set():
            lite = self._lite.process if self._lite is not None else None
            if lite is not None and lite.returncode is not None:
                log.error(
                    "Milvus Lite exited with %d; stopping (the workers cannot search without "
                    "it; start hacs serve again)",
                    lite.returncode,
                )
                return 1
            for worker in self._workers:
                assert worker.process is not None
                code = worker.process.returncode
                if code is None:
                    continue
                lived = time.monotonic() - worker.started
                worker.early_deaths = worker.early_deaths + 1 if lived < EARLY_DEATH_SECONDS else 0
                if worker.early_deaths >= EARLY_DEATHS_TO_GIVE_UP:
                    log.error(
                        "worker %d keeps exiting (%d times within %.0f s of starting); stopping",
                        worker.index,
                        worker.early_deaths,
                        EARLY_DEATH_SECONDS,
                    )
                    return 1
                # Its gauges stop counting; its counters stay in the sums.
                mark_process_dead(worker.process.pid, str(self._metrics_dir))  # type: ignore[no-untyped-call]
                pause = min(30.0, 0.5 * 2**worker.early_deaths)
                log.error(
                    "worker %d (pid %d) exited with %d; starting it again in %.1f s",
                    worker.index,
                    worker.process.pid,
                    code,
                    pause,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), pause)
                if not self._stopping.is_set():
                    await self._spawn(worker)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 0.2)
        log.info("shutting down %d workers", self.count)
        return 0

    async def _stop_all(self) -> None:
        running = [w.process for w in self._workers if w.process and w.process.returncode is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        grace = self.settings.shutdown_grace_seconds + 15
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in running)), grace)
        except TimeoutError:
            for process in running:
                if process.returncode is None:
                    log.error("worker pid %d did not stop in %d s; killing it", process.pid, grace)
                    with contextlib.suppress(ProcessLookupError):
                        process.kill()
            await asyncio.gather(*(p.wait() for p in running))


def _concrete(listen: str) -> str:
    """`host:0` made a real port, which every worker must bind alike."""
    host, _, port = listen.rpartition(":")
    if port != "0":
        return listen
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host.strip("[]"), 0))
        return f"{host}:{probe.getsockname()[1]}"


async def supervise(settings: Settings) -> int:
    return await Supervisor(settings, worker_count(settings)).run()
