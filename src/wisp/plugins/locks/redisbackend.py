"""Locks in Redis: one script per acquire, release and extend; releases wake
waiters through pub/sub.

Keys, under the prefix: ``lock:NAME`` holds the holder (``host:pid:serial``,
unique per acquisition) with the lease as its expiry; ``token:NAME`` is the
token counter, incremented by each acquire (it never expires, so tokens stay
monotonic); ``queue:NAME`` is a sorted set of the processes waiting, in
order of arrival (``qseq:NAME`` numbers them); ``fence:NAME`` is the fence of
fenced writes.

Waiters queue in their process; the first of them queues the process in
Redis.  A release wakes exactly one process, the first in the queue (its own
waiter directly, another by a message on ``proc:ID``, which that process
alone subscribes to), so processes take turns and a release costs one
wake-up, not one per process.  A waiter that hears nothing still looks again
when the holder's lease ends (the acquire script returns its PTTL) or after
``recheck_seconds``, so a lost message or a dead holder costs a delay, never
a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from loguru import logger

from wisp.plugins.locks.api import LockInfo
from wisp.plugins.locks.backend import Attempt, Wake
from wisp.plugins.locks.fencing import redis_fenced_set
from wisp.tasks import cancel_and_wait

__all__ = ["RedisBackend"]

# KEYS: lock, counter, queue, queue sequence; ARGV: ttl ms, holder, this
# process's id, "1" when more waiters queue behind the caller in this process.
# The token, or {0, pttl of the holder}.  The holder (host:pid:serial) is
# unique per acquisition, so it is what a release compares; the counter is
# the current holder's token.  A process that finds the lock held, or whose
# holder leaves others waiting, queues its id (once: it keeps its place).
_ENQUEUE = """
local function enqueue()
  if not redis.call('ZSCORE', KEYS[3], ARGV[3]) then
    redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[3])
    redis.call('PEXPIRE', KEYS[3], 3600000)
    redis.call('PEXPIRE', KEYS[4], 3600000)
  end
end
"""

# KEYS and ARGV as ACQUIRE's (ARGV[1], ARGV[2], ARGV[4] unused).
ENQUEUE = _ENQUEUE + "enqueue()"

ACQUIRE = (
    _ENQUEUE
    + """
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then
  redis.call('ZREM', KEYS[3], ARGV[3])
  if ARGV[4] == '1' then enqueue() end
  return redis.call('INCR', KEYS[2])
end
enqueue()
return {0, redis.call('PTTL', KEYS[1])}
"""
)

# Wake the first queued process that listens: pop ids until PUBLISH reaches
# one (a dead process's id is skipped).  KEYS: queue; ARGV: channel prefix,
# name, this process's id.  1: nobody queued; 2: this process is next (it
# wakes its own waiter, no message); 3: another process was told.
WAKE_NEXT = """
while true do
  local first = redis.call('ZPOPMIN', KEYS[2])
  if #first == 0 then return 1 end
  if first[1] == ARGV[4] then return 2 end
  if redis.call('PUBLISH', ARGV[2] .. first[1], ARGV[3]) > 0 then return 3 end
end
"""

# KEYS: lock, queue; ARGV: holder, channel prefix, name, this process's id.
# 0: not ours (nothing deleted); else WAKE_NEXT's answer.
RELEASE = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
"""
    + WAKE_NEXT
)

# A process told to wake that has no waiter left passes the turn on, if the
# lock is still free.  KEYS: lock, queue; ARGV as RELEASE's (ARGV[1] unused).
PASS = (
    """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
"""
    + WAKE_NEXT
)

# KEYS: lock; ARGV: holder, ttl ms.
EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisBackend:
    """Locks on the ``redis`` service: its client, and its ``listen`` for this
    process's wake-up channel."""

    kind = "redis"
    waits_in_server = False

    def __init__(
        self,
        redis: Any,
        prefix: str,
        has_waiters: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.redis = redis
        self.client = client = redis.client
        self.prefix = prefix
        self.process_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._acquire = client.register_script(ACQUIRE)
        self._release = client.register_script(RELEASE)
        self._pass = client.register_script(PASS)
        self._extend = client.register_script(EXTEND)
        self._enqueue = client.register_script(ENQUEUE)
        self._wake: Wake = lambda name: False
        self._has_waiters = has_waiters
        self._listener: asyncio.Task[None] | None = None
        self._chores: set[asyncio.Task[Any]] = set()
        self._subscribed = asyncio.Event()

    def lock_key(self, name: str) -> str:
        return f"{self.prefix}lock:{name}"

    def fence_key(self, name: str) -> str:
        return f"{self.prefix}fence:{name}"

    def _keys(self, name: str) -> list[str]:
        return [self.lock_key(name), f"{self.prefix}queue:{name}"]

    def _args(self, holder: str, name: str) -> list[str]:
        return [holder, f"{self.prefix}proc:", name, self.process_id]

    async def open(self, wake: Wake) -> None:
        self._wake = wake
        self._listener = asyncio.create_task(self._listen(), name="wisp-locks-listener")
        # Waiters work without it (they re-check), but start subscribed when we can.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._subscribed.wait()

    async def close(self) -> None:
        if self._chores:  # a last pass-on may matter to other processes' waiters
            await asyncio.wait(list(self._chores), timeout=1.0)
        await cancel_and_wait(*self._chores, self._listener)
        self._listener = None

    def _chore(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _listen(self) -> None:
        """Follow this process's wake-up channel; while it is lost, waiters
        re-check on their own (``_subscribed`` is clear, health says so)."""
        await self.redis.listen(
            f"{self.prefix}proc:{self.process_id}",
            self._woken,
            subscribed=self._subscribed,
            what="lock wake-ups",
        )

    def _woken(self, raw: bytes) -> None:
        name = raw.decode()
        if not self._wake(name):
            # Our waiter left (timed out) after we were queued: pass it on.
            self._chore(self._pass_on(name))

    async def _pass_on(self, name: str) -> None:
        try:
            if int(await self._pass(keys=self._keys(name), args=self._args("", name))) == 2:
                self._wake(name)
        except Exception as exc:  # waiters elsewhere re-check on their own
            logger.warning("locks: could not pass on a wake-up for {!r}: {}", name, exc)

    def abandon(self, name: str) -> None:
        """This process has no waiter left for ``name``: leave its queue."""

        async def leave() -> None:
            if self._has_waiters(name):
                return  # a new waiter came meanwhile: stay queued
            with contextlib.suppress(Exception):
                await self.client.zrem(f"{self.prefix}queue:{name}", self.process_id)

        self._chore(leave())

    def waiting(self, name: str) -> None:
        """Queue this process (unless it is queued): waiters arrived while its
        acquire was on its way."""

        async def enqueue() -> None:
            with contextlib.suppress(Exception):
                await self._enqueue(keys=self._acquire_keys(name), args=[0, "", self.process_id])

        self._chore(enqueue())

    def _acquire_keys(self, name: str) -> list[str]:
        return [
            self.lock_key(name),
            f"{self.prefix}token:{name}",
            f"{self.prefix}queue:{name}",
            f"{self.prefix}qseq:{name}",
        ]

    async def acquire(
        self, name: str, holder: str, ttl: float, block: float, queued: bool = False
    ) -> Attempt:
        result = await self._acquire(
            keys=self._acquire_keys(name),
            args=[max(1, round(ttl * 1000)), holder, self.process_id, "1" if queued else "0"],
        )
        if not isinstance(result, list):
            return Attempt(int(result))
        pttl = int(result[1])
        left = pttl / 1000 if pttl >= 0 else None  # -1: a key without expiry (not ours)
        return Attempt(None, retry_after=left if left is not None else 1.0, lease_left=left)

    async def extend(self, name: str, token: int, holder: str, handle: Any, ttl: float) -> bool:
        done = await self._extend(
            keys=[self.lock_key(name)], args=[holder, max(1, round(ttl * 1000))]
        )
        return bool(int(done))

    async def release(self, name: str, token: int, holder: str, handle: Any) -> bool:
        done = int(await self._release(keys=self._keys(name), args=self._args(holder, name)))
        # 2: our own waiter is next; 1: no process queued, but a waiter of ours
        # may have just arrived.  With nobody here after all, pass the turn on.
        if done in (1, 2) and not self._wake(name) and done == 2:
            self._chore(self._pass_on(name))
        return done != 0

    async def fenced_set(
        self, name: str, token: int, key: str, value: Any, px: int | None = None
    ) -> None:
        await redis_fenced_set(self.client, self.fence_key(name), name, token, key, value, px=px)

    async def info(self, name: str) -> LockInfo | None:
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.get(self.lock_key(name))
            pipe.pttl(self.lock_key(name))
            pipe.get(f"{self.prefix}token:{name}")
            holder, pttl, token = await pipe.execute()
        if holder is None:
            return None
        text = holder.decode() if isinstance(holder, bytes) else str(holder)
        return LockInfo(name, int(token or 0), text, max(int(pttl), 0) / 1000)

    async def held(self) -> list[LockInfo]:
        start = len(self.lock_key(""))
        names: list[str] = []
        async for key in self.client.scan_iter(match=_glob_escape(self.lock_key("")) + "*"):
            names.append((key.decode() if isinstance(key, bytes) else key)[start:])
        infos = [await self.info(n) for n in sorted(names)]
        return [i for i in infos if i is not None]

    async def ping(self) -> str:
        await self.client.ping()
        listening = "subscribed" if self._subscribed.is_set() else "NOT subscribed (re-checking)"
        return f"PING answered, wake-ups {listening}"
