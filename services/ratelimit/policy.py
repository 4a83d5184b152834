"""Which bucket a call is counted in, how big it is, and what the call costs.

Envoy sends one descriptor per call (mesh/envoy/envoy.yaml.j2, the ratelimit filter's
actions), in one of three shapes:

* `tenant=<T>, method=<:path>`: a call with a verified token. One bucket per tenant,
  its plan's `calls_per_minute` (with the tenant's override), read from the tenant
  registry; the method only sets the cost (HACS_RATELIMIT_WEIGHTS).
* `caller=anonymous, remote_address=<A>, open=token`: a call without a token to a method
  that takes a credential (IssueToken, ExchangeToken, SignInWithPassword, browser sign-in
  under /auth/). One bucket per client address for all of them: the bound on guessing.
* `caller=anonymous, remote_address=<A>, open=other, method=<:path>`: any other call
  without a token (GetJwks, health, reflection). One bucket per client and method, so a
  flood of one starves neither another method nor another client.

Anything else is not limited here (nothing the edge sends).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from services.common.settings import parse_method_weights

# A bucket's kind, as the metrics and the refusal's `x-hacs-rate-limited` header name it.
TENANT = "tenant-calls-per-minute"
CREDENTIAL = "client-credential-calls-per-minute"
OPEN = "client-open-calls-per-minute"

# A path is cut here (and its query dropped) before it names a bucket.
MAX_METHOD_CHARS = 200


@dataclass(frozen=True)
class Charge:
    """One descriptor's bucket, its rate, and what the call takes from it."""

    kind: str
    key: str
    calls_per_minute: int
    cost: int


class MethodWeights:
    """What one call of a method costs: `Service/Method`, then `Service/*`, else 1."""

    def __init__(self, weights: Mapping[str, int]) -> None:
        self._weights = dict(weights)

    @classmethod
    def parse(cls, spec: str) -> MethodWeights:
        return cls(parse_method_weights(spec))

    def of(self, path: str) -> int:
        service, _, method = path.lstrip("/").partition("/")
        short = service.rsplit(".", 1)[-1]
        for key in (f"{service}/{method}", f"{short}/{method}", f"{service}/*", f"{short}/*"):
            if key in self._weights:
                return self._weights[key]
        return 1


def _method(path: str) -> str:
    return path.partition("?")[0][:MAX_METHOD_CHARS]


class Policy:
    """Descriptor -> Charge, with the tenant's current plan limit."""

    def __init__(
        self,
        *,
        tenant_limit: Callable[[str], Awaitable[int]],
        weights: MethodWeights,
        credential_calls_per_minute: int,
        open_calls_per_minute: int,
    ) -> None:
        self._tenant_limit = tenant_limit
        self._weights = weights
        self._credential = credential_calls_per_minute
        self._open = open_calls_per_minute

    async def charge(self, entries: Sequence[tuple[str, str]], hits: int) -> Charge | None:
        found = dict(entries)
        tenant = found.get("tenant")
        if tenant:
            cost = self._weights.of(found.get("method", "")) * hits
            return Charge(TENANT, f"tenant:{tenant}", await self._tenant_limit(tenant), cost)
        address = found.get("remote_address")
        if found.get("caller") != "anonymous" or not address:
            return None
        if found.get("open") == "token":
            return Charge(CREDENTIAL, f"credential:{address}", self._credential, hits)
        method = _method(found.get("method", ""))
        return Charge(OPEN, f"open:{address}:{method}", self._open, hits)
