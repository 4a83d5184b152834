"""The all-in-one platform a benchmark drives: `hacs serve` with Envoy in front.

Built from the same pieces as the end-to-end tests (tests/support/edge.py,
the Envoy renderer), with the edge's rate limits far above anything a
benchmark sends: the limit is not what is measured.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path

from bench.support.measure import memory_of
from mesh.envoy.render import EdgeSettings, Upstream, all_in_one_upstreams, render
from tests.support.edge import start_envoy, start_serve
from tests.support.postgres import free_port

UNLIMITED_CALLS_PER_MINUTE = 100_000_000


SEARCH = "hacs.search.v1.SearchService"


class AllInOne:
    """`hacs serve` hosting `services` over `data_dir`, and Envoy; restartable.

    With `search_processes` > 1, that many - 1 more `hacs serve` processes host only
    search (no indexer: the first process's indexer feeds them all through Milvus and
    lexical.db), and Envoy balances Search over every process that hosts it. They need a
    Milvus server: Milvus Lite's file belongs to one process.
    """

    def __init__(
        self,
        run_dir: Path,
        data_dir: Path,
        services: str,
        env: Mapping[str, str] | None = None,
        *,
        search_processes: int = 1,
    ) -> None:
        self.run_dir, self.data_dir = run_dir, data_dir
        self.env = {
            "HACS_DATA_DIR": str(data_dir),
            "HACS_SERVICES": services,
            "HACS_RATE_LIMIT_ENABLED": "false",
            "HACS_LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        self.search_processes = search_processes
        self.processes: list[subprocess.Popen[bytes]] = []
        self.edge = ""
        self.direct = ""  # the first `hacs serve` process's own gRPC address
        self.pid = 0  # the `hacs serve` process (the one measured)
        self.platform_pids: tuple[int, ...] = ()  # ours, but not measured: Envoy
        self.search_pids: tuple[int, ...] = ()  # the search-only processes, if any

    def start(self) -> None:
        serve, grpc_addr, http_addr = start_serve("hacs-serve", self.run_dir, self.env)
        replicas: list[tuple[subprocess.Popen[bytes], str, str]] = []
        try:
            for i in range(1, self.search_processes):
                replicas.append(
                    start_serve(
                        f"hacs-search-{i}",
                        self.run_dir,
                        {
                            **self.env,
                            "HACS_SERVICES": "search",
                            "HACS_INDEXER_ENABLED": "false",
                            "HACS_JWKS_URL": f"http://{http_addr}/.well-known/jwks.json",
                        },
                    )
                )
        except BaseException:  # a replica that cannot start must not leave the others running
            for process in (serve, *(p for p, _, _ in replicas)):
                process.terminate()
                process.wait(timeout=60)
            raise
        upstreams = all_in_one_upstreams(Upstream.parse(grpc_addr))
        if self.env.get("HACS_WORKERS", "1") != "1":  # Envoy balances over the workers
            workers = self._worker_addresses(serve.pid)
            upstreams = dict.fromkeys(upstreams, workers)
        if replicas:
            upstreams[SEARCH] = (
                Upstream.parse(grpc_addr),
                *(Upstream.parse(addr) for _, addr, _ in replicas),
            )
        edge_port = free_port()
        settings = EdgeSettings(
            upstreams=upstreams,
            listen_host="127.0.0.1",
            listen_port=edge_port,
            stats_port=free_port(),
            jwks_uri=f"http://{http_addr}/.well-known/jwks.json",
            default_calls_per_minute=UNLIMITED_CALLS_PER_MINUTE,
            token_calls_per_minute=UNLIMITED_CALLS_PER_MINUTE,
            open_calls_per_minute=UNLIMITED_CALLS_PER_MINUTE,
            access_log_path=str(self.run_dir / "envoy-access.log"),
        )
        envoy = start_envoy(render(settings), self.run_dir, edge_port)
        self.processes = [envoy, *(p for p, _, _ in replicas), serve]
        self.edge = f"127.0.0.1:{edge_port}"
        self.direct = grpc_addr
        self.pid = serve.pid
        self.platform_pids = (envoy.pid,)
        self.search_pids = tuple(p.pid for p, _, _ in replicas)
        time.sleep(1.0)

    def _worker_addresses(self, supervisor: int) -> tuple[Upstream, ...]:
        """The own addresses of `hacs serve --workers N`'s workers, once all of them serve."""
        path = self.data_dir / "workers.json"
        for _ in range(600):
            try:
                document = json.loads(path.read_text())
            except (OSError, ValueError):
                document = {}
            if document.get("supervisor_pid") == supervisor:
                return tuple(Upstream.parse(w["grpc"]) for w in document["workers"])
            time.sleep(0.1)
        raise RuntimeError(f"the workers did not all start ({path})")

    def memory(self) -> dict[str, float]:
        """Resident memory of the measured `hacs serve` and its child processes, in MiB."""
        return memory_of(self.pid)

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
            process.wait(timeout=60)
        self.processes = []
