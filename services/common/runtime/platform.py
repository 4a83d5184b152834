"""What every service in one process shares: settings, database, keys, meters.

`open_platform` builds it once at start; servicers receive the parts they
need. Nothing here knows which services the process hosts beyond whether the
tenant service (the keeper of the signing keys) is among them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common.audit import AuditLog
from services.common.db import migrate
from services.common.db.engine import Database
from services.common.runtime.rate_limit import TenantRateLimiter
from services.common.settings import Settings
from services.common.signing_keys import SigningKeys
from services.common.tokens import KeySource, LocalKeys, RemoteJwks, TokenVerifier
from services.common.usage import UsageMeter
from services.tenant.standing import standing_lookup

log = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    db: Database
    audit: AuditLog
    usage: UsageMeter
    verifier: TokenVerifier
    limiter: TenantRateLimiter
    # Present when this process hosts the tenant service (it signs tokens).
    signing_keys: SigningKeys | None

    async def close(self) -> None:
        await self.usage.stop()
        await self.db.close()


async def open_platform(settings: Settings) -> Platform:
    settings.data_path.mkdir(parents=True, exist_ok=True)
    db = Database(settings.resolved_database_url, pool_size=settings.database_pool_size)
    await db.ping()
    if settings.auto_migrate:
        await migrate.upgrade(db)
    else:
        current = await migrate.current_revision(db)
        if current != migrate.head_revision():
            raise RuntimeError(
                f"database schema is at {current!r}, this build needs {migrate.head_revision()!r}: "
                "run `hacs migrate` (or set HACS_AUTO_MIGRATE=true)"
            )

    signing_keys: SigningKeys | None = None
    source: KeySource
    if "tenant" in settings.enabled_services:
        signing_keys = SigningKeys.load(
            settings.keys_path, generate_if_empty=not settings.signing_keys_dir
        )
        source = LocalKeys(signing_keys)
    elif settings.jwks_url:
        source = RemoteJwks(settings.jwks_url)
    else:
        raise RuntimeError(
            "this process does not host the tenant service, "
            "so it needs HACS_JWKS_URL to verify tokens"
        )

    usage = UsageMeter(db)
    usage.start()
    return Platform(
        settings=settings,
        db=db,
        audit=AuditLog(db),
        usage=usage,
        verifier=TokenVerifier(source, issuer=settings.jwt_issuer, audience=settings.jwt_audience),
        limiter=TenantRateLimiter(standing_lookup(db), enforce_rate=settings.rate_limit_enabled),
        signing_keys=signing_keys,
    )
