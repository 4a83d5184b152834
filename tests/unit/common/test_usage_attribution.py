"""Whose usage: explicit background attribution, a platform caller's header, the caller."""

from __future__ import annotations

from services.common.caller import Caller, CallState, begin_call, end_call
from services.common.usage_attribution import (
    UNATTRIBUTED,
    Attribution,
    attribution,
    metered_as,
    outgoing_metadata,
    usage_tenant_header,
)


def caller(tenant_id: str) -> Caller:
    return Caller(tenant_id=tenant_id, actor_id="someone", role="agent", permissions=frozenset())


def within(state: CallState) -> Attribution:
    token = begin_call(state)
    try:
        return attribution()
    finally:
        end_call(token)


def test_the_tenant_usage_is_counted_for() -> None:
    assert attribution() == Attribution(UNATTRIBUTED) and outgoing_metadata() == ()
    own = CallState("/m", caller=caller("north"), usage_tenant="south")
    assert within(own) == Attribution("north", own_call=True)  # a tenant cannot bill another
    service = CallState("/m", caller=caller("platform"), usage_tenant="south")
    assert within(service) == Attribution("south")  # believed from the platform, no quota
    assert within(CallState("/m", caller=caller("platform"))) == Attribution("platform", True)
    with metered_as("west"):
        assert within(own) == Attribution("west")  # background work says whose it is
        assert outgoing_metadata() == (("x-hacs-usage-tenant", "west"),)
    assert usage_tenant_header("south") == "south"
    assert usage_tenant_header("South; DROP") == "" and usage_tenant_header("") == ""
