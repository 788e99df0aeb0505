"""The REST limiter every process on one bot token shares through Redis.

One Lua script per request decides, atomically and on Redis's clock, whether
the request may go now: the invalid-request guard, the global limit (a sliding
second, plus a block after a global 429) and the route's bucket.  A second
script, run after the answer's headers arrive and not awaited by the request,
learns the bucket (``X-RateLimit-Bucket``, ``-Limit``, ``-Remaining``,
``-Reset-After``), records 429s and counts invalid requests.

Bucket state in Redis (a hash per bucket and major parameter): ``l`` limit
(``-1``: the route sends no limit headers), ``r`` requests left in the window,
``t`` the window's end (ms), ``w`` the window's number, ``p`` the window's
length, ``u`` 1 while unknown (one request probes it; the rest wait for its
answer).  ``r`` counts grants, not answers, so requests in flight in other
processes are counted before Discord sees them; an answer only lowers it, and
only for the window it was granted in.

Keys: ``{prefix}{sha256(token)[:16]}:...``; the token itself never reaches Redis.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import os
import time
import uuid
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger
from redis.exceptions import RedisError

from wisp.plugins.restlimits.config import RestLimitsConfig
from wisp.plugins.restlimits.routes import RouteKey, route_of

if TYPE_CHECKING:
    import aiohttp
    import redis.asyncio as aioredis

__all__ = ["Grant", "RestLimitStats", "SharedRestLimiter", "scope_of"]

#: How long the first request of an unknown bucket may stay unanswered before
#: another process probes instead (ms), and how often waiters look (ms).
_PROBE_MS = 5_000
_POLL_MS = 25

_TIME = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_INVALID_SUM = """
local function invalid_sum(prefix, now)
  local minute = math.floor(now / 60000)
  local keys = {}
  for i = 0, 10 do keys[#keys + 1] = prefix .. (minute - i) end
  local sum = 0
  for _, v in ipairs(redis.call('MGET', unpack(keys))) do
    if v then sum = sum + tonumber(v) end
  end
  return sum, minute
end
"""

#: KEYS: routes hash, global zset, global block.  ARGV: route, major, bucket
#: prefix, global limit (0: exempt), margin ms, invalid prefix, back-off
#: threshold (0: off), probe ms, member id, poll ms.
#: Returns {granted, wait ms, reason, invalid count, bucket key, window}.
ACQUIRE = (
    _TIME
    + _INVALID_SUM
    + """
local margin = tonumber(ARGV[5])
local wait, reason, invalid = 0, '', 0
local backoff = tonumber(ARGV[7])
if backoff > 0 then
  local minute
  invalid, minute = invalid_sum(ARGV[6], now)
  if invalid >= backoff then
    wait, reason = (minute + 1) * 60000 - now, 'invalid'
  end
end
local glimit = tonumber(ARGV[4])
local gwindow = 1000 + margin
if glimit > 0 then
  local blocked = redis.call('PTTL', KEYS[3])
  if blocked > wait then wait, reason = blocked, 'global' end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - gwindow)
  if redis.call('ZCARD', KEYS[2]) >= glimit then
    local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local w = tonumber(oldest[2]) + gwindow - now
    if w > wait then wait, reason = w, 'global' end
  end
end
local bucket = redis.call('HGET', KEYS[1], ARGV[1])
if not bucket then bucket = ARGV[1] end
local bkey = ARGV[3] .. bucket .. ':' .. ARGV[2]
local s = redis.call('HMGET', bkey, 'l', 'r', 't', 'w', 'p', 'u', 'g')
local l, r, rt, w, p, u, g = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]),
  tonumber(s[4]), tonumber(s[5]), tonumber(s[6]), tonumber(s[7]) or 0
if not l then
  l, r, rt, w, p, u, g = 1, 1, now + tonumber(ARGV[8]), 1, 0, 1, 0
  if bucket ~= ARGV[1] then
    -- The route has just found its bucket: requests granted while it was
    -- unknown may still be on their way; count them as this probe's others.
    local before = redis.call('HMGET', ARGV[3] .. ARGV[1] .. ':' .. ARGV[2], 'u', 'g')
    if tonumber(before[1]) == 1 then g = tonumber(before[2]) or 0 end
  end
end
local bwait = 0
if l >= 0 then
  if u == 1 then
    if now >= rt then r, rt = 1, now + tonumber(ARGV[8]) end
    if r <= 0 then bwait = math.min(rt - now, tonumber(ARGV[10])) end
  else
    if now >= rt then r, rt, w = l, now + p + margin, w + 1 end
    -- Near its end a window's last slots are not handed out: a request sent
    -- then may reach Discord after the reset and count in the next window.
    if r <= 0 or rt - now < margin then bwait = rt - now end
  end
end
if bwait > wait then wait, reason = bwait, 'route' end
if wait > 0 then return {0, wait, reason, invalid, bkey, w} end
if l >= 0 then
  redis.call('HSET', bkey, 'l', l, 'r', r - 1, 't', rt, 'w', w, 'p', p, 'u', u, 'g', g + u)
  redis.call('PEXPIRE', bkey, math.max(rt - now, 0) + 300000)
end
if glimit > 0 then
  redis.call('ZADD', KEYS[2], now, ARGV[9])
  redis.call('PEXPIRE', KEYS[2], gwindow + 1000)
end
return {1, 0, '', invalid, bkey, w}
"""
)

#: KEYS: routes hash, global block.  ARGV: route, major, bucket prefix, bucket
#: key granted, window granted, status, header bucket, limit, remaining,
#: reset-after ms, retry-after ms, scope, invalid prefix ('' : not invalid).
#: Status 0: the request failed without an answer.
#: Returns the invalid count of the last 10 minutes, or -1 when not counted.
RECORD = (
    _TIME
    + _INVALID_SUM
    + """
local invalid = -1
if ARGV[13] ~= '' then
  local k = ARGV[13] .. math.floor(now / 60000)
  redis.call('INCR', k)
  redis.call('PEXPIRE', k, 720000)
  invalid = invalid_sum(ARGV[13], now)
end
local status, scope = tonumber(ARGV[6]), ARGV[12]
local retry = math.max(tonumber(ARGV[11]), 1)
if status == 429 and scope == 'global' then
  redis.call('SET', KEYS[2], '1', 'PX', retry)
  return invalid
end
local bkey, gw, hb = ARGV[4], tonumber(ARGV[5]), ARGV[7]
if hb ~= '' then
  if redis.call('HGET', KEYS[1], ARGV[1]) ~= hb then
    redis.call('HSET', KEYS[1], ARGV[1], hb)
  end
  local nkey = ARGV[3] .. hb .. ':' .. ARGV[2]
  if nkey ~= bkey then
    if bkey == ARGV[3] .. ARGV[1] .. ':' .. ARGV[2] then redis.call('DEL', bkey) end
    bkey, gw = nkey, -1
  end
end
local s = redis.call('HMGET', bkey, 'l', 'r', 't', 'w', 'p', 'u', 'g')
local l, r, rt, w, p, u, g = tonumber(s[1]), tonumber(s[2]), tonumber(s[3]),
  tonumber(s[4]), tonumber(s[5]), tonumber(s[6]), tonumber(s[7]) or 0
local hl = tonumber(ARGV[8])
if status == 0 then
  -- The request failed before an answer: a probe lets the next one probe.
  if u == 1 then redis.call('HSET', bkey, 'r', 1) end
  return invalid
end
if status == 429 then
  if not l or l < 0 then l, r, rt, w, p = 1, 0, now, 1, retry end
  if hl then l = hl end
  r, u = 0, 0
  if now + retry > rt then rt = now + retry end
  -- The window is at least as long as the wait it asks for.
  if not p or p < retry then p = retry end
elseif hl then
  local rem, ra = tonumber(ARGV[9]), tonumber(ARGV[10])
  if not l or l < 0 or u == 1 then
    -- Other probes went out meanwhile (a lost answer, or the route's first
    -- answers arriving while its bucket was still unknown): Discord had not
    -- counted them yet.
    local others = g
    if gw ~= -1 and u == 1 then others = g - 1 end
    l, r, rt, w, p, u = hl, math.max(rem - math.max(others, 0), 0), now + ra, (w or 1), ra, 0
  else
    if now + ra > rt then rt = now + ra end
    -- An answer lowers what is left only in its own window (or, when the route
    -- just found its bucket, in the bucket's first: conservative at worst).
    if (gw == w or gw == -1) and rem < r then r = rem end
    if rem == hl - 1 or ra > p then p = ra end
    l = hl
  end
elseif u == 1 then
  redis.call('HSET', bkey, 'l', -1, 'u', 0)
  redis.call('PEXPIRE', bkey, 60000)
  return invalid
else
  return invalid
end
redis.call('HSET', bkey, 'l', l, 'r', r, 't', rt, 'w', w, 'p', p, 'u', u, 'g', 0)
redis.call('PEXPIRE', bkey, math.max(rt - now, 0) + 300000)
return invalid
"""
)


@attrs.define
class RestLimitStats:
    """What this process's limiter did (``wisp doctor``, the benchmark)."""

    requests: int = 0
    waits: int = 0
    wait_seconds: float = 0.0
    #: 429s seen, by scope: ``global``, ``user``, ``shared``, ``proxy``.
    rejected: dict[str, int] = attrs.Factory(dict)
    #: Invalid requests counted in the last 10 minutes (at the last look).
    invalid_count: int = 0
    redis_errors: int = 0


@attrs.define
class Grant:
    """A request the limiter let go; :meth:`SharedRestLimiter.record` takes its answer."""

    keys: _TokenKeys
    route: RouteKey
    bucket_key: str
    window: int


@attrs.frozen
class _TokenKeys:
    routes: str
    global_: str
    block: str
    buckets: str


def scope_of(status: int, headers: Mapping[str, str]) -> str | None:
    """The scope of a 429 (``global``, ``user``, ``shared``, or ``proxy`` when it
    did not come through Discord's Cloudflare); None for other answers."""
    if status != 429:
        return None
    if headers.get("X-RateLimit-Global", "").lower() == "true":
        return "global"
    scope = headers.get("X-RateLimit-Scope")
    if scope:
        return scope
    return "user" if headers.get("Via") else "proxy"


def _ms(value: str | None) -> int:
    try:
        return math.ceil(float(value) * 1000) if value else 0
    except ValueError:
        return 0


class SharedRestLimiter:
    """Waits for a slot before each request; learns from each answer.

    ``client`` is a ``redis.asyncio.Redis``; ``api_base`` returns the REST base
    requests are matched against (read per request: a proxy may be configured).
    """

    def __init__(
        self,
        client: aioredis.Redis,
        config: RestLimitsConfig,
        api_base: Callable[[], str],
        *,
        on_rejected: Callable[[str], None] | None = None,
        on_wait: Callable[[str, float], None] | None = None,
        on_invalid: Callable[[int], None] | None = None,
    ) -> None:
        self.client = client
        self.config = config
        self.api_base = api_base
        self.stats = RestLimitStats()
        self._acquire = client.register_script(ACQUIRE)
        self._record = client.register_script(RECORD)
        self._keys: dict[str, _TokenKeys] = {}
        self._serial = itertools.count()
        self._node = f"{uuid.uuid4().hex[:8]}{os.getpid()}"
        self._invalid_prefix = f"{config.prefix}invalid:{config.invalid_group}:"
        self._margin_ms = round(config.margin * 1000)
        self._pending: set[asyncio.Task[None]] = set()
        self._on_rejected = on_rejected
        self._on_wait = on_wait
        self._on_invalid = on_invalid
        self._backing_off = False
        self._last_error = 0.0

    def keys_for(self, authorization: str) -> _TokenKeys:
        """Key names for the token in an ``Authorization`` header (hashed)."""
        keys = self._keys.get(authorization)
        if keys is None:
            digest = hashlib.sha256(authorization.encode()).hexdigest()[:16]
            base = f"{self.config.prefix}{digest}:"
            keys = _TokenKeys(f"{base}routes", f"{base}global", f"{base}gblock", f"{base}b:")
            self._keys[authorization] = keys
        return keys

    async def try_acquire(
        self, authorization: str, method: str, path: str
    ) -> tuple[Grant | None, float, str]:
        """One round trip: a grant, or how long to wait (seconds) and why
        (``route``, ``global`` or ``invalid``)."""
        keys = self.keys_for(authorization)
        route = route_of(method, path)
        config = self.config
        granted, wait_ms, reason, invalid, bucket_key, window = await self._acquire(
            keys=[keys.routes, keys.global_, keys.block],
            args=[
                route.route,
                route.major,
                keys.buckets,
                config.global_per_second if route.global_ else 0,
                self._margin_ms,
                self._invalid_prefix,
                config.invalid_backoff_at,
                _PROBE_MS,
                f"{self._node}:{next(self._serial)}",
                _POLL_MS,
            ],
        )
        self._saw_invalid(int(invalid))
        if granted:
            return Grant(keys, route, _text(bucket_key), int(window)), 0.0, ""
        return None, int(wait_ms) / 1000, _text(reason)

    async def acquire(self, authorization: str, method: str, path: str) -> Grant | None:
        """Wait until the request may go; None when Redis failed (it goes anyway:
        discord.py's own limiter still stands, and a bot must not stop with Redis)."""
        start = 0.0
        reason = ""
        try:
            while True:
                grant, wait, why = await self.try_acquire(authorization, method, path)
                if grant is not None:
                    break
                if not start:
                    start = time.perf_counter()
                reason = reason or why
                await asyncio.sleep(wait)
        except (RedisError, OSError, TimeoutError) as exc:
            self._redis_failed(exc)
            return None
        self.stats.requests += 1
        if start:
            waited = time.perf_counter() - start
            self.stats.waits += 1
            self.stats.wait_seconds += waited
            if self._on_wait is not None:
                self._on_wait(reason, waited)
        return grant

    async def record(self, grant: Grant, status: int, headers: Mapping[str, str]) -> None:
        """Learn from an answer's status and headers."""
        scope = scope_of(status, headers)
        if scope is not None:
            self.stats.rejected[scope] = self.stats.rejected.get(scope, 0) + 1
            if self._on_rejected is not None:
                self._on_rejected(scope)
            log = logger.warning if scope == "global" else logger.debug
            log("REST 429 ({} scope) on {}", scope, grant.route.route)
        invalid = status in (401, 403) or (status == 429 and scope not in ("shared", "proxy"))
        retry_ms = _ms(headers.get("X-RateLimit-Reset-After")) if scope != "global" else 0
        retry_ms = retry_ms or _ms(headers.get("Retry-After"))
        route = grant.route
        try:
            counted = await self._record(
                keys=[grant.keys.routes, grant.keys.block],
                args=[
                    route.route,
                    route.major,
                    grant.keys.buckets,
                    grant.bucket_key,
                    grant.window,
                    status,
                    headers.get("X-RateLimit-Bucket", ""),
                    headers.get("X-RateLimit-Limit", ""),
                    headers.get("X-RateLimit-Remaining", "0"),
                    _ms(headers.get("X-RateLimit-Reset-After")),
                    retry_ms,
                    scope or "",
                    self._invalid_prefix if invalid else "",
                ],
            )
        except Exception as exc:
            self._redis_failed(exc)
            return
        if int(counted) >= 0:
            self._saw_invalid(int(counted))

    def record_later(self, grant: Grant, status: int, headers: Mapping[str, str]) -> None:
        """:meth:`record` off the request's path (the answer goes on at once)."""
        task = asyncio.create_task(self.record(grant, status, dict(headers)))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for answers still being recorded (at shutdown)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    def trace_config(self) -> aiohttp.TraceConfig:
        """An aiohttp ``TraceConfig`` for discord.py's ``http_trace`` option: every
        bot-token request to the REST base waits for the limiter before it goes."""
        import aiohttp

        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_request_start)
        trace.on_request_end.append(self._on_request_end)
        trace.on_request_exception.append(self._on_request_exception)
        return trace

    async def _on_request_start(
        self, session: Any, ctx: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        authorization = params.headers.get("Authorization")
        if not authorization:
            return  # webhooks, interaction callbacks: their token is their limit
        url = str(params.url)
        base = self.api_base()
        if not url.startswith(base):
            return  # the gateway, the CDN
        ctx.wisp_grant = await self.acquire(authorization, params.method, url[len(base) :])

    async def _on_request_end(
        self, session: Any, ctx: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        grant = getattr(ctx, "wisp_grant", None)
        if grant is not None:
            self.record_later(grant, params.response.status, params.response.headers)

    async def _on_request_exception(
        self, session: Any, ctx: Any, params: aiohttp.TraceRequestExceptionParams
    ) -> None:
        grant = getattr(ctx, "wisp_grant", None)
        if grant is not None:
            self.record_later(grant, 0, {})

    def _saw_invalid(self, count: int) -> None:
        self.stats.invalid_count = count
        if self._on_invalid is not None:
            self._on_invalid(count)
        threshold = self.config.invalid_backoff_at
        if not threshold:
            return
        if count >= threshold and not self._backing_off:
            self._backing_off = True
            logger.error(
                "REST: {} invalid requests (401/403/429) in the last 10 minutes in group {!r}; "
                "holding every request until the count falls below {} (Discord bans the IP "
                "for an hour at {})",
                count,
                self.config.invalid_group,
                threshold,
                self.config.invalid_limit,
            )
        elif count < threshold and self._backing_off:
            self._backing_off = False
            logger.warning("REST: invalid requests back to {}; requests go again", count)

    def _redis_failed(self, exc: BaseException) -> None:
        self.stats.redis_errors += 1
        now = time.monotonic()
        if now - self._last_error > 30:
            self._last_error = now
            logger.warning(
                "REST limiter: Redis failed ({}: {}); requests go on discord.py's own "
                "per-process limits until it answers",
                type(exc).__name__,
                exc,
            )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
