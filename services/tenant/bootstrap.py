"""The first credential: the platform tenant and its operator's API key.

Platform operators create tenants; each new tenant comes with its own first
administrator and key (see `TenantAdmin.create`). The operator's own key
comes from `HACS_BOOTSTRAP_OPERATOR_KEY` (a Secret, in the cluster) or, on a
fresh embedded install, is generated once and written to
`$HACS_DATA_DIR/operator.key` with mode 0600. The key itself is never logged.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from services.common.caller import PLATFORM_TENANT
from services.common.db.base import utcnow
from services.kernel.tenancy.plans import ACTIVE, Limits
from services.tenant.api_keys import hash_key, issue_key, parse_key
from services.tenant.models import Actor, ApiKey, Tenant
from services.tenant.store import TenantStore

log = logging.getLogger(__name__)

OPERATOR_ID = "operator"
OPERATOR_KEY_FILE = "operator.key"
OPERATOR_PERMISSIONS = ("admin:platform", "audit:platform")
# The platform's own services calling one another (search, rag, memory and the indexer call
# the embedding pods): an actor of the platform tenant that can embed and nothing else.
SERVICE_ACTOR_ID = "services"
SERVICE_PERMISSIONS = ("read:embedding",)


async def ensure_platform(store: TenantStore, *, operator_key: str, key_file: Path) -> None:
    now = utcnow()
    async with store.transaction(PLATFORM_TENANT) as tx:
        if await tx.get_tenant(PLATFORM_TENANT) is None:
            await tx.add_tenant(
                Tenant(
                    id=PLATFORM_TENANT,
                    display_name="HACS platform operators",
                    plan="enterprise",
                    limit_overrides=Limits(),
                    state=ACTIVE,
                    labels={},
                    create_time=now,
                    update_time=now,
                    version=1,
                )
            )
        await _ensure_actor(tx, OPERATOR_ID, "Platform operator", OPERATOR_PERMISSIONS, now)
        if operator_key:
            key_id = _platform_key_id(
                operator_key, "HACS_BOOTSTRAP_OPERATOR_KEY", "new-operator-key"
            )
            await _install_key(tx, OPERATOR_ID, operator_key, key_id, "operator", now)
            return
        created = None
        if await tx.count_live_api_keys(PLATFORM_TENANT, OPERATOR_ID) == 0:
            created = await issue_key(
                tx, PLATFORM_TENANT, OPERATOR_ID, "bootstrap operator key", None
            )
    if created is not None:  # written only once the key is committed
        _write_secret(key_file, created.secret)
        log.warning(
            "created the platform operator API key and wrote it to %s (mode 0600); "
            "keep it safe and delete the file once stored elsewhere",
            key_file,
        )


async def ensure_service_actor(store: TenantStore, *, service_key: str) -> None:
    """Install the services' actor and its key from HACS_BOOTSTRAP_SERVICE_KEY (idempotent).

    The same Secret gives the calling services HACS_SERVICE_API_KEY, so a mesh needs no
    manual step: `hacs admin new-service-key` makes the value.
    """
    if not service_key:
        return
    key_id = _platform_key_id(service_key, "HACS_BOOTSTRAP_SERVICE_KEY", "new-service-key")
    now = utcnow()
    async with store.transaction(PLATFORM_TENANT) as tx:
        await _ensure_actor(
            tx,
            SERVICE_ACTOR_ID,
            "HACS services (service-to-service calls)",
            SERVICE_PERMISSIONS,
            now,
        )
        await _install_key(tx, SERVICE_ACTOR_ID, service_key, key_id, "services'", now)


def _platform_key_id(key: str, variable: str, command: str) -> str:
    """The key id of a platform API key given in `variable`; a clear error otherwise."""
    parsed = parse_key(key)
    if parsed is None or parsed.tenant_id != PLATFORM_TENANT:
        raise ValueError(
            f"{variable} must look like hk_platform_<key id>_<secret>; "
            f"generate one with `hacs admin {command}`"
        )
    return parsed.key_id


async def _ensure_actor(
    tx: Any, actor_id: str, display_name: str, permissions: tuple[str, ...], now: datetime
) -> None:
    """A system actor of the platform tenant, created once."""
    if await tx.get_actor(PLATFORM_TENANT, actor_id) is None:
        await tx.add_actor(
            Actor(
                tenant_id=PLATFORM_TENANT,
                id=actor_id,
                display_name=display_name,
                role="system",
                permissions=permissions,
                security_level="critical",
                create_time=now,
                update_time=now,
            )
        )


async def _install_key(
    tx: Any, actor_id: str, key: str, key_id: str, whose: str, now: datetime
) -> None:
    """Store a key given from the environment (only its hash), once."""
    if await tx.get_api_key(PLATFORM_TENANT, key_id) is not None:
        return
    await tx.add_api_key(
        ApiKey(
            tenant_id=PLATFORM_TENANT,
            id=key_id,
            actor_id=actor_id,
            display_name=f"bootstrap {whose} key (from environment)",
            secret_prefix=key[: len(PLATFORM_TENANT) + len(key_id) + 8],
            create_time=now,
        ),
        hash_key(key),
    )
    log.info("installed the %s key from the environment", whose)


def _write_secret(path: Path, secret: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")
    tmp.replace(path)
