"""Which bucket a descriptor counts in and what a call costs (no Redis needed)."""

from __future__ import annotations

import pytest

from services.common.settings import DEFAULT_METHOD_WEIGHTS, Settings, parse_method_weights
from services.ratelimit.policy import CREDENTIAL, OPEN, TENANT, Charge, MethodWeights, Policy


def test_default_weights_make_an_answer_dearer_than_a_search_than_a_get() -> None:
    weights = MethodWeights.parse(DEFAULT_METHOD_WEIGHTS)
    assert weights.of("/hacs.rag.v1.RagService/Answer") == 10
    assert weights.of("/hacs.search.v1.SearchService/Search") == 2
    assert weights.of("/hacs.records.v1.RecordService/CreateRecord") == 1  # writes
    assert weights.of("/hacs.records.v1.RecordService/GetRecord") == 1  # reads


def test_weights_by_full_or_short_name_and_wildcard() -> None:
    weights = MethodWeights.parse("hacs.rag.v1.RagService/Answer=7,SearchService/*=3")
    assert weights.of("/hacs.rag.v1.RagService/Answer") == 7
    assert weights.of("/hacs.search.v1.SearchService/ParseQuery") == 3
    assert weights.of("/hacs.rag.v1.RagService/Retrieve") == 1
    assert weights.of("") == 1


@pytest.mark.parametrize(
    "spec", ["Answer=10", "RagService/Answer", "RagService/Answer=0", "a/b/c=2"]
)
def test_bad_weights_are_refused_at_start(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_method_weights(spec)
    with pytest.raises(ValueError, match="HACS_RATELIMIT_WEIGHTS"):
        Settings.from_env({"HACS_RATELIMIT_WEIGHTS": spec})


def test_rate_limit_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="HACS_RATELIMIT_FAILURE_MODE='sometimes'"):
        Settings.from_env({"HACS_RATELIMIT_FAILURE_MODE": "sometimes"})
    with pytest.raises(ValueError, match="HACS_RATELIMIT_BURST_PERCENT"):
        Settings.from_env({"HACS_RATELIMIT_BURST_PERCENT": "0"})
    with pytest.raises(ValueError, match="HACS_RATELIMIT_URL"):
        Settings.from_env({"HACS_RATELIMIT_URL": "ratelimit"})
    settings = Settings.from_env({"HACS_SERVICES": "ratelimit"})
    assert settings.enabled_services == ("ratelimit",)
    assert "ratelimit" not in Settings.from_env({}).enabled_services  # `all` leaves it out


async def policy_charge(entries: list[tuple[str, str]], hits: int = 1) -> Charge | None:
    async def plan(tenant_id: str) -> int:
        return {"small": 5}.get(tenant_id, 600)

    policy = Policy(
        tenant_limit=plan,
        weights=MethodWeights.parse("RagService/Answer=10"),
        credential_calls_per_minute=30,
        open_calls_per_minute=60,
    )
    return await policy.charge(entries, hits)


async def charge_of(entries: list[tuple[str, str]], hits: int = 1) -> Charge:
    charge = await policy_charge(entries, hits)
    assert charge is not None
    return charge


async def test_a_tenants_calls_share_one_bucket_whatever_the_method() -> None:
    answer = await charge_of([("tenant", "small"), ("method", "/hacs.rag.v1.RagService/Answer")])
    get = await charge_of([("tenant", "small"), ("method", "/hacs.tenant.v1.TenantService/X")], 2)
    assert (answer.kind, answer.key, answer.calls_per_minute, answer.cost) == (
        TENANT,
        "tenant:small",
        5,
        10,
    )
    assert get.key == "tenant:small" and get.cost == 2


async def test_calls_without_a_tenant_are_keyed_by_client_and_method() -> None:
    anonymous = [("caller", "anonymous"), ("remote_address", "203.0.113.7")]
    token = await charge_of([*anonymous, ("open", "token")])
    jwks = await charge_of(
        [*anonymous, ("open", "other"), ("method", "/hacs.tenant.v1.TenantService/GetJwks?x=1")]
    )
    assert token.kind == CREDENTIAL and token.key == "credential:203.0.113.7"
    assert token.calls_per_minute == 30
    assert jwks.kind == OPEN
    assert jwks.key == "open:203.0.113.7:/hacs.tenant.v1.TenantService/GetJwks"
    assert await policy_charge([("something", "else")]) is None
