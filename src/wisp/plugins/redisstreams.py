"""Redis Streams as the event transport: ``[events] transport = "redis"``.

Bundled plugin ``redisstreams``; block it with ``-p no:redisstreams``.  It uses
the ``redis`` plugin's client (``[redis] url``).  One stream per shard
(``{prefix}{shard}``), trimmed with ``MAXLEN ~ maxlen``; one consumer group per
worker pool, created at the stream's start so nothing published before the
first worker is lost; ``XAUTOCLAIM`` hands a shard's new owner what a crashed
consumer left unacked; acks are batched ``XACK``s.  Guild snapshots live in
the hash ``{prefix}guilds``; leases in ``{prefix}leases:{group}`` (a sorted set
of expiries, by Redis's clock) and ``{prefix}owners:{group}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

import wisp
from wisp.config import positive
from wisp.plugins.eventstream.api import Delivery, StreamStatus, TransportError

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["RedisStreamsConfig", "RedisStreamsTransport"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="redisstreams",
    description="Redis Streams event transport: a stream per shard, consumer groups, "
    "XAUTOCLAIM reclaim, MAXLEN trimming.",
    api=">=1.0,<2",
    data="Discord dispatches while they wait in the streams (at most maxlen per shard) and "
    "each guild's channels and roles.",
)


@attrs.frozen
class RedisStreamsConfig:
    """``[redisstreams]``."""

    #: Prefix of every key (bots sharing one Redis use different ones).
    prefix: str = "wisp:events:"
    #: Entries each shard stream keeps, about (``XADD MAXLEN ~``): the oldest go first,
    #: acked or not, so size it for the longest worker outage you want to survive.
    maxlen: int = attrs.field(default=100_000, validator=positive)
    #: Entries per ``XREADGROUP`` / ``XAUTOCLAIM`` and per publishing pipeline.
    batch: int = attrs.field(default=200, validator=positive)
    #: Milliseconds a read waits for new entries before looking again.
    block_ms: int = attrs.field(default=1000, validator=positive)
    #: Dispatches queued in a gateway while Redis is away; more are dropped (logged).
    buffer: int = attrs.field(default=100_000, validator=positive)


_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

_RELEASE = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
end
return 1
"""

_HOLDERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, name in ipairs(gone) do
  redis.call('ZREM', KEYS[1], name)
  redis.call('HDEL', KEYS[2], name)
end
local out = {}
for _, name in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  table.insert(out, name)
  table.insert(out, redis.call('HGET', KEYS[2], name) or '')
end
return out
"""


class RedisStreamsTransport:
    """:class:`~wisp.plugins.eventstream.api.EventTransport` on Redis Streams."""

    name = "redis"

    def __init__(self, app: wisp.Wisp, config: RedisStreamsConfig) -> None:
        self.app = app
        self.config = config
        self._client: aioredis.Redis | None = None
        self._queue: deque[tuple[int, str, bytes, float]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._acks: dict[tuple[str, str], list[bytes]] = {}
        self._ack_wake = asyncio.Event()
        self._acker: asyncio.Task[None] | None = None
        self._dropped = 0
        self._scripts: dict[str, Any] = {}

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise TransportError("the Redis event transport has not started")
        return self._client

    def stream(self, shard_id: int) -> str:
        return f"{self.config.prefix}{shard_id}"

    async def start(self) -> None:
        if "redis" not in self.app.services:
            raise TransportError(
                "[events] transport = 'redis' needs [redis] url (or WISP_REDIS_URL)"
            )
        client = self.app.services.get("redis").client
        if client is None:
            raise TransportError("the redis service has not started")
        self._client = client
        for name, source in (("lease", _LEASE), ("release", _RELEASE), ("holders", _HOLDERS)):
            self._scripts[name] = client.register_script(source)
        self._sender = asyncio.create_task(self._send(), name="wisp events xadd")
        self._acker = asyncio.create_task(self._ack_loop(), name="wisp events xack")

    async def close(self) -> None:
        if self._client is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.flush()
                await self._flush_acks()
        await wisp.cancel_and_wait(self._sender, self._acker)
        self._sender = self._acker = None
        self._client = None

    # -- publishing -----------------------------------------------------------------

    def publish(self, shard_id: int, event: str, data: bytes) -> None:
        if len(self._queue) >= self.config.buffer:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                logger.error(
                    "events: Redis is not keeping up; {} dispatch(es) dropped so far "
                    "([redisstreams] buffer = {})",
                    self._dropped,
                    self.config.buffer,
                )
        self._queue.append((shard_id, event, data, time.time()))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        await self._idle.wait()

    async def _send(self) -> None:
        maxlen, batch = self.config.maxlen, self.config.batch
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                items = [self._queue.popleft() for _ in range(min(batch, len(self._queue)))]
                pipe = self.client.pipeline(transaction=False)
                for shard_id, event, data, at in items:
                    pipe.xadd(
                        self.stream(shard_id),
                        {"e": event, "d": data, "t": repr(at)},
                        maxlen=maxlen,
                        approximate=True,
                    )
                try:
                    await pipe.execute()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    logger.error("events: XADD failed ({!r}); retrying in 1s", exc)
                    self._queue.extendleft(reversed(items))
                    await asyncio.sleep(1.0)
            self._idle.set()

    # -- consuming ------------------------------------------------------------------

    async def _ensure_group(self, stream: str, group: str) -> None:
        from redis.exceptions import ResponseError

        try:
            await self.client.xgroup_create(stream, group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _delivery(
        self, stream: str, group: str, shard_id: int, entry_id: bytes, fields: Any, again: bool
    ) -> Delivery | None:
        key = (stream, group)

        async def ack() -> None:
            self._acks.setdefault(key, []).append(entry_id)
            self._ack_wake.set()

        async def nak() -> None:
            return None  # stays pending: its next owner claims it

        if not fields:
            return None
        return Delivery(
            id=entry_id.decode(),
            shard_id=shard_id,
            event=fields[b"e"].decode(),
            data=fields[b"d"],
            published_at=float(fields.get(b"t", b"0")),
            redelivered=again,
            ack=ack,
            nak=nak,
        )

    async def consume(self, group: str, consumer: str, shard_id: int) -> AsyncIterator[Delivery]:
        client, stream, batch = self.client, self.stream(shard_id), self.config.batch
        await self._ensure_group(stream, group)
        # This consumer owns the shard now (a lease): whatever another consumer was
        # given and did not ack is its to finish, oldest first.
        cursor: Any = b"0-0"
        while True:
            cursor, claimed, *_ = await client.xautoclaim(
                stream, group, consumer, min_idle_time=0, start_id=cursor, count=batch
            )
            for entry_id, fields in claimed:
                delivery = self._delivery(stream, group, shard_id, entry_id, fields, True)
                if delivery is None:
                    await client.xack(stream, group, entry_id)  # trimmed away meanwhile
                else:
                    yield delivery
            if cursor in (b"0-0", "0-0"):
                break
        while True:
            # Any: redis-py's annotation of the reply changed across releases.
            found: Any = await client.xreadgroup(
                group, consumer, {stream: ">"}, count=batch, block=self.config.block_ms
            )
            for _, entries in found or ():
                for entry_id, fields in entries:
                    delivery = self._delivery(stream, group, shard_id, entry_id, fields, False)
                    if delivery is not None:
                        yield delivery

    async def _ack_loop(self) -> None:
        while True:
            await self._ack_wake.wait()
            # Gather a few milliseconds of acks into one round trip; the handlers
            # already ran, so only a crash in this window repeats them.
            await asyncio.sleep(0.005)
            self._ack_wake.clear()
            try:
                await self._flush_acks()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.error("events: XACK failed ({!r}); retrying in 1s", exc)
                await asyncio.sleep(1.0)
                self._ack_wake.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            acks, self._acks = self._acks, {}
            pipe = self.client.pipeline(transaction=False)
            for (stream, group), ids in acks.items():
                pipe.xack(stream, group, *ids)
            try:
                await pipe.execute()
            except BaseException:
                for key, ids in acks.items():
                    self._acks.setdefault(key, []).extend(ids)
                raise

    # -- guild snapshots and leases ---------------------------------------------------

    async def put_guild(self, guild_id: int, data: bytes | None) -> None:
        key = f"{self.config.prefix}guilds"
        client: Any = self.client  # redis-py's hash stubs take str values only
        if data is None:
            await client.hdel(key, str(guild_id))
        else:
            await client.hset(key, str(guild_id), data)

    async def get_guild(self, guild_id: int) -> bytes | None:
        client: Any = self.client
        found: bytes | None = await client.hget(f"{self.config.prefix}guilds", str(guild_id))
        return found

    def _lease_keys(self, group: str) -> list[str]:
        return [f"{self.config.prefix}leases:{group}", f"{self.config.prefix}owners:{group}"]

    async def lease(self, group: str, name: str, owner: str, seconds: float) -> bool:
        ms = max(1, int(seconds * 1000))
        got = await self._scripts["lease"](keys=self._lease_keys(group), args=[name, owner, ms])
        return bool(got)

    async def release(self, group: str, name: str, owner: str) -> None:
        await self._scripts["release"](keys=self._lease_keys(group), args=[name, owner])

    async def holders(self, group: str) -> dict[str, str]:
        flat = await self._scripts["holders"](keys=self._lease_keys(group), args=[])
        it = iter(flat)
        return {_text(name): _text(owner) for name, owner in zip(it, it, strict=True)}

    async def status(self, group: str, shards: Sequence[int]) -> list[StreamStatus]:
        out: list[StreamStatus] = []
        for shard_id in shards:
            stream = self.stream(shard_id)
            length = int(await self.client.xlen(stream))
            # No group yet: its first worker starts from the stream's beginning.
            pending, consumers = 0, tuple[str, ...]()
            lag: int | None = length
            if length or await self.client.exists(stream):
                for info in await self.client.xinfo_groups(stream):
                    if _text(info.get("name")) != group:
                        continue
                    pending = int(info.get("pending") or 0)
                    raw_lag = info.get("lag")
                    lag = int(raw_lag) if raw_lag is not None else None
                    found = await self.client.xinfo_consumers(stream, group)
                    consumers = tuple(_text(c.get("name")) for c in found)
            out.append(StreamStatus(shard_id, stream, length, group, pending, lag, consumers))
        return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"redisstreams": RedisStreamsConfig}


@wisp.hookimpl(optionalhook=True)  # the eventstream plugin may be blocked
def wisp_event_transport(app: wisp.Wisp) -> RedisStreamsTransport | None:
    events: Any = app.config.section("events")
    if events.transport != "redis":
        return None
    return RedisStreamsTransport(app, app.config.section(RedisStreamsConfig))
