"""Token buckets in Redis, taken from atomically by one Lua script (GCRA).

A bucket is one key holding one number: its *theoretical arrival time* (TAT), the moment
the bucket would be full again, in microseconds of Redis's clock. Taking `cost` tokens
moves the TAT on by `cost` emission intervals (60 s / calls per minute); the take is
refused when that would put the TAT more than the bucket's size ahead of now. This is the
generic cell rate algorithm, a token bucket written as one timestamp:

* exact at any time scale (no window edges where twice the limit passes, as fixed windows
  allow; no approximation, as sliding-window counters make);
* one key, one script run per call, whichever process or Envoy sends it: the script is
  atomic in Redis, and the clock is Redis's (`TIME`), so replicas' clocks never disagree;
* the key expires when the bucket is full again: an idle tenant or client holds no memory.

A call costs its method's weight; a cost above the bucket's size is taken as the whole
bucket, so an expensive call is never refused forever.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS[1] the bucket; ARGV: microseconds per token, the bucket's size in tokens, the cost.
# Returns {taken (1|0), tokens left, microseconds until full, microseconds until the cost fits}.
GCRA = """
local interval = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tolerance = interval * size
local next_tat = tat + interval * cost
local fits_at = next_tat - tolerance
if now < fits_at then
  return {0, math.floor((tolerance - (tat - now)) / interval), tat - now, fits_at - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
           'PX', math.max(1, math.ceil((next_tat - now) / 1000)))
return {1, math.floor((tolerance - (next_tat - now)) / interval), next_tat - now, 0}
"""


@dataclass(frozen=True)
class Taken:
    """What one take from a bucket did."""

    allowed: bool
    remaining: int  # whole tokens left after it
    full_in_seconds: float  # until the bucket is full again
    retry_after_seconds: float  # until this cost would fit (0 when taken)


def bucket_size(calls_per_minute: int, burst_percent: int) -> float:
    """Tokens a bucket holds: `burst_percent` of a minute's calls, at least one call."""
    return max(1.0, calls_per_minute * burst_percent / 100.0)


class RedisBuckets:
    """Buckets under `prefix` in one Redis, shared by every process that opens them."""

    def __init__(self, redis: Redis, *, prefix: str = "hacs:ratelimit:") -> None:
        self._prefix = prefix
        self._script = redis.register_script(GCRA)

    async def take(self, key: str, *, calls_per_minute: int, size: float, cost: int) -> Taken:
        """Take `cost` tokens from bucket `key` (refilled at `calls_per_minute`), or not."""
        interval = 60_000_000 / calls_per_minute
        taken, remaining, full_in, fits_in = await self._script(
            keys=[self._prefix + key], args=[repr(interval), repr(size), min(cost, size)]
        )
        return Taken(
            allowed=bool(taken),
            remaining=max(0, int(remaining)),
            full_in_seconds=max(0, int(full_in)) / 1e6,
            retry_after_seconds=max(0, int(fits_in)) / 1e6,
        )
