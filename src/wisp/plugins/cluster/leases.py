"""Redis keys the cluster shares: range leases, IDENTIFY buckets, heartbeats.

A range lease is ``SET key value NX PX ttl``; renewing and releasing compare
the whole value (token included) in Lua, so a process whose lease lapsed and
was taken over can neither extend nor delete the new owner's lease.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Callable
from typing import Any

import attrs

__all__ = ["Keys", "Lease", "acquire", "hold_bucket", "release", "renew"]

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""


@attrs.frozen
class Keys:
    """Every Redis key and channel name, from ``[cluster] prefix``."""

    prefix: str

    def lease(self, generation: int, first: int, last: int) -> str:
        return f"{self.prefix}lease:g{generation}:{first}-{last}"

    def leases(self) -> str:
        return f"{self.prefix}lease:*"

    def bucket(self, bucket: int) -> str:
        return f"{self.prefix}identify:{bucket}"

    def process(self, generation: int, owner: str) -> str:
        return f"{self.prefix}proc:g{generation}:{owner}"

    def processes(self, generation: int | None = None) -> str:
        return f"{self.prefix}proc:g{generation}:*" if generation else f"{self.prefix}proc:*"

    def seen(self, digest: str) -> str:
        return f"{self.prefix}seen:{digest}"

    def identifies(self, day: str) -> str:
        return f"{self.prefix}identifies:{day}"

    def queries(self) -> str:
        return f"{self.prefix}query"

    def reply(self, request_id: str) -> str:
        return f"{self.prefix}reply:{request_id}"


@attrs.frozen
class Lease:
    """A range lease this process holds: the key and the exact value it wrote."""

    key: str
    value: str
    token: str
    first: int
    last: int


async def acquire(
    redis: Any, key: str, owner: str, generation: int, first: int, last: int, ttl: float
) -> Lease | None:
    """Take the lease if nobody holds it."""
    token = secrets.token_hex(8)
    value = json.dumps(
        {"owner": owner, "token": token, "generation": generation, "range": f"{first}-{last}"},
        sort_keys=True,
    )
    if await redis.set(key, value, nx=True, px=max(1, int(ttl * 1000))):
        return Lease(key, value, token, first, last)
    return None


async def renew(redis: Any, lease: Lease, ttl: float) -> bool:
    """Extend the lease if it is still ours (compare-and-set)."""
    return bool(await redis.eval(_RENEW, 1, lease.key, lease.value, max(1, int(ttl * 1000))))


async def release(redis: Any, lease: Lease) -> bool:
    """Delete the lease if it is still ours, so a standby takes it at once."""
    return bool(await redis.eval(_RELEASE, 1, lease.key, lease.value))


async def hold_bucket(
    redis: Any, key: str, owner: str, window: float, abort: Callable[[], bool] | None = None
) -> float:
    """Wait until this process holds the IDENTIFY bucket ``key`` for ``window``
    seconds (``SET NX PX``; never released early: the window is the limit).
    Returns the seconds waited; ``asyncio.CancelledError`` once ``abort()`` says
    the shards are stopping."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    px = max(1, int(window * 1000))
    while not await redis.set(key, owner, nx=True, px=px):
        if abort is not None and abort():
            raise asyncio.CancelledError
        left = await redis.pttl(key)
        # -2: gone meanwhile; -1: no expiry (never written so): look again soon.
        await asyncio.sleep(max(0.02, min(left / 1000 if left > 0 else 0.05, window)))
    return loop.time() - started
