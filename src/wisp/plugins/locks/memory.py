"""In-process locks (one asyncio event loop): for a bot that runs as one process.

Tokens come from one counter that starts at the wall clock in microseconds,
so they keep growing across restarts (given a clock that does not step back)
and a SQL fence written before a restart does not refuse the next run.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import attrs

from wisp.plugins.locks.api import LockInfo
from wisp.plugins.locks.backend import Attempt, Wake

__all__ = ["MemoryBackend"]


@attrs.define
class _Held:
    token: int
    holder: str
    expires: float  # loop time


class MemoryBackend:
    kind = "memory"
    waits_in_server = False

    def __init__(self) -> None:
        self._held: dict[str, _Held] = {}
        self._last = 0
        self._wake: Wake = lambda name: False

    async def open(self, wake: Wake) -> None:
        self._wake = wake

    def abandon(self, name: str) -> None:
        return None

    def waiting(self, name: str) -> None:
        return None

    async def close(self) -> None:
        self._held.clear()

    def _now(self) -> float:
        return asyncio.get_running_loop().time()

    def _current(self, name: str) -> _Held | None:
        held = self._held.get(name)
        if held is not None and held.expires <= self._now():
            del self._held[name]
            return None
        return held

    async def acquire(
        self, name: str, holder: str, ttl: float, block: float, queued: bool = False
    ) -> Attempt:
        held = self._current(name)
        if held is not None:
            left = held.expires - self._now()
            return Attempt(None, retry_after=left, lease_left=left)
        self._last = max(self._last + 1, time.time_ns() // 1000)
        self._held[name] = _Held(self._last, holder, self._now() + ttl)
        return Attempt(self._last)

    async def extend(self, name: str, token: int, holder: str, handle: Any, ttl: float) -> bool:
        held = self._current(name)
        if held is None or held.token != token:
            return False
        held.expires = self._now() + ttl
        return True

    async def release(self, name: str, token: int, holder: str, handle: Any) -> bool:
        held = self._current(name)
        if held is None or held.token != token:
            return False
        del self._held[name]
        self._wake(name)
        return True

    async def info(self, name: str) -> LockInfo | None:
        held = self._current(name)
        if held is None:
            return None
        return LockInfo(name, held.token, held.holder, held.expires - self._now())

    async def held(self) -> list[LockInfo]:
        out = [await self.info(name) for name in sorted(self._held)]
        return [i for i in out if i is not None]

    async def ping(self) -> str:
        return "in-process"
