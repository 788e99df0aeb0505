"""Idempotency keys in Redis: one Lua script claims a key or returns what it holds.

Each key is a hash ``<prefix>k:<key>`` (state, owner, attempts, result as
JSON text, error, times in milliseconds of Redis's ``TIME``).  The claim
script either takes the key (absent, failed, or expired) or hands back the
whole hash, so a claim and a repeat each cost one round trip; complete, fail
and extend are one script each that writes only while the caller still owns
the claim.  Every hash carries ``PEXPIREAT`` at its ``expires_at``, so Redis
deletes expired keys itself and :meth:`RedisBackend.cleanup` has nothing to
do.  Each script touches one key: a Redis Cluster works.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from wisp.plugins.idempotency.api import ClaimOutcome, ClaimResult, Record, State

__all__ = ["RedisBackend"]

_PRELUDE = """
local k = KEYS[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%d', n) end
"""

# ARGV: owner, lease_ms.  Returns {1} (claimed) or {0, hash...} (completed or in progress).
_CLAIM = (
    _PRELUDE
    + """
local f = redis.call('HMGET', k, 'state', 'owner', 'expires_at', 'attempts', 'created_at')
local state = f[1]
if state then
  if state == 'in_progress' and f[2] == ARGV[1] then return {1} end
  if state ~= 'failed' and tonumber(f[3]) > NOW then
    local out = redis.call('HGETALL', k)
    table.insert(out, 1, 0)
    return out
  end
end
local attempts, created = 1, fmt(NOW)
if state then
  attempts = tonumber(f[4]) + 1
  created = f[5]
  redis.call('HDEL', k, 'result', 'error')
end
local expires = NOW + tonumber(ARGV[2])
redis.call('HSET', k, 'state', 'in_progress', 'owner', ARGV[1], 'attempts', fmt(attempts),
  'created_at', created, 'updated_at', fmt(NOW), 'expires_at', fmt(expires))
redis.call('PEXPIREAT', k, expires)
return {1}
"""
)

# ARGV: owner, new state ('completed', 'failed' or '' to extend), ms, field, value.
_FINISH = (
    _PRELUDE
    + """
local f = redis.call('HMGET', k, 'state', 'owner')
if f[1] ~= 'in_progress' or f[2] ~= ARGV[1] then return 0 end
local expires = NOW + tonumber(ARGV[3])
redis.call('HSET', k, 'updated_at', fmt(NOW), 'expires_at', fmt(expires))
if ARGV[2] ~= '' then
  redis.call('HSET', k, 'state', ARGV[2], ARGV[4], ARGV[5])
end
redis.call('PEXPIREAT', k, expires)
return 1
"""
)


def _ms(value: Any) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _record(key: str, flat: list[Any]) -> Record:
    h = {_text(flat[i]): _text(flat[i + 1]) for i in range(0, len(flat), 2)}
    result = h.get("result")
    return Record(
        key=key,
        state=State(h["state"]),
        owner=h.get("owner") or None,
        attempts=int(h.get("attempts") or 1),
        result=None if result is None else json.loads(result),
        error=h.get("error"),
        created_at=_ms(h["created_at"]),
        updated_at=_ms(h["updated_at"]),
        expires_at=_ms(h["expires_at"]),
    )


def _ms_of(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class RedisBackend:
    """:class:`~wisp.plugins.idempotency.api.IdempotencyBackend` on the redis plugin's client."""

    def __init__(self, client: Any, prefix: str = "wisp:idem:") -> None:
        self.client = client
        self.prefix = prefix
        # redis-py runs EVALSHA and loads the script again after NOSCRIPT.
        self._claim = client.register_script(_CLAIM)
        self._finish = client.register_script(_FINISH)

    def _key(self, key: str) -> str:
        return f"{self.prefix}k:{key}"

    async def claim(self, key: str, owner: str, lease_seconds: float) -> ClaimResult:
        out = await self._claim(keys=[self._key(key)], args=[owner, _ms_of(lease_seconds)])
        if int(out[0]) == 1:
            return ClaimResult(ClaimOutcome.WON)
        record = _record(key, out[1:])
        if record.state is State.COMPLETED:
            return ClaimResult(ClaimOutcome.COMPLETED, record)
        return ClaimResult(ClaimOutcome.IN_PROGRESS, record)

    async def complete(self, key: str, owner: str, result: Any, ttl_seconds: float) -> bool:
        text = json.dumps(result, separators=(",", ":"))
        args = [owner, State.COMPLETED.value, _ms_of(ttl_seconds), "result", text]
        return bool(await self._finish(keys=[self._key(key)], args=args))

    async def fail(self, key: str, owner: str, error: str, ttl_seconds: float) -> bool:
        args = [owner, State.FAILED.value, _ms_of(ttl_seconds), "error", error]
        return bool(await self._finish(keys=[self._key(key)], args=args))

    async def extend(self, key: str, owner: str, lease_seconds: float) -> bool:
        args = [owner, "", _ms_of(lease_seconds), "", ""]
        return bool(await self._finish(keys=[self._key(key)], args=args))

    async def get(self, key: str) -> Record | None:
        flat = await self.client.execute_command("HGETALL", self._key(key))
        if not flat:
            return None
        if isinstance(flat, dict):  # a client that decodes replies into a dict
            flat = [x for pair in flat.items() for x in pair]
        return _record(key, flat)

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(self._key(key)))

    async def cleanup(self) -> int:
        """Nothing to do: every key carries its expiry, and Redis deletes it then."""
        return 0

    async def counts(self) -> dict[str, int]:
        out = {state.value: 0 for state in State}
        keys: list[Any] = []
        async for name in self.client.scan_iter(match=f"{self.prefix}k:*", count=1000):
            keys.append(name)
            if len(keys) >= 100_000:  # a health check, not an audit
                break
        for i in range(0, len(keys), 500):
            pipe = self.client.pipeline(transaction=False)
            for name in keys[i : i + 500]:
                pipe.hget(name, "state")
            for state in await pipe.execute():
                if state is not None:
                    out[_text(state)] = out.get(_text(state), 0) + 1
        return out

    async def close(self) -> None:
        return None
