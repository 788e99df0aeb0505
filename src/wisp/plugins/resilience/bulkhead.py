"""Bulkhead: at most ``max_concurrent`` calls at once, so one slow dependency
cannot tie up every task the bot has.

Bundled plugin ``bulkhead``; block it with ``-p no:bulkhead``.  Its
:class:`SlotGate` (a FIFO counting gate that survives cancellation) is also
what the backpressure and adaptive patterns queue on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    BulkheadFull,
    EventKind,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
)

__all__ = ["Bulkhead", "BulkheadConfig", "SlotGate"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="bulkhead",
    description="The bulkheads pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


class SlotGate:
    """A FIFO counting gate: ``in_use`` slots of ``limit`` taken, ``waiting`` queued.

    Written for cancellation: a slot is handed to the first live waiter
    directly on release (no barging, no lost wake-up), a waiter cancelled in
    the queue just leaves it, and one cancelled after being handed a slot but
    before it resumed passes the slot on.  ``limit`` may change at any time;
    call :meth:`wake` after raising it.  Subclasses may override
    :meth:`release` and :meth:`wake`; the wait path calls them.

    ``waiting`` counts queued callers; one cancelled in the queue is counted
    until its task resumes (the same loop iteration, normally).
    """

    __slots__ = ("_waiters", "in_use", "limit", "waiting")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self.waiting = 0
        # Futures resolve to True (the slot is yours) or False (timed out).
        # Done futures are skipped lazily, and dropped when nobody waits.
        self._waiters: deque[asyncio.Future[bool]] = deque()

    def try_acquire(self) -> bool:
        """Take a free slot unless someone is queued for it (FIFO)."""
        if self.in_use < self.limit and not self.waiting:
            self.in_use += 1
            return True
        return False

    def release(self) -> None:
        """Give a slot back: to the first live waiter, else to the pool."""
        self.in_use -= 1
        if self.waiting:
            self.wake()

    def wake(self) -> None:
        """Hand free slots to live waiters, oldest first."""
        waiters = self._waiters
        while self.in_use < self.limit and waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(True)
                self.in_use += 1
                self.waiting -= 1

    async def wait(self, timeout: float | None) -> bool:
        """Queue for a slot: True once it is ours, False if ``timeout`` ran out first."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(fut)
        self.waiting += 1
        # A slot may be free while a cancelled waiter still counts as waiting.
        self.wake()
        timer = None if timeout is None else loop.call_later(timeout, self._expire, fut)
        try:
            return await fut
        except BaseException:
            if not fut.done():  # something other than cancel() interrupted us
                fut.cancel()
            if fut.cancelled():
                self._left()
            elif fut.result():
                self.release()  # handed a slot we will not use: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _expire(self, fut: asyncio.Future[bool]) -> None:
        if not fut.done():
            fut.set_result(False)
            self._left()

    def _left(self) -> None:
        self.waiting -= 1
        if not self.waiting:
            self._waiters.clear()  # every future left in it is done


@attrs.frozen(kw_only=True)
class BulkheadConfig(PatternConfig):
    #: Calls allowed to run at once.
    max_concurrent: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    #: Calls allowed to queue for a slot when all are taken; 0 rejects at once.
    max_waiting: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Longest a queued call waits for a slot; None waits as long as it takes.
    wait_seconds: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )


class Bulkhead(Pattern):
    """Raises :class:`BulkheadFull` when no slot is free and none comes in time."""

    kind = "bulkhead"
    config_class = BulkheadConfig
    config: BulkheadConfig

    def __init__(self, config: BulkheadConfig | None = None, *, policy: str | None = None) -> None:
        super().__init__(config, policy=policy)
        self.gate = SlotGate(self.config.max_concurrent)
        self.calls = 0
        self.rejected = 0

    async def _acquire(self) -> None:
        """The slow path: queue for a slot, or raise when we may not."""
        gate, config = self.gate, self.config
        if gate.try_acquire():
            return
        # With a slot free, wait() hands it over at once (a cancelled waiter
        # may still be counted), so only a full gate counts the queue.
        if gate.in_use >= gate.limit and gate.waiting >= config.max_waiting:
            detail = (
                f"{self.name}: all {config.max_concurrent} slots busy "
                f"and {gate.waiting} call(s) waiting"
            )
            raise self._rejected(detail, timed_out=False)
        if not await gate.wait(config.wait_seconds):
            detail = f"{self.name}: no slot free within {config.wait_seconds}s"
            raise self._rejected(detail, timed_out=True)

    def _rejected(self, detail: str, *, timed_out: bool) -> BaseException:
        self.rejected += 1
        gate = self.gate
        self.emit(
            EventKind.REJECTED,
            reason=Reason.BULKHEAD_FULL,
            metadata={"in_use": gate.in_use, "waiting": gate.waiting, "timed_out": timed_out},
        )
        default = BulkheadFull(pattern=self.name, policy=self.policy, detail=detail)
        return self.failure(Reason.BULKHEAD_FULL, None, default, timed_out=timed_out)

    def bind(self, inner: AsyncFn) -> AsyncFn:
        gate = self.gate
        acquire = self._acquire

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if gate.in_use < gate.limit and not gate.waiting:  # try_acquire, inlined
                gate.in_use += 1
            else:
                await acquire()
            try:
                return await inner(*args, **kwargs)
            finally:
                gate.in_use -= 1  # release, inlined
                if gate.waiting:
                    gate.wake()

        return call

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._guard()

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        self.calls += 1
        await self._acquire()
        try:
            yield
        finally:
            self.gate.release()

    def status(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "state": "full" if gate.in_use >= gate.limit else "ready",
            "in_use": gate.in_use,
            "waiting": gate.waiting,
            "max_concurrent": self.config.max_concurrent,
            "calls": self.calls,
            "rejected": self.rejected,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [PatternKind("bulkhead", BulkheadConfig, Bulkhead, "limit how many calls run at once")]
