"""The crash test: `hacs serve` killed with SIGKILL while clients write, then checked.

One run, on one database (SQLite in the data directory, or a PostgreSQL database):

1. `hacs serve` hosting tenant, records, memory and search (so the record indexer
   and the memory index run) starts on free ports; the operator creates a tenant
   on the enterprise plan with its limits raised (and the service's rate limiter
   is off: a quota is not what is tested), whose administrator creates an agent.
2. `clients` concurrent clients (crash_writers.py) create patients and
   observations and remember memories as the agent, each write retried with its
   idempotency key until acknowledged.
3. At a random moment (seeded) while writes are in flight, the server gets
   SIGKILL. The clients are then held, the server is started again on the same
   data directory, database and ports, and everything acknowledged so far is
   checked (crash_checks.py); the clients go on. This repeats `kills` times.
4. After the last kill the clients write once more, finish the write each has
   begun, and a last check runs before a graceful stop.

The run reports acknowledged and lost writes, change-log gaps and duplicates,
restart and catch-up times per kill (`CrashResult`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from hacs.tenant.v1 import tenant_pb2, tenant_service_pb2_grpc
from hacs.tenant.v1 import tenant_service_pb2 as tpb

from bench.support.crash_checks import Check, Verifier
from bench.support.crash_server import KillableServer
from bench.support.crash_writers import Tally, Writer

SERVICES = "tenant,records,memory,search"
TENANT = "crash-ward"
AGENT = "crash-agent"
TOKEN_TTL_SECONDS = 3600


@dataclass(frozen=True)
class CrashSettings:
    kills: int = 3
    clients: int = 8
    seed: int = 20
    # Seconds the clients write before a kill, drawn per kill (seeded).
    write_seconds: tuple[float, float] = (0.5, 2.5)
    # At least this many writes acknowledged before each kill (else the kill proves nothing).
    min_writes_between_kills: int = 8
    catch_up_timeout: float = 180.0
    # `thread`: the model loads in the server's process, once per start, with no child to
    # outlive a kill; `process` is what `hacs serve` uses by default.
    embedding_worker: str = "thread"


@dataclass
class Restart:
    """One kill, the restart after it and the check that followed (kill 0: the final check)."""

    kill: int
    acknowledged_before_kill: int = 0  # in the write phase this kill ended
    in_flight_at_kill: int = 0  # clients inside a call when the signal was sent
    orphans: int = 0  # processes of the server that outlived it
    restart_seconds: float = 0.0  # from the kill to /readyz
    check: Check = field(default_factory=Check)


@dataclass
class CrashResult:
    database: str
    settings: CrashSettings
    run_dir: Path
    restarts: list[Restart] = field(default_factory=list)
    final: Restart = field(default_factory=lambda: Restart(kill=0))
    tally: Tally = field(default_factory=Tally)
    seconds: float = 0.0

    @property
    def checks(self) -> list[Check]:
        return [r.check for r in (*self.restarts, self.final)]

    @property
    def acknowledged_writes(self) -> int:
        return len(self.tally.acknowledged)

    @property
    def lost_writes(self) -> list[str]:
        return sorted({name for c in self.checks for name in (*c.lost, *c.unlogged)})

    @property
    def gaps(self) -> list[int]:
        return sorted({s for c in self.checks for s in c.gaps})

    @property
    def duplicates(self) -> list[str]:
        found = {f"sequence {s}" for c in self.checks for s in c.duplicate_sequences}
        return sorted(found | {d for c in self.checks for d in c.duplicate_changes})

    @property
    def indexer_caught_up(self) -> bool:
        """At the head after every restart, with every logged record in the index."""
        return all(c.caught_up and c.indexed_records == c.logged_records for c in self.checks)

    @property
    def not_found_by_search_or_recall(self) -> list[str]:
        return sorted({n for c in self.checks for n in (*c.not_searchable, *c.not_recalled)})

    def summary(self) -> dict[str, Any]:
        """The figures, as the bench prints them and writes them to JSON."""
        kinds = Counter(a.kind for a in self.tally.acknowledged)
        restarts = [
            {
                "kill": r.kill,
                "acknowledged_before_kill": r.acknowledged_before_kill,
                "in_flight_at_kill": r.in_flight_at_kill,
                "orphans": r.orphans,
                "restart_seconds": round(r.restart_seconds, 2),
                "catch_up_seconds": round(r.check.catch_up_seconds, 2),
                "head_sequence": r.check.head_sequence,
                "indexed_records": r.check.indexed_records,
                "logged_records": r.check.logged_records,
                "check_seconds": round(r.check.seconds, 2),
            }
            for r in self.restarts
        ]
        return {
            "database": self.database,
            "settings": asdict(self.settings),
            "kills": len(self.restarts),
            "acknowledged_writes": self.acknowledged_writes,
            "acknowledged_by_kind": dict(sorted(kinds.items())),
            "lost_writes": len(self.lost_writes),
            "lost": self.lost_writes[:20],
            "change_log_gaps": len(self.gaps),
            "change_log_duplicates": len(self.duplicates),
            "indexer_caught_up": self.indexer_caught_up,
            "not_found_by_search_or_recall": self.not_found_by_search_or_recall[:20],
            "head_sequence": self.final.check.head_sequence,
            "replayed_after_crash": self.tally.replayed,
            "idempotency_failures": len(self.tally.idempotency_failures),
            "failed_attempts": dict(sorted(self.tally.failed_attempts.items())),
            "failed_while_server_up": dict(sorted(self.tally.failed_while_up.items())),
            "rejected": dict(sorted(self.tally.rejected.items())),
            "orphans": sum(r.orphans for r in self.restarts),
            "restarts": restarts,
            "seconds": round(self.seconds, 1),
            "run_dir": str(self.run_dir),
        }


class _Tokens:
    """The agent's and the administrator's tokens, issued again after every restart."""

    def __init__(self, channel: grpc.aio.Channel, admin_key: str, agent_key: str) -> None:
        self._tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
        self._keys = (admin_key, agent_key)
        self.admin = self.agent = ""

    async def refresh(self) -> None:
        issued = [
            await self._tenants.IssueToken(
                tpb.IssueTokenRequest(api_key=key, ttl_seconds=TOKEN_TTL_SECONDS), timeout=60
            )
            for key in self._keys
        ]
        self.admin, self.agent = (reply.access_token for reply in issued)


async def _create_tenant(channel: grpc.aio.Channel, operator_key: str) -> tuple[str, str]:
    """The tenant (limits raised) and its agent; returns (admin key, agent key)."""
    tenants = tenant_service_pb2_grpc.TenantServiceStub(channel)
    operator = await tenants.IssueToken(tpb.IssueTokenRequest(api_key=operator_key), timeout=60)
    created = await tenants.CreateTenant(
        tpb.CreateTenantRequest(
            tenant_id=TENANT,
            tenant=tenant_pb2.Tenant(
                display_name="Crash Ward",
                plan=tenant_pb2.PLAN_ENTERPRISE,
                limits=tenant_pb2.TenantLimits(
                    max_users=1_000, max_patients=10_000_000, calls_per_minute=1_000_000_000
                ),
            ),
            admin=tenant_pb2.Actor(display_name="Crash Admin"),
        ),
        metadata=(("authorization", f"Bearer {operator.access_token}"),),
        timeout=60,
    )
    admin_key = created.admin_api_key.secret
    admin = await tenants.IssueToken(tpb.IssueTokenRequest(api_key=admin_key), timeout=60)
    bearer = (("authorization", f"Bearer {admin.access_token}"),)
    await tenants.CreateActor(
        tpb.CreateActorRequest(
            parent=f"tenants/{TENANT}",
            actor_id=AGENT,
            actor=tenant_pb2.Actor(display_name="Crash Agent", role="agent"),
        ),
        metadata=bearer,
        timeout=60,
    )
    key = await tenants.CreateApiKey(
        tpb.CreateApiKeyRequest(parent=f"tenants/{TENANT}/actors/{AGENT}"),
        metadata=bearer,
        timeout=60,
    )
    return admin_key, key.api_key.secret


class _Run:
    """The clients of one crash run and the seeded draw of the kill moments."""

    def __init__(self, settings: CrashSettings) -> None:
        self.settings = settings
        self.rng = random.Random(settings.seed)
        self.epoch = 0  # even: server up; odd: down (see Writer)
        self.writers: list[Writer] = []

    def pause(self) -> None:
        for writer in self.writers:
            writer.go.clear()

    def resume(self) -> None:
        for writer in self.writers:
            writer.go.set()

    async def until_idle(self) -> None:
        if not await _until(lambda: not any(w.in_call for w in self.writers), 120.0):
            raise RuntimeError("clients still inside calls two minutes after the kill")

    async def write_phase(self, tally: Tally, *, random_length: bool = True) -> int:
        """Let the clients write for a random while; returns the writes acknowledged."""
        before = len(tally.acknowledged)
        self.resume()
        if random_length:
            await asyncio.sleep(self.rng.uniform(*self.settings.write_seconds))
        # Too few acknowledged writes is reported, not waited for forever: the test asserts it.
        wanted = self.settings.min_writes_between_kills
        await _until(lambda: len(tally.acknowledged) - before >= wanted, 120.0)
        # A moment when a write is on the wire (nearly always at once).
        await _until(lambda: any(w.in_call for w in self.writers), 10.0, step=0.001)
        return len(tally.acknowledged) - before


async def _until(condition: Callable[[], bool], seconds: float, step: float = 0.02) -> bool:
    """Wait until `condition()` holds or `seconds` pass; returns whether it held."""
    deadline = time.monotonic() + seconds
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)


async def run_crash_test(
    run_dir: Path,
    *,
    database: str,
    database_url: str = "",
    settings: CrashSettings | None = None,
    log: Callable[[str], None] = print,
) -> CrashResult:
    """One crash run; `database_url` empty means SQLite in the data directory."""
    settings = settings or CrashSettings()
    await asyncio.to_thread(run_dir.mkdir, parents=True, exist_ok=True)
    data_dir = run_dir / "data"
    env = {
        "HACS_SERVICES": SERVICES,
        "HACS_DATA_DIR": str(data_dir),
        "HACS_DATABASE_URL": database_url,
        "HACS_EMBEDDING_WORKER": settings.embedding_worker,
        "HACS_RATE_LIMIT_ENABLED": "false",
    }
    result = CrashResult(database=database, settings=settings, run_dir=run_dir)
    server = KillableServer(run_dir, env)
    run = _Run(settings)
    started = time.monotonic()
    log(
        f"crash test on {database}: seed {settings.seed}, {settings.kills} kills, "
        f"{settings.clients} clients, run dir {run_dir}"
    )
    await asyncio.to_thread(server.start)
    channel = grpc.aio.insecure_channel(server.grpc_target)
    tasks: list[asyncio.Task[None]] = []
    try:
        operator_key = (data_dir / "operator.key").read_text().strip()
        admin_key, agent_key = await _create_tenant(channel, operator_key)
        tokens = _Tokens(channel, admin_key, agent_key)
        await tokens.refresh()
        verifier = Verifier(channel, TENANT)
        await verifier.warm_up(tokens.agent)
        run.writers = [
            Writer(
                n,
                server.grpc_target,
                TENANT,
                lambda: tokens.agent,
                result.tally,
                seed=settings.seed,
                server_epoch=lambda: run.epoch,
            )
            for n in range(settings.clients)
        ]
        tasks = [asyncio.create_task(w.run(), name=f"writer-{w.number}") for w in run.writers]
        for kill in range(1, settings.kills + 1):
            restart = Restart(kill=kill)
            restart.acknowledged_before_kill = await run.write_phase(result.tally)
            restart.in_flight_at_kill = sum(w.in_call for w in run.writers)
            killed_at = time.monotonic()
            run.epoch += 1
            run.pause()  # holds each client's next attempt; the calls in flight die with it
            restart.orphans = await asyncio.to_thread(server.kill)
            await run.until_idle()
            await asyncio.to_thread(server.start)
            run.epoch += 1
            ready_at = time.monotonic()
            restart.restart_seconds = ready_at - killed_at
            await tokens.refresh()
            restart.check = await verifier.verify(
                list(result.tally.acknowledged),
                [dict(w.last) for w in run.writers],
                admin_token=tokens.admin,
                agent_token=tokens.agent,
                ready_at=ready_at,
                catch_up_timeout=settings.catch_up_timeout,
            )
            result.restarts.append(restart)
            log(_line(restart, len(result.tally.acknowledged)))
        # The writes after the last restart, each client's last one finished, then a check.
        result.final.acknowledged_before_kill = await run.write_phase(
            result.tally, random_length=False
        )
        for writer in run.writers:
            writer.stopping = True
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=180)
        result.final.check = await verifier.verify(
            list(result.tally.acknowledged),
            [dict(w.last) for w in run.writers],
            admin_token=tokens.admin,
            agent_token=tokens.agent,
            ready_at=time.monotonic(),
            catch_up_timeout=settings.catch_up_timeout,
        )
        log(_line(result.final, len(result.tally.acknowledged)))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in run.writers:
            await writer.close()
        await channel.close()
        await asyncio.to_thread(server.stop)
    result.seconds = time.monotonic() - started
    return result


def _line(restart: Restart, acknowledged: int) -> str:
    check = restart.check
    what = f"kill {restart.kill}" if restart.kill else "final check"
    problems = [
        f"{label} {len(found)}"
        for label, found in (
            ("lost", check.lost),
            ("unlogged", check.unlogged),
            ("gaps", check.gaps),
            ("duplicate sequences", check.duplicate_sequences),
            ("duplicate changes", check.duplicate_changes),
            ("not searchable", check.not_searchable),
            ("not recalled", check.not_recalled),
        )
        if found
    ]
    if not check.caught_up:
        problems.append("indexer behind")
    if check.indexed_records != check.logged_records:
        problems.append(
            f"{check.indexed_records} documents indexed for {check.logged_records} records"
        )
    return (
        f"  {what}: {restart.acknowledged_before_kill} acknowledged before it "
        f"({restart.in_flight_at_kill} in flight), {acknowledged} in all; "
        f"ready again in {restart.restart_seconds:.1f} s, indexer at the head "
        f"({check.head_sequence}) {check.catch_up_seconds:.1f} s later, "
        f"{check.indexed_records} documents; "
        + ("; ".join(problems) if problems else "all acknowledged writes present, log whole")
    )
