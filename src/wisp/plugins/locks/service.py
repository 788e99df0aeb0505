"""The ``locks`` service: acquire, extend and release, with waiters queued per
process and counters for ``wisp doctor``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections import deque
from collections.abc import Generator, Sequence
from types import TracebackType
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.locks.api import LockInfo, LockLost, LockStats, LockTimeout
from wisp.plugins.locks.backend import Attempt, Backend
from wisp.plugins.locks.config import LocksConfig
from wisp.plugins.metrics.api import record_outcome

__all__ = ["HeldLock", "LocksService"]

_serial = itertools.count(1)


def _kind(name: str) -> str:
    """A lock name's metric subject: up to its first ``:`` (``guild:42`` ->
    ``guild``), so a lock per guild or user makes one metric, not thousands."""
    return name.split(":", 1)[0]


class _Waiter:
    __slots__ = ("event",)

    def __init__(self) -> None:
        self.event = asyncio.Event()


class HeldLock:
    """A lock this process holds (the :class:`~wisp.plugins.locks.api.Lock` protocol)."""

    def __init__(
        self, service: LocksService, name: str, attempt: Attempt, holder: str, ttl: float,
        valid_until: float,
    ) -> None:  # fmt: skip
        assert attempt.token is not None
        self.service = service
        self.name = name
        self.token: int = attempt.token
        self.holder = holder
        self.ttl = ttl
        self._handle = attempt.handle
        self._valid_until = valid_until
        self._lost = False
        self._released = False
        self._extender: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "lost" if self._lost else "released" if self._released else "held"
        return f"<HeldLock {self.name!r} token={self.token} {state}>"

    @property
    def lost(self) -> bool:
        return self._lost

    @property
    def released(self) -> bool:
        return self._released

    @property
    def remaining(self) -> float:
        if self._lost or self._released:
            return 0.0
        return max(0.0, self._valid_until - asyncio.get_running_loop().time())

    async def extend(self, ttl: float | None = None) -> None:
        ttl = self.ttl if ttl is None else _check_ttl(ttl)
        if self._lost:
            raise LockLost(self.name, self.token, "extend")
        if self._released:
            raise RuntimeError(f"lock {self.name!r} (token {self.token}) is already released")
        start = asyncio.get_running_loop().time()
        ok = await self.service.backend.extend(
            self.name, self.token, self.holder, self._handle, ttl
        )
        if not ok:
            self._mark_lost()
            raise LockLost(self.name, self.token, "extend")
        self.service.stats.extends += 1
        self._valid_until = start + ttl

    async def release(self) -> None:
        if self._released:
            raise RuntimeError(f"lock {self.name!r} (token {self.token}) is already released")
        self._released = True
        await self._stop_extending()
        try:
            ok = await self.service.backend.release(
                self.name, self.token, self.holder, self._handle
            )
        finally:
            self.service._holding.discard(self)
        if not ok:
            self._mark_lost()
            raise LockLost(self.name, self.token, "release")

    async def fence(self, session: Any) -> None:
        from wisp.plugins.locks.fencing import fence_sql

        await fence_sql(session, self.name, self.token)

    async def fenced_set(self, key: str, value: Any, *, px: int | None = None) -> None:
        """Redis backend: ``SET key value`` through this lock's fence (see fencing)."""
        backend = self.service.backend
        if not hasattr(backend, "fenced_set"):
            raise RuntimeError(
                f"fenced_set needs the redis locks backend; this one is {backend.kind!r} "
                "(use lock.fence(session) in a SQL transaction)"
            )
        await backend.fenced_set(self.name, self.token, key, value, px)

    def _mark_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self.service.stats.lost += 1
            record_outcome(self.service.app, "wisp.locks", _kind(self.name), "lost")
            logger.warning("lock {!r} (token {}) was lost", self.name, self.token)

    def _start_extending(self) -> None:
        self._extender = asyncio.create_task(
            self._extend_loop(), name=f"wisp-lock-extend:{self.name}"
        )

    async def _extend_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend()
            except LockLost:
                return
            except Exception as exc:  # a network blip: try again at the next beat
                logger.warning(
                    "lock {!r}: auto-extend failed ({}: {}); retrying",
                    self.name,
                    type(exc).__name__,
                    exc,
                )

    async def _stop_extending(self) -> None:
        task, self._extender = self._extender, None
        await wisp.cancel_and_wait(task)


class _Acquisition:
    """``await locks.acquire(...)`` or ``async with locks.acquire(...) as lock``."""

    def __init__(
        self, service: LocksService, name: str, ttl: float, timeout: float | None, auto: bool
    ) -> None:
        self.service = service
        self.args = (name, ttl, timeout, auto)
        self.lock: HeldLock | None = None

    def __await__(self) -> Generator[Any, None, HeldLock]:
        return self.service._acquire(*self.args).__await__()

    async def __aenter__(self) -> HeldLock:
        self.lock = await self.service._acquire(*self.args)
        return self.lock

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lock = self.lock
        if lock is None or lock.released:
            return
        try:
            await lock.release()
        except LockLost as lost:
            if exc is None:
                raise
            # The body's own error goes on; the loss is logged and noted on it.
            exc.add_note(str(lost))


def _check_ttl(ttl: float) -> float:
    if not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0:
        raise ValueError(f"lock ttl must be a number of seconds greater than 0, not {ttl!r}")
    return float(ttl)


class LocksService(wisp.BaseService):
    """``async with app.services.get("locks").acquire("daily-report", ttl=60) as lock:``."""

    name = "locks"

    def __init__(self, app: wisp.Wisp, config: LocksConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.requires: Sequence[str] = {
            "redis": ("redis",),
            "sql": ("db", "migrations"),
        }.get(config.backend, ())
        self.after = ("redis", "db", "migrations")
        self.stats = LockStats()
        self._backend: Backend | None = None
        self._queues: dict[str, deque[_Waiter]] = {}
        self._holding: set[HeldLock] = set()
        self._holder_base = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError("the locks service is not started")
        return self._backend

    def _choose(self) -> str:
        kind = self.config.backend
        if kind != "auto":
            return kind
        if "redis" in self.app.services:
            return "redis"
        if "db" in self.app.services and self.app.services.get("db").dialect == "postgresql":
            return "sql"
        return "memory"

    async def start(self) -> None:
        kind = self._choose()
        backend: Backend
        if kind == "redis":
            from wisp.plugins.locks.redisbackend import RedisBackend

            backend = RedisBackend(
                self.app.services.get("redis"),
                self.config.prefix,
                has_waiters=lambda name: name in self._queues,
            )
        elif kind == "sql":
            db = self.app.services.get("db")
            if db.dialect != "postgresql":
                raise wisp.ConfigError(
                    [
                        f"[locks] backend = 'sql' needs PostgreSQL, but the database is "
                        f"{db.dialect} ({db.display_url}); use 'memory' for one process "
                        "or 'redis'"
                    ]
                )
            from wisp.plugins.locks.sqlbackend import PostgresBackend

            backend = PostgresBackend(
                db.url, db.config.schema, self.config.prefix, self.config.sql_pool_size
            )
        else:
            from wisp.plugins.locks.memory import MemoryBackend

            backend = MemoryBackend()
        await backend.open(self._wake)
        self._backend = backend
        logger.debug("locks: {} backend", backend.kind)
        await super().start()

    async def stop(self) -> None:
        # Locks still held at shutdown are given back, so that others need not
        # wait for their leases to end.
        for lock in list(self._holding):
            try:
                async with asyncio.timeout(5):
                    await lock.release()
            except Exception as exc:
                logger.warning(
                    "locks: {!r} not released at shutdown ({}: {})", lock, type(exc).__name__, exc
                )
        self._holding.clear()
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        await super().stop()

    async def health(self) -> wisp.Health:
        if self._backend is None:
            return wisp.Health(False, "not started")
        where = await self._backend.ping()
        s = self.stats
        detail = (
            f"{self._backend.kind} ({where}): {s.acquires} acquired, {s.waits} waited "
            f"(total {s.wait_seconds:.3f}s, max {s.max_wait_seconds * 1000:.0f}ms), "
            f"{s.timeouts} timed out, {s.extends} extended, {s.lost} lost, "
            f"{len(self._holding)} held here"
        )
        return wisp.Health(True, detail)

    def acquire(
        self,
        name: str,
        *,
        ttl: float | None = None,
        timeout: float | None = None,
        auto_extend: bool = False,
    ) -> _Acquisition:
        """Wait for the lock ``name`` and hold it for ``ttl`` seconds (``[locks]
        default_ttl``); ``LockTimeout`` after ``timeout`` seconds (None: no limit,
        0: one try).  ``auto_extend`` renews the lease every ``ttl/3`` while held.
        """
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValueError(
                f"lock name must be a non-empty string of at most 200 characters, not {name!r}"
            )
        ttl = self.config.default_ttl if ttl is None else _check_ttl(ttl)
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout < 0
        ):
            raise ValueError(f"lock timeout must be None or seconds >= 0, not {timeout!r}")
        return _Acquisition(self, name, ttl, timeout, auto_extend)

    async def info(self, name: str) -> LockInfo | None:
        return await self.backend.info(name)

    async def held(self) -> list[LockInfo]:
        return await self.backend.held()

    def _wake(self, name: str) -> bool:
        queue = self._queues.get(name)
        if queue:
            queue[0].event.set()
            return True
        return False

    async def _acquire(
        self, name: str, ttl: float, timeout: float | None, auto_extend: bool
    ) -> HeldLock:
        backend = self.backend
        loop = asyncio.get_running_loop()
        holder = f"{self._holder_base}:{next(_serial)}"
        recheck = self.config.recheck_seconds
        start = loop.time()
        deadline = None if timeout is None else start + timeout
        queue = self._queues.setdefault(name, deque())
        me = _Waiter()
        queue.append(me)
        lease: float | None = None
        got: HeldLock | None = None
        waited = queued = False
        try:
            while True:
                pause = recheck
                if queue[0] is me:
                    me.event.clear()  # a release heard from now on wakes us again
                    # How long a backend that waits in the server may: until the
                    # holder's lease ends (then it may take the lock over), within
                    # bounds (a wait cut short loses its place in the server's queue).
                    block = min(lease + 0.002, 10 * recheck) if lease else recheck
                    if deadline is not None:
                        block = max(0.0, min(block, deadline - loop.time()))
                    tried = loop.time()
                    queued = len(queue) > 1
                    attempt = await backend.acquire(name, holder, ttl, block, queued)
                    waited = waited or attempt.waited
                    if attempt.token is not None:
                        got = HeldLock(self, name, attempt, holder, ttl, tried + ttl)
                        break
                    lease = attempt.lease_left
                    pause = min(recheck, attempt.retry_after + 0.001)
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        self.stats.timeouts += 1
                        record_outcome(self.app, "wisp.locks", _kind(name), "timeout")
                        raise LockTimeout(name, float(timeout or 0))
                    pause = min(pause, left)
                waited = True
                if pause > 0:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(pause):
                            await me.event.wait()
        finally:
            was_head = queue[0] is me
            queue.remove(me)
            if not queue:
                if self._queues.get(name) is queue:
                    del self._queues[name]
                if got is None:
                    backend.abandon(name)
            elif was_head and (got is None or backend.waits_in_server):
                # Without the lock, we may have taken a wake-up meant for the next
                # waiter; with it, a backend that waits in the server needs the
                # next waiter there now, not at its next re-check.
                queue[0].event.set()
            elif was_head and not queued:
                # Waiters came while our acquire was on its way: the backend did
                # not learn that this process still waits.
                backend.waiting(name)
        s = self.stats
        s.acquires += 1
        wait = loop.time() - start
        if waited:
            s.waits += 1
            s.wait_seconds += wait
            s.max_wait_seconds = max(s.max_wait_seconds, wait)
        outcome = "waited" if waited else "acquired"
        record_outcome(self.app, "wisp.locks", _kind(name), outcome, wait)
        self._holding.add(got)
        if auto_extend:
            got._start_extending()
        return got
