"""What every service in one process shares: settings, database, keys, meters.

`open_platform` builds it once at start; the kernel and the services build on
it. Nothing here knows which services the process hosts beyond whether the
tenant service (the keeper of the signing keys) is among them, and nothing
here imports the layers above: the registry that admission reads (tenants,
actors, API keys) is handed in by whoever opens the platform.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from services.common.audit import AuditLog
from services.common.change_bus import ChangeBus, LocalChangeBus, RedisChangeBus
from services.common.db import migrate
from services.common.db.compatibility import Fit
from services.common.db.engine import Database
from services.common.hourly_usage import HourlyMeter
from services.common.runtime.admission import Admission, Announcements, InProcess, Registry
from services.common.runtime.announcements import RedisAnnouncements
from services.common.runtime.quotas import UsageQuotas
from services.common.runtime.rate_limit import TenantRateLimiter
from services.common.runtime.relay import RelayAnnouncements, RelayChangeBus, RelayClient
from services.common.settings import Settings
from services.common.signing_keys import SigningKeys
from services.common.tokens import KeySource, LocalKeys, NoKeys, RemoteJwks, TokenVerifier
from services.common.usage import UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Platform:
    settings: Settings
    db: Database
    audit: AuditLog
    usage: UsageMeter
    # Usage per tenant and hour (billing export) and the plan quotas read from it.
    metering: HourlyMeter
    quotas: UsageQuotas
    verifier: TokenVerifier
    # Do the token's tenant, actor and key still stand? (HACS_REVOCATION_SECONDS)
    admission: Admission
    limiter: TenantRateLimiter
    # Present when this process hosts the tenant service (it signs tokens).
    signing_keys: SigningKeys | None
    # "the change log of tenant T grew": written by records, read by the indexer and sync.
    change_bus: ChangeBus = field(default_factory=LocalChangeBus)
    # The other workers of this `hacs serve --workers N`, through the supervisor; or None.
    relay: RelayClient | None = None
    # Built on first use by the services that need them (embedding, search, RAG, memory).
    _shared: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # (method, path, handler) a service serves on the ops HTTP port beside the runtime's own
    # (the tenant service's browser sign-in: /auth/...); aiohttp handlers.
    http_routes: list[tuple[str, str, Callable[..., Awaitable[Any]]]] = field(default_factory=list)

    async def shared(self, key: str, build: Callable[[], Awaitable[T]]) -> T:
        """One instance per process of an expensive part (model registry, vector index)."""
        if key not in self._shared:
            self._shared[key] = await build()
        return cast(T, self._shared[key])

    def on_close(self, close: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(close)

    async def close(self) -> None:
        for close in reversed(self._closers):
            try:
                await close()
            except Exception:  # keep closing the rest
                log.exception("error while closing")
        await self.usage.stop()
        await self.metering.stop()
        await self.db.close()


def private_directory(path: Path) -> None:
    """The data directory holds PHI and secrets (SQLite, the lexical store, Milvus Lite, the
    signing keys, the operator key): only the service's own user may enter it (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.stat().st_mode & 0o077:
        try:
            path.chmod(0o700)
        except PermissionError:  # not ours (a volume mounted by an orchestrator): say so
            log.warning("cannot restrict %s to its owner (0700); check who else can read it", path)


async def _check_schema(db: Database, *, auto_migrate: bool) -> None:
    """Run against this build's schema, or a newer one that only expanded since (a release
    rolled back: services/common/db/compatibility.py); migrate or refuse otherwise."""
    state = await migrate.schema_state(db)
    if state.fit is Fit.AHEAD:
        log.warning("%s", state.explain())
    elif state.fit is Fit.TOO_NEW or (state.fit is Fit.BEHIND and not auto_migrate):
        raise RuntimeError(state.explain())
    elif auto_migrate:
        await migrate.upgrade(db)  # also at head: its reconcile steps repair what older code wrote


async def open_platform(
    settings: Settings,
    registry: Callable[[Database], Registry],
    *,
    verifies_tokens: bool = True,
) -> Platform:
    """Database (migrated), keys, meters, admission and the change bus; `registry` reads the
    tenants, actors and API keys that admission checks. `verifies_tokens=False`: no hosted
    service takes a caller's token (the rate-limit service, which only Envoy calls), so no
    JWKS is needed and any token is refused."""
    private_directory(settings.data_path)
    db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
    await db.ping()
    await _check_schema(db, auto_migrate=settings.auto_migrate)

    signing_keys: SigningKeys | None = None
    source: KeySource
    if "tenant" in settings.enabled_services:
        signing_keys = SigningKeys.load(
            settings.keys_path, generate_if_empty=not settings.signing_keys_dir
        )
        source = LocalKeys(signing_keys)
    elif settings.jwks_url:
        context = None
        if settings.tls == "on":
            from services.common.runtime.tls import tls_files

            context = ssl.create_default_context(cafile=str(tls_files(settings).ca))
        source = RemoteJwks(settings.jwks_url, ssl_context=context)
    elif not verifies_tokens:
        source = NoKeys()
    else:
        raise RuntimeError(
            "this process does not host the tenant service, "
            "so it needs HACS_JWKS_URL to verify tokens"
        )

    relay: RelayClient | None = None
    if settings.relay_socket:  # a worker of `hacs serve --workers N`
        relay = RelayClient(settings.relay_socket)
        await relay.connect()
    announcements: Announcements = InProcess()
    if settings.redis_url:
        announcements = RedisAnnouncements(settings.redis_url)
    elif relay is not None:
        announcements = RelayAnnouncements(relay)
    admission = Admission(
        registry(db), bound_seconds=settings.revocation_seconds, announcements=announcements
    )
    usage = UsageMeter(db)
    usage.start()
    metering = HourlyMeter(db)
    metering.start()
    platform = Platform(
        settings=settings,
        db=db,
        audit=AuditLog(db),
        usage=usage,
        metering=metering,
        quotas=UsageQuotas(metering, admission.standing),
        verifier=TokenVerifier(source, issuer=settings.jwt_issuer, audience=settings.jwt_audience),
        admission=admission,
        limiter=TenantRateLimiter(
            enforce_rate=settings.rate_limit_enabled,
            burst_percent=settings.ratelimit_burst_percent,
        ),
        signing_keys=signing_keys,
        relay=relay,
    )
    platform.on_close(admission.close)
    if relay is not None:
        platform.on_close(relay.close)
    if settings.redis_url:
        # Mesh: change notices cross replicas. The log stays the source of truth,
        # so an unreachable Redis only slows readers down (they poll); it is not fatal.
        bus = RedisChangeBus(settings.redis_url)
        if not await bus.ping():
            log.warning("Redis at HACS_REDIS_URL is not reachable yet; change readers will poll")
        platform.change_bus = bus
        platform.on_close(bus.close)
    elif relay is not None:
        # Workers of one `hacs serve`: notices go through the supervisor's hub.
        platform.change_bus = RelayChangeBus(relay)
    return platform
