"""The tenant domain's rules on the real embedded store (SQLite): who may create tenants,
what a new tenant and actor start with, plan limits, and API keys."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.common.caller import PLATFORM_TENANT, Caller
from services.common.db import migrate
from services.common.db.engine import Database
from services.common.errors import Forbidden, Invalid, QuotaExceeded
from services.common.permissions import default_permissions
from services.kernel.tenancy.plans import ACTIVE, PLANS, Limits
from services.kernel.tenancy.standing import TenancyRegistry, patient_limit
from services.tenant.actors import ActorDirectory
from services.tenant.api_keys import ApiKeys, hash_key, matches, parse_key
from services.tenant.models import Actor, Tenant
from services.tenant.store import TenantStore
from services.tenant.tenants import TenantAdmin

NOW = datetime(2026, 12, 1, tzinfo=UTC)
OPERATOR = Caller(PLATFORM_TENANT, "operator", "administrator", frozenset({"admin:platform"}))


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'hacs.db'}")
    await migrate.upgrade(database)
    yield database
    await database.close()


def tenant(tenant_id: str, plan: str = "free", **limits: int) -> Tenant:
    return Tenant(tenant_id, f"Hospital {tenant_id}", plan, Limits(**limits), "", {}, NOW, NOW, 0)


def person(tenant_id: str, actor_id: str, role: str, *permissions: str) -> Actor:
    return Actor(tenant_id, actor_id, actor_id.title(), role, tuple(permissions))


async def test_only_platform_operators_create_tenants(db: Database) -> None:
    admin = TenantAdmin(TenantStore(db))
    tenant_admin = Caller("st-marys", "admin", "administrator", frozenset({"admin:*"}))
    with pytest.raises(Forbidden, match="platform operators"):
        await admin.create(tenant_admin, tenant("st-judes"), person("", "admin", ""))
    with pytest.raises(Invalid, match="reserved"):
        await admin.create(OPERATOR, tenant(PLATFORM_TENANT), person("", "admin", ""))


async def test_a_new_tenant_starts_active_with_an_administrator_and_its_key(db: Database) -> None:
    created, first, key = await TenantAdmin(TenantStore(db)).create(
        OPERATOR, tenant("st-marys"), person("", "admin", "")
    )
    assert created.state == ACTIVE and created.limits == PLANS["free"]
    assert first.role == "administrator"
    assert first.permissions == tuple(default_permissions("administrator"))
    parsed = parse_key(key.secret)
    assert parsed is not None and (parsed.tenant_id, parsed.key_id) == ("st-marys", key.id)
    assert matches(key.secret, hash_key(key.secret))
    assert not matches(key.secret + "x", hash_key(key.secret))
    assert parse_key("hk_st-marys_only-three") is None and parse_key("xx_a_b_c") is None


async def test_plan_limits_cap_actors_and_reach_every_service(db: Database) -> None:
    await TenantAdmin(TenantStore(db)).create(
        OPERATOR, tenant("small", max_users=2, max_patients=7), person("", "admin", "")
    )
    admin = Caller("small", "admin", "administrator", frozenset({"admin:*"}))
    actors = ActorDirectory(TenantStore(db))
    nurse = await actors.create(admin, person("small", "nurse", "nurse"))
    assert "read:patient" in nurse.permissions  # a role's defaults when none are given
    with pytest.raises(QuotaExceeded, match="limit of 2 active actors"):
        await actors.create(admin, person("small", "agent", "agent"))
    standing = await TenancyRegistry(db).tenant("small")
    assert standing is not None and standing.active
    assert standing.calls_per_minute == PLANS["free"].calls_per_minute  # not overridden
    assert await patient_limit(db)("small") == 7 and await patient_limit(db)("nobody") == 0


async def test_actors_manage_their_own_keys_and_admins_everyones(db: Database) -> None:
    await TenantAdmin(TenantStore(db)).create(OPERATOR, tenant("ward"), person("", "admin", ""))
    admin = Caller("ward", "admin", "administrator", frozenset({"admin:*"}))
    await ActorDirectory(TenantStore(db)).create(admin, person("ward", "nurse", "nurse"))
    await ActorDirectory(TenantStore(db)).create(admin, person("ward", "scribe", "agent"))
    keys = ApiKeys(TenantStore(db))
    nurse = Caller("ward", "nurse", "nurse", frozenset({"read:patient"}))
    own = await keys.create(nurse, "ward", "nurse", "tablet", None)
    assert own.secret.startswith("hk_ward_")
    with pytest.raises(Forbidden):  # another actor's keys need admin:tenant
        await keys.create(nurse, "ward", "scribe", "stolen", None)
    await keys.create(admin, "ward", "scribe", "issued by the admin", None)
    with pytest.raises(Forbidden):  # and another tenant's, whatever the permissions
        await keys.create(admin, "elsewhere", "scribe", "x", None)
    revoked = await keys.revoke(nurse, "ward", "nurse", own.id)
    assert revoked.revoke_time is not None
