"""The saga journal in Redis: one Lua script per write, Redis's clock.

Keys, under ``prefix``:

* ``run:<id>``: a hash per run (input and steps as JSON text, times as
  integer milliseconds of Redis's ``TIME``).
* ``key:<key>``: the id of the run a start key made (``SET NX`` in the
  create script).
* ``active``: non-terminal runs scored by lease expiry (what recovery scans).
* ``all`` and ``status:<status>``: ids by creation time, for ``list`` and
  ``counts``; ``done``: terminal runs by finish time, for ``purge``.

Every fenced write (save, heartbeat, release) is a script that compares the
token and the status first, so a stale owner's write changes nothing.  The
scripts compute keys from the prefix, so they need one Redis (not a cluster,
unless the prefix holds a hash tag such as ``{wisp:sagas}:``).
"""

from __future__ import annotations

import json
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from wisp.plugins.sagas.api import TERMINAL, Run, RunStatus, StepRecord

__all__ = ["RedisJournal"]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PURGE_BATCH = 500

_PRELUDE = """
local P = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(n) return string.format('%d', n) end
local TERMINAL = {completed=true, compensated=true, needs_attention=true}
local function set_status(id, old, new, created)
  if old ~= new then
    redis.call('ZREM', P .. 'status:' .. old, id)
    redis.call('ZADD', P .. 'status:' .. new, created, id)
  end
end
"""

# ARGV: prefix, id, key, saga, version, input, status, steps, lease_ms, owner, token
_CREATE = (
    _PRELUDE
    + """
local id = ARGV[2]
local key = ARGV[3]
if key ~= '' then
  local kk = P .. 'key:' .. key
  local other = redis.call('GET', kk)
  if other then return {0, other} end
  redis.call('SET', kk, id)
end
local rk = P .. 'run:' .. id
if redis.call('EXISTS', rk) == 1 then return {1, id} end
local exp = NOW + tonumber(ARGV[9])
redis.call('HSET', rk, 'id', id, 'key', key, 'saga', ARGV[4], 'version', ARGV[5],
  'input', ARGV[6], 'status', ARGV[7], 'steps', ARGV[8], 'cancel', '0', 'owner', ARGV[10],
  'token', ARGV[11], 'lease', fmt(exp), 'created', fmt(NOW), 'updated', fmt(NOW))
redis.call('ZADD', P .. 'active', exp, id)
redis.call('ZADD', P .. 'all', NOW, id)
redis.call('ZADD', P .. 'status:' .. ARGV[7], NOW, id)
return {1, id}
"""
)

# ARGV: prefix, id, owner, token, lease_ms
_CLAIM = (
    _PRELUDE
    + """
local rk = P .. 'run:' .. ARGV[2]
local f = redis.call('HMGET', rk, 'status', 'owner', 'lease')
if not f[1] or TERMINAL[f[1]] then return nil end
if f[2] ~= '' and tonumber(f[3]) >= NOW then return nil end
local exp = NOW + tonumber(ARGV[5])
redis.call('HSET', rk, 'owner', ARGV[3], 'token', ARGV[4], 'lease', fmt(exp), 'updated', fmt(NOW))
redis.call('ZADD', P .. 'active', exp, ARGV[2])
if f[1] == 'pending' then
  redis.call('HSET', rk, 'status', 'running')
  set_status(ARGV[2], 'pending', 'running', redis.call('HGET', rk, 'created'))
end
return redis.call('HGETALL', rk)
"""
)

# ARGV: prefix, id, token, status, steps, error (or '\\0' for none)
_SAVE = (
    _PRELUDE
    + """
local id = ARGV[2]
local rk = P .. 'run:' .. id
local f = redis.call('HMGET', rk, 'status', 'token', 'cancel', 'created')
if not f[1] or TERMINAL[f[1]] or f[2] ~= ARGV[3] then return -1 end
redis.call('HSET', rk, 'status', ARGV[4], 'steps', ARGV[5], 'updated', fmt(NOW))
if ARGV[6] == '\\0' then redis.call('HDEL', rk, 'error')
else redis.call('HSET', rk, 'error', ARGV[6]) end
set_status(id, f[1], ARGV[4], f[4])
if TERMINAL[ARGV[4]] then
  redis.call('HSET', rk, 'finished', fmt(NOW), 'owner', '', 'lease', '')
  redis.call('ZREM', P .. 'active', id)
  redis.call('ZADD', P .. 'done', NOW, id)
end
return tonumber(f[3])
"""
)

# ARGV: prefix, id, token, lease_ms (lease_ms 0 and release flag: give it up)
_LEASE = (
    _PRELUDE
    + """
local id = ARGV[2]
local rk = P .. 'run:' .. id
local f = redis.call('HMGET', rk, 'status', 'token')
if not f[1] or TERMINAL[f[1]] or f[2] ~= ARGV[3] then return 0 end
local exp = NOW + tonumber(ARGV[4])
redis.call('HSET', rk, 'lease', fmt(exp))
if ARGV[5] == '1' then redis.call('HSET', rk, 'owner', '', 'updated', fmt(NOW)) end
redis.call('ZADD', P .. 'active', exp, id)
return 1
"""
)

_CANCEL = (
    _PRELUDE
    + """
local rk = P .. 'run:' .. ARGV[2]
local s = redis.call('HGET', rk, 'status')
if s and not TERMINAL[s] then redis.call('HSET', rk, 'cancel', '1', 'updated', fmt(NOW)) end
return 1
"""
)

# ARGV: prefix, limit
_EXPIRED = (
    _PRELUDE
    + """
return redis.call('ZRANGEBYSCORE', P .. 'active', '-inf', '(' .. fmt(NOW),
  'LIMIT', 0, tonumber(ARGV[2]))
"""
)

# ARGV: prefix, cutoff_ms
_PURGE = (
    _PRELUDE
    + """
local ids = redis.call('ZRANGEBYSCORE', P .. 'done', '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(ids) do
  local rk = P .. 'run:' .. id
  local f = redis.call('HMGET', rk, 'status', 'key')
  if f[1] then redis.call('ZREM', P .. 'status:' .. f[1], id) end
  if f[2] and f[2] ~= '' then redis.call('DEL', P .. 'key:' .. f[2]) end
  redis.call('DEL', rk)
  redis.call('ZREM', P .. 'all', id)
  redis.call('ZREM', P .. 'done', id)
end
return #ids
"""
)


def _ms_time(value: Any) -> datetime | None:
    if value in (None, "", b""):
        return None
    return EPOCH + timedelta(milliseconds=int(value))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _run(fields: dict[str, str]) -> Run:
    return Run(
        id=fields["id"],
        saga=fields["saga"],
        version=int(fields["version"]),
        key=fields.get("key") or None,
        input=json.loads(fields["input"]),
        status=RunStatus(fields["status"]),
        steps=[StepRecord.from_json(s) for s in json.loads(fields["steps"])],
        error=fields.get("error"),
        cancel=fields.get("cancel") == "1",
        owner=fields.get("owner") or None,
        token=fields.get("token") or None,
        lease_expires_at=_ms_time(fields.get("lease")),
        created_at=_ms_time(fields.get("created")),
        updated_at=_ms_time(fields.get("updated")),
        finished_at=_ms_time(fields.get("finished")),
    )


def _pairs(flat: list[Any]) -> dict[str, str]:
    items = [_text(x) for x in flat]
    return dict(zip(items[::2], items[1::2], strict=True))


class RedisJournal:
    """:class:`~wisp.plugins.sagas.api.SagaJournal` on a redis-py asyncio client."""

    def __init__(self, client: Any, *, prefix: str = "wisp:sagas:") -> None:
        self.client = client
        self.prefix = prefix
        reg = client.register_script
        self._create = reg(_CREATE)
        self._claim = reg(_CLAIM)
        self._save = reg(_SAVE)
        self._lease = reg(_LEASE)
        self._cancel = reg(_CANCEL)
        self._expired = reg(_EXPIRED)
        self._purge = reg(_PURGE)

    async def create(
        self, run: Run, lease_seconds: float, owner: str | None = None
    ) -> tuple[Run, bool]:
        token = secrets.token_hex(16) if owner else ""
        status = RunStatus.RUNNING if owner else run.status
        made, run_id = await self._create(
            args=[
                self.prefix,
                run.id,
                run.key or "",
                run.saga,
                run.version,
                json.dumps(run.input),
                status.value,
                json.dumps(run.steps_json()),
                int(lease_seconds * 1000),
                owner or "",
                token,
            ]
        )
        if bool(made) and _text(run_id) == run.id:
            # Ours, as written: no read back (times are the store's; these are close).
            now = datetime.now(UTC)
            created = attrs.evolve(
                run,
                status=status,
                owner=owner,
                token=token or None,
                created_at=now,
                updated_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            return created, True
        found = await self.get(_text(run_id))
        if found is None:  # pragma: no cover - purged between the two calls
            raise RuntimeError(f"the saga run of key {run.key!r} vanished")
        return found, False

    async def get(self, run_id: str) -> Run | None:
        fields = await self.client.hgetall(self.prefix + "run:" + run_id)
        if not fields:
            return None
        return _run({_text(k): _text(v) for k, v in fields.items()})

    async def claim(self, run_id: str, owner: str, lease_seconds: float) -> Run | None:
        flat = await self._claim(
            args=[self.prefix, run_id, owner, secrets.token_hex(16), int(lease_seconds * 1000)]
        )
        return _run(_pairs(flat)) if flat else None

    async def save(self, run: Run, token: str) -> bool | None:
        result = await self._save(
            args=[
                self.prefix,
                run.id,
                token,
                run.status.value,
                json.dumps(run.steps_json()),
                "\0" if run.error is None else run.error,
            ]
        )
        return None if int(result) < 0 else bool(int(result))

    async def heartbeat(self, run_id: str, token: str, lease_seconds: float) -> bool:
        args = [self.prefix, run_id, token, int(lease_seconds * 1000), "0"]
        return bool(await self._lease(args=args))

    async def release(self, run_id: str, token: str) -> bool:
        return bool(await self._lease(args=[self.prefix, run_id, token, -1, "1"]))

    async def request_compensation(self, run_id: str) -> Run | None:
        await self._cancel(args=[self.prefix, run_id])
        return await self.get(run_id)

    async def _many(self, ids: list[Any]) -> list[Run]:
        if not ids:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for run_id in ids:
                pipe.hgetall(self.prefix + "run:" + _text(run_id))
            results = await pipe.execute()
        return [_run({_text(k): _text(v) for k, v in r.items()}) for r in results if r]

    async def expired(self, limit: int) -> list[Run]:
        ids = await self._expired(args=[self.prefix, limit])
        return [r for r in await self._many(ids) if r.status not in TERMINAL]

    async def list(
        self, *, status: RunStatus | None = None, saga: str | None = None, limit: int = 100
    ) -> list[Run]:
        index = self.prefix + (f"status:{status.value}" if status is not None else "all")
        out: list[Run] = []
        start = 0
        while len(out) < limit:
            ids = await self.client.zrevrange(index, start, start + max(limit, 100) - 1)
            if not ids:
                break
            start += len(ids)
            out.extend(r for r in await self._many(ids) if saga is None or r.saga == saga)
        return out[:limit]

    async def counts(self) -> dict[str, int]:
        async with self.client.pipeline(transaction=False) as pipe:
            for s in RunStatus:
                pipe.zcard(self.prefix + f"status:{s.value}")
            found = await pipe.execute()
        return {s.value: int(n) for s, n in zip(RunStatus, found, strict=True)}

    async def purge(self, older_than: datetime) -> int:
        cutoff = int((older_than.astimezone(UTC) - EPOCH) / timedelta(milliseconds=1))
        total = 0
        while True:
            n = int(await self._purge(args=[self.prefix, cutoff, PURGE_BATCH]))
            total += n
            if n < PURGE_BATCH:
                return total

    async def close(self) -> None:
        """The client is the redis plugin's; nothing of ours to close."""
