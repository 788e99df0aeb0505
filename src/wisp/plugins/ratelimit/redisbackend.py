"""GCRA buckets in Redis: one EVALSHA per check, the server's clock, TTLs.

The script checks every bucket of a call and writes them only if all allow
it, so a rejected call takes nothing and concurrent callers on any number of
processes see one bucket.  Keys expire once a bucket is full again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from wisp.plugins.ratelimit.limits import Limit

__all__ = ["RedisBackend"]

# KEYS: bucket keys; ARGV: interval_us, period_us per key.  Returns 0 or the wait in us.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local new = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local period = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  local allow_at = tat + interval - period
  if allow_at > now and allow_at - now > wait then wait = allow_at - now end
  new[i] = tat + interval
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, new[i], 'PX', math.ceil((new[i] - now) / 1000) + 1)
end
return 0
"""


class RedisBackend:
    """Buckets shared by every process using the same Redis."""

    def __init__(self, client: Any, prefix: str = "wisp:rl:") -> None:
        self.client = client
        self.prefix = prefix
        # redis-py runs EVALSHA and reloads the script on NOSCRIPT.
        self._script = client.register_script(GCRA)

    async def hit(self, buckets: Sequence[tuple[str, Limit]]) -> float:
        keys = [self.prefix + name for name, _ in buckets]
        args: list[int] = []
        for _, limit in buckets:
            args += [round(limit.interval * 1_000_000), round(limit.period * 1_000_000)]
        wait_us = await self._script(keys=keys, args=args)
        return int(wait_us) / 1_000_000

    async def close(self) -> None:
        return None
