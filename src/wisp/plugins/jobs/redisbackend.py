"""Jobs in Redis: one Lua script per operation, Redis's clock, pub/sub wake-ups.

Every operation that reads and writes runs as one script (``EVALSHA``; redis-py
loads it again after ``NOSCRIPT``), so it is atomic however many workers call
it.  Times are Redis's ``TIME`` in microseconds since the epoch, the same for
every machine; a ``run_at`` or ``retry_at`` a caller gives is stored as given.

Keys, under ``prefix``:

* ``job:<id>``: a hash per job (payload and result as JSON text, times as
  integer microseconds).
* ``key:<idempotency key>``: the id of the job that key made (``SET NX``).
* ``due:<queue>:<type>:<priority>``: a sorted set of the jobs a claim may
  take, scored by ``run_at`` (ties: by id): pending and failed jobs, and
  running jobs whose lease lapsed.  ``prios:<queue>:<type>``: the priorities
  that have such a set.  Queue and type are written length-prefixed, so no
  two pairs share a key.  A claim looks only at the sets of the queues and
  types it asked for, highest priority first, and at most ``limit`` members
  of each: a job of a type nobody asks for is never looked at, nor lost.
* ``running``: running jobs scored by lease expiry.  A claim first moves up to
  ``REAP`` lapsed leases: a job on its last attempt is dead-lettered (as the
  SQL backend's ``_bury_lapsed``), any other goes back among the due jobs,
  still ``running`` until someone claims it (or its old worker, whose token
  is still current, writes about it).
* ``all``, ``status:<status>``, ``queue:<queue>``, ``type:<type>``: ids by
  creation time, for ``list`` and ``counts``; ``done:<status>``: finished
  jobs by the time they finished, for ``purge``.
* ``wake``: the pub/sub channel enqueue, release and retry publish to; a
  waiting worker subscribes once.

The scripts name keys they compute from the prefix, so they need one Redis
(not a cluster, unless the prefix holds a hash tag such as ``{wisp:jobs}:``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from wisp.plugins.jobs.api import Job, JobStatus, NewJob, dumps_payload
from wisp.tasks import cancel_and_wait

__all__ = ["RedisBackend"]

#: Lapsed leases a claim deals with at most (the next claim does the rest).
REAP = 500
#: Finished jobs one purge script deletes (purge repeats it until done).
PURGE_BATCH = 500

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_ATTEMPT_LOST = "the worker running its last attempt was lost (lease expired)"

# ARGV[1] is the prefix in every script.  Numbers written to Redis go through
# string.format('%d'): Lua's tostring would round microseconds (%.14g).
_PRELUDE = """
pcall(redis.replicate_commands)
local P = ARGV[1]
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000000 + tonumber(t[2])
local function fmt(n) return string.format('%d', n) end
local NOWS = fmt(NOW)
local function jkey(id) return P .. 'job:' .. id end
local function seg(s) return string.len(s) .. ':' .. s end
local function pkey(q, ty) return P .. 'prios:' .. seg(q) .. ':' .. ty end
local function dkey(q, ty, pr) return P .. 'due:' .. seg(q) .. ':' .. seg(ty) .. ':' .. pr end
local function due_add(id, q, ty, pr, score)
  redis.call('ZADD', dkey(q, ty, pr), score, id)
  redis.call('ZADD', pkey(q, ty), tonumber(pr), pr)
end
local function due_rem(id, q, ty, pr)
  local k = dkey(q, ty, pr)
  if redis.call('ZREM', k, id) == 1 and redis.call('ZCARD', k) == 0 then
    redis.call('ZREM', pkey(q, ty), pr)
  end
end
local function move(id, old, new, created)
  if old ~= new then
    redis.call('ZREM', P .. 'status:' .. old, id)
    redis.call('ZADD', P .. 'status:' .. new, created, id)
  end
end
local LEASE = {'lease_owner', 'lease_token', 'lease_expires_at'}
-- status, queue, type, priority, created_at, lease_token, attempts, max_attempts, run_at
local function load(id)
  return redis.call('HMGET', jkey(id), 'status', 'queue', 'type', 'priority', 'created_at',
    'lease_token', 'attempts', 'max_attempts', 'run_at')
end
local function held(f, token) return f[1] == 'running' and f[6] == token end
local function unlease(id, f)
  redis.call('ZREM', P .. 'running', id)
  due_rem(id, f[2], f[3], f[4])
  redis.call('HDEL', jkey(id), unpack(LEASE))
end
"""

# ARGV: prefix, id, type, payload, queue, priority, max_attempts, run_at ('' now),
# has_key ('1'/'0'), key.  Returns {2, created_at, run_at} for a new job, {1, job} for
# this very job stored by an earlier attempt, {0, job} for the job holding the key.
_ENQUEUE = """
local id, q, ty, pr = ARGV[2], ARGV[5], ARGV[3], ARGV[6]
if ARGV[9] == '1' then
  local kk = P .. 'key:' .. ARGV[10]
  if not redis.call('SET', kk, id, 'NX') then
    local other = redis.call('GET', kk)
    if redis.call('EXISTS', jkey(other)) == 1 then
      return {0, redis.call('HGETALL', jkey(other))}
    end
    redis.call('SET', kk, id)  -- a stale mapping: its job is gone
  end
end
if redis.call('EXISTS', jkey(id)) == 1 then
  -- This very job, sent again after its reply was lost: it is already here.
  return {1, redis.call('HGETALL', jkey(id))}
end
local run_at = ARGV[8]
if run_at == '' then run_at = NOWS end
redis.call('HSET', jkey(id), 'id', id, 'type', ty, 'payload', ARGV[4], 'queue', q,
  'priority', pr, 'status', 'pending', 'attempts', '0', 'max_attempts', ARGV[7],
  'run_at', run_at, 'created_at', NOWS, 'updated_at', NOWS)
if ARGV[9] == '1' then redis.call('HSET', jkey(id), 'idempotency_key', ARGV[10]) end
redis.call('ZADD', P .. 'all', NOWS, id)
redis.call('ZADD', P .. 'status:pending', NOWS, id)
redis.call('ZADD', P .. 'queue:' .. q, NOWS, id)
redis.call('ZADD', P .. 'type:' .. ty, NOWS, id)
local first = redis.call('ZRANGE', dkey(q, ty, pr), 0, 0, 'WITHSCORES')
due_add(id, q, ty, pr, run_at)
-- Wake idle workers only when this job is now the first of its due set: with
-- an earlier one waiting there, they were woken for it already, or are busy.
-- (Publishing on every enqueue costs each listening worker a read per job.)
if #first == 0 or tonumber(run_at) < tonumber(first[2]) then
  redis.call('PUBLISH', P .. 'wake', q)
end
-- The caller knows every other field: only the clock's are sent back.
return {2, NOWS, run_at}
"""

# ARGV: prefix, worker, lease_us, limit, reap, nq, queues..., nt, types..., a token per
# job it may claim (limit), the error a lapsed last attempt gets.  Returns the claimed
# jobs, best first.
_CLAIM = """
local worker, lease, limit = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local nq = tonumber(ARGV[6])
local nt = tonumber(ARGV[7 + nq])
local first_token = 8 + nq + nt

-- Lapsed leases: the last attempt's are dead-lettered, the others are due again.
local lapsed = redis.call('ZRANGEBYSCORE', P .. 'running', '-inf', '(' .. NOWS,
  'LIMIT', 0, tonumber(ARGV[5]))
for _, id in ipairs(lapsed) do
  redis.call('ZREM', P .. 'running', id)
  local f = load(id)
  if f[1] == 'running' then
    if tonumber(f[7]) >= tonumber(f[8]) then
      redis.call('HSET', jkey(id), 'status', 'dead_letter', 'error', ARGV[#ARGV],
        'finished_at', NOWS, 'updated_at', NOWS)
      redis.call('HDEL', jkey(id), unpack(LEASE))
      move(id, 'running', 'dead_letter', f[5])
      redis.call('ZADD', P .. 'done:dead_letter', NOWS, id)
    else
      due_add(id, f[2], f[3], f[4], f[9])
    end
  end
end

-- The due sets of the queues and types asked for, by priority.
local levels, order = {}, {}
for i = 7, 6 + nq do
  local q = ARGV[i]
  for j = first_token - nt, first_token - 1 do
    local ty = ARGV[j]
    for _, pr in ipairs(redis.call('ZRANGE', pkey(q, ty), 0, -1)) do
      local n = tonumber(pr)
      if levels[n] == nil then
        levels[n] = {}
        table.insert(order, n)
      end
      table.insert(levels[n], {q, ty, pr})
    end
  end
end
table.sort(order, function(a, b) return a > b end)

-- At each priority, a merge of its sets by (run_at, id), reading each a page
-- at a time: about limit + sets members are read, not limit * sets.
local chosen = {}
for _, n in ipairs(order) do
  local want = limit - #chosen
  if want <= 0 then break end
  local page = math.ceil(want / #levels[n]) + 1
  local heads = {}
  local function fill(h)
    local r = redis.call('ZRANGEBYSCORE', h.key, '-inf', NOWS, 'WITHSCORES', 'LIMIT', h.read, page)
    h.buf, h.at, h.read, h.more = r, 1, h.read + #r / 2, #r / 2 == page
  end
  for _, d in ipairs(levels[n]) do
    local h = {key = dkey(d[1], d[2], d[3]), d = d, read = 0}
    fill(h)
    table.insert(heads, h)
  end
  while want > 0 do
    local best, bs, bid = nil, nil, nil
    for _, h in ipairs(heads) do
      if h.at > #h.buf and h.more then fill(h) end
      if h.at <= #h.buf then
        local id, sc = h.buf[h.at], tonumber(h.buf[h.at + 1])
        if best == nil or sc < bs or (sc == bs and id < bid) then best, bs, bid = h, sc, id end
      end
    end
    if best == nil then break end
    table.insert(chosen, {bid, bs, best.d})
    best.at = best.at + 2
    want = want - 1
  end
end

local out = {}
for _, c in ipairs(chosen) do
  local id, d = c[1], c[3]
  due_rem(id, d[1], d[2], d[3])
  local f = load(id)
  if f[1] == 'pending' or f[1] == 'failed' or f[1] == 'running' then
    local expires = fmt(NOW + lease)
    redis.call('HSET', jkey(id), 'status', 'running', 'attempts', fmt(tonumber(f[7]) + 1),
      'lease_owner', worker, 'lease_token', ARGV[first_token + #out],
      'lease_expires_at', expires, 'updated_at', NOWS)
    move(id, f[1], 'running', f[5])
    redis.call('ZADD', P .. 'running', expires, id)
    table.insert(out, redis.call('HGETALL', jkey(id)))
  end
end
return out
"""

# ARGV: prefix, lease_us, then id, token pairs.  Returns the ids kept.
_HEARTBEAT = """
local lease = tonumber(ARGV[2])
local kept = {}
for i = 3, #ARGV - 1, 2 do
  local id = ARGV[i]
  local f = load(id)
  if held(f, ARGV[i + 1]) then
    local expires = fmt(NOW + lease)
    redis.call('HSET', jkey(id), 'lease_expires_at', expires, 'updated_at', NOWS)
    redis.call('ZADD', P .. 'running', expires, id)
    due_rem(id, f[2], f[3], f[4])  -- due again after a lapse: it is held once more
    table.insert(kept, id)
  end
end
return kept
"""

# ARGV: prefix, then id, token, result JSON for each job.  Returns the ids completed
# (the others' leases were lost).
_COMPLETE = """
local done = {}
for i = 2, #ARGV, 3 do
  local id = ARGV[i]
  local f = load(id)
  if held(f, ARGV[i + 1]) then
    unlease(id, f)
    redis.call('HDEL', jkey(id), 'error')
    redis.call('HSET', jkey(id), 'status', 'completed', 'result', ARGV[i + 2],
      'finished_at', NOWS, 'updated_at', NOWS)
    move(id, 'running', 'completed', f[5])
    redis.call('ZADD', P .. 'done:completed', NOWS, id)
    done[#done + 1] = id
  end
end
return done
"""

# ARGV: prefix, id, token, error, retry_at ('' dead letter).  Returns 1 or 0.
_FAIL = """
local id = ARGV[2]
local f = load(id)
if not held(f, ARGV[3]) then return 0 end
unlease(id, f)
if ARGV[5] == '' then
  redis.call('HSET', jkey(id), 'status', 'dead_letter', 'error', ARGV[4], 'finished_at', NOWS,
    'updated_at', NOWS)
  move(id, 'running', 'dead_letter', f[5])
  redis.call('ZADD', P .. 'done:dead_letter', NOWS, id)
else
  redis.call('HSET', jkey(id), 'status', 'failed', 'error', ARGV[4], 'run_at', ARGV[5],
    'updated_at', NOWS)
  move(id, 'running', 'failed', f[5])
  due_add(id, f[2], f[3], f[4], ARGV[5])
end
return 1
"""

# ARGV: prefix, id, token.  Returns 1 or 0.
_RELEASE = """
local id = ARGV[2]
local f = load(id)
if not held(f, ARGV[3]) then return 0 end
unlease(id, f)
redis.call('HSET', jkey(id), 'status', 'pending', 'attempts', fmt(tonumber(f[7]) - 1),
  'run_at', NOWS, 'updated_at', NOWS)
move(id, 'running', 'pending', f[5])
due_add(id, f[2], f[3], f[4], NOWS)
redis.call('PUBLISH', P .. 'wake', f[2])
return 1
"""

# ARGV: prefix, id.  Returns the job (retried or as it was), or nil.
_RETRY = """
local id = ARGV[2]
local f = load(id)
if not f[1] then return false end
if f[1] == 'dead_letter' or f[1] == 'failed' then
  redis.call('HSET', jkey(id), 'status', 'pending', 'attempts', '0', 'run_at', NOWS,
    'updated_at', NOWS)
  redis.call('HDEL', jkey(id), 'finished_at')
  redis.call('ZREM', P .. 'done:dead_letter', id)
  move(id, f[1], 'pending', f[5])
  due_add(id, f[2], f[3], f[4], NOWS)
  redis.call('PUBLISH', P .. 'wake', f[2])
end
return redis.call('HGETALL', jkey(id))
"""

# ARGV: prefix, status, older_than_us ('' any), batch.  Returns {deleted, looked at}.
_PURGE = """
local s = ARGV[2]
local upto = '+inf'
if ARGV[3] ~= '' then upto = '(' .. ARGV[3] end
local ids = redis.call('ZRANGEBYSCORE', P .. 'done:' .. s, '-inf', upto, 'LIMIT', 0,
  tonumber(ARGV[4]))
local n = 0
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'done:' .. s, id)
  local f = redis.call('HMGET', jkey(id), 'status', 'queue', 'type', 'idempotency_key')
  if f[1] == s then
    redis.call('DEL', jkey(id))
    redis.call('ZREM', P .. 'all', id)
    redis.call('ZREM', P .. 'status:' .. s, id)
    redis.call('ZREM', P .. 'queue:' .. f[2], id)
    redis.call('ZREM', P .. 'type:' .. f[3], id)
    if f[4] and redis.call('GET', P .. 'key:' .. f[4]) == id then
      redis.call('DEL', P .. 'key:' .. f[4])
    end
    n = n + 1
  end
end
return {n, #ids}
"""

# ARGV: prefix, statuses...  Returns a count per status.
_COUNTS = """
local out = {}
for i = 2, #ARGV do table.insert(out, redis.call('ZCARD', P .. 'status:' .. ARGV[i])) end
return out
"""

# ARGV: prefix, index key, status ('' any), has_queue, queue, has_type, type, limit.
# Returns jobs newest first.
_LIST = """
local src, s = P .. ARGV[2], ARGV[3]
local hq, q, ht, ty = ARGV[4] == '1', ARGV[5], ARGV[6] == '1', ARGV[7]
local limit = tonumber(ARGV[8])
local out = {}
local start, chunk = 0, 200
while #out < limit do
  local ids = redis.call('ZREVRANGE', src, start, start + chunk - 1)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local f = redis.call('HMGET', jkey(id), 'status', 'queue', 'type')
    if f[1] and (s == '' or f[1] == s) and (not hq or f[2] == q) and (not ht or f[3] == ty) then
      table.insert(out, redis.call('HGETALL', jkey(id)))
      if #out >= limit then break end
    end
  end
  start = start + chunk
end
return out
"""


def _us(value: datetime) -> int:
    """Microseconds since the epoch (a naive datetime is taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return (value - EPOCH) // timedelta(microseconds=1)


def _time(text: str | None) -> datetime | None:
    return None if text is None else EPOCH + timedelta(microseconds=int(text))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job(raw: Sequence[Any] | Mapping[Any, Any]) -> Job:
    """A job from its hash: ``HGETALL``'s flat list (in a script) or a dict."""
    pairs = raw.items() if isinstance(raw, Mapping) else zip(raw[::2], raw[1::2], strict=True)
    f = {_text(key): _text(value) for key, value in pairs}
    result = f.get("result")
    return Job(
        id=f["id"],
        type=f["type"],
        payload=json.loads(f["payload"]),
        queue=f["queue"],
        priority=int(f["priority"]),
        status=JobStatus(f["status"]),
        attempts=int(f["attempts"]),
        max_attempts=int(f["max_attempts"]),
        run_at=EPOCH + timedelta(microseconds=int(f["run_at"])),
        created_at=EPOCH + timedelta(microseconds=int(f["created_at"])),
        updated_at=EPOCH + timedelta(microseconds=int(f["updated_at"])),
        idempotency_key=f.get("idempotency_key"),
        lease_owner=f.get("lease_owner"),
        lease_expires_at=_time(f.get("lease_expires_at")),
        lease_token=f.get("lease_token"),
        error=f.get("error"),
        result=None if result is None else json.loads(result),
        finished_at=_time(f.get("finished_at")),
    )


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))


class RedisBackend:
    """:class:`~wisp.plugins.jobs.api.JobsBackend` on the ``redis`` service (its
    client, and its ``listen`` for the wake-up channel)."""

    def __init__(self, redis: Any, prefix: str = "wisp:jobs:") -> None:
        self.redis = redis
        self.client = client = redis.client
        self.prefix = prefix
        self.channel = prefix + "wake"

        def script(body: str) -> Any:
            # redis-py runs EVALSHA and loads the script again on NOSCRIPT.
            return client.register_script(_PRELUDE + body)

        self._enqueue = script(_ENQUEUE)
        self._claim = script(_CLAIM)
        self._heartbeat = script(_HEARTBEAT)
        self._complete = script(_COMPLETE)
        self._fail = script(_FAIL)
        self._release = script(_RELEASE)
        self._retry = script(_RETRY)
        self._purge = script(_PURGE)
        self._counts = script(_COUNTS)
        self._list = script(_LIST)
        self._work = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    # -- writing ------------------------------------------------------------------

    async def enqueue(self, job: NewJob) -> tuple[Job, bool]:
        has_key = job.idempotency_key is not None
        payload = dumps_payload(job.payload)
        code, flat, *rest = await self._enqueue(
            args=[
                self.prefix,
                job.id,
                job.type,
                payload,
                job.queue,
                str(int(job.priority)),
                str(int(job.max_attempts)),
                "" if job.run_at is None else str(_us(job.run_at)),
                "1" if has_key else "0",
                job.idempotency_key or "",
            ]
        )
        if int(code) == 0:
            return _job(flat), False
        self._work.set()
        if int(code) == 1:
            return _job(flat), True
        created_at = EPOCH + timedelta(microseconds=int(flat))
        return (
            Job(
                id=job.id,
                type=job.type,
                payload=json.loads(payload),  # as stored: a tuple comes back a list
                queue=job.queue,
                priority=int(job.priority),
                status=JobStatus.PENDING,
                attempts=0,
                max_attempts=int(job.max_attempts),
                run_at=EPOCH + timedelta(microseconds=int(rest[0])),
                created_at=created_at,
                updated_at=created_at,
                idempotency_key=job.idempotency_key,
            ),
            True,
        )

    async def claim(
        self,
        worker: str,
        queues: Sequence[str],
        types: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[Job]:
        queues, types = _unique(queues), _unique(types)
        if not queues or not types or limit <= 0:
            return []
        tokens = [secrets.token_hex(16) for _ in range(limit)]
        rows = await self._claim(
            args=[
                self.prefix,
                worker,
                round(lease_seconds * 1_000_000),
                limit,
                REAP,
                len(queues),
                *queues,
                len(types),
                *types,
                *tokens,
                _LAST_ATTEMPT_LOST,
            ]
        )
        return [_job(flat) for flat in rows]

    async def heartbeat(
        self, worker: str, leases: Mapping[str, str], lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        args: list[Any] = [self.prefix, round(lease_seconds * 1_000_000)]
        for job_id, token in leases.items():
            args += [job_id, token]
        return {_text(job_id) for job_id in await self._heartbeat(args=args)}

    async def complete(self, job_id: str, token: str, result: Any) -> bool:
        return job_id in await self.complete_many([(job_id, token, result)])

    async def complete_many(self, done: Sequence[tuple[str, str, Any]]) -> set[str]:
        if not done:
            return set()
        args: list[Any] = [self.prefix]
        for job_id, token, result in done:
            args += [job_id, token, dumps_payload(result)]
        return {_text(job_id) for job_id in await self._complete(args=args)}

    async def fail(self, job_id: str, token: str, error: str, retry_at: datetime | None) -> bool:
        when = "" if retry_at is None else str(_us(retry_at))
        return bool(int(await self._fail(args=[self.prefix, job_id, token, error, when])))

    async def release(self, job_id: str, token: str) -> bool:
        released = bool(int(await self._release(args=[self.prefix, job_id, token])))
        if released:
            self._work.set()
        return released

    # -- reading and operating ------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        fields = await self.client.hgetall(self.prefix + "job:" + job_id)
        return _job(fields) if fields else None

    async def retry(self, job_id: str) -> Job | None:
        flat = await self._retry(args=[self.prefix, job_id])
        self._work.set()
        return _job(flat) if flat else None

    async def purge(self, *, status: JobStatus, older_than: datetime | None = None) -> int:
        if status not in (JobStatus.COMPLETED, JobStatus.DEAD_LETTER):
            raise ValueError(
                f"only finished jobs are purged (completed, dead_letter), not {status}"
            )
        before = "" if older_than is None else str(_us(older_than))
        total = 0
        while True:
            deleted, seen = await self._purge(args=[self.prefix, status.value, before, PURGE_BATCH])
            total += int(deleted)
            if int(seen) < PURGE_BATCH:
                return total

    async def counts(self) -> dict[str, int]:
        statuses = [status.value for status in JobStatus]
        found = await self._counts(args=[self.prefix, *statuses])
        return {status: int(n) for status, n in zip(statuses, found, strict=True)}

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        if limit <= 0:
            return []
        # The smallest index that holds every match; the script checks the rest.
        if status is not None:
            index = f"status:{status.value}"
        elif queue is not None:
            index = f"queue:{queue}"
        elif type is not None:
            index = f"type:{type}"
        else:
            index = "all"
        rows = await self._list(
            args=[
                self.prefix,
                index,
                "" if status is None else status.value,
                "0" if queue is None else "1",
                queue or "",
                "0" if type is None else "1",
                type or "",
                limit,
            ]
        )
        return [_job(flat) for flat in rows]

    # -- waking -----------------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:
        if self._listener is None or self._listener.done():
            self._subscribed.clear()
            self._listener = asyncio.create_task(self._listen(), name="wisp-jobs-redis-wake")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._subscribed.wait()  # once: a message before it would be missed
                await self._work.wait()
        self._work.clear()

    async def _listen(self) -> None:
        """Follow ``wake`` until cancelled.  After a lost connection the service
        subscribes again and the worker is woken: notifications may have been
        missed meanwhile.  Until then waiters fall back to their timeout."""
        await self.redis.listen(
            self.channel,
            lambda _: self._work.set(),
            on_gap=self._work.set,
            subscribed=self._subscribed,
            what="the jobs wake-up channel",
        )

    async def close(self) -> None:
        await cancel_and_wait(self._listener)
        self._listener = None
