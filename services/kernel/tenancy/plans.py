"""Plans and their limits, and the states a tenant can be in.

Every service reads them (the rate limiter, the patient quota, the indexer's
list of tenants), so they live in the kernel rather than in the tenant
service, which is the only writer of tenants.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    max_users: int = 0
    max_patients: int = 0
    calls_per_minute: int = 0
    # Token quotas (docs/usage.md); in a plan, 0 means no quota.
    embedding_tokens_per_month: int = 0
    llm_tokens_per_day: int = 0

    def over(self, defaults: Limits) -> Limits:
        """These limits where set, `defaults` where zero."""
        return Limits(
            max_users=self.max_users or defaults.max_users,
            max_patients=self.max_patients or defaults.max_patients,
            calls_per_minute=self.calls_per_minute or defaults.calls_per_minute,
            embedding_tokens_per_month=self.embedding_tokens_per_month
            or defaults.embedding_tokens_per_month,
            llm_tokens_per_day=self.llm_tokens_per_day or defaults.llm_tokens_per_day,
        )


PLANS: dict[str, Limits] = {
    "free": Limits(
        max_users=5,
        max_patients=1_000,
        calls_per_minute=600,
        embedding_tokens_per_month=10_000_000,
        llm_tokens_per_day=1_000_000,
    ),
    "standard": Limits(
        max_users=100,
        max_patients=100_000,
        calls_per_minute=6_000,
        embedding_tokens_per_month=1_000_000_000,
        llm_tokens_per_day=20_000_000,
    ),
    # No token quotas unless a contract sets them (the tenant's limit overrides).
    "enterprise": Limits(max_users=10_000, max_patients=10_000_000, calls_per_minute=60_000),
}
DEFAULT_PLAN = "free"

ACTIVE = "active"
SUSPENDED = "suspended"
