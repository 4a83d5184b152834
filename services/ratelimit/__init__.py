"""The global rate-limit service: Envoy's RLS API (`ShouldRateLimit`) over counters in Redis.

Every Envoy at the edge asks it before each call; every replica of it counts in the same
Redis, so a tenant's limit holds across edges and service replicas (docs/security.md,
"Global rate limits"). Hosted by `hacs serve --only ratelimit`; never part of `all`.
"""
