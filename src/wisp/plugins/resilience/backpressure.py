"""Backpressure: slow callers down when too much work is in flight.

A gate with hysteresis: it closes when ``high_water`` calls are in flight and
opens again only when they drain to ``low_water``, so it does not flap open
and shut on every call at the edge.  Bundled plugin ``backpressure``; block
it with ``-p no:backpressure``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    EventKind,
    LoadShed,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
)
from wisp.plugins.resilience.bulkhead import SlotGate

__all__ = ["Backpressure", "BackpressureConfig"]

OPEN = "open"
CLOSED = "closed"


WISP_PLUGIN = wisp.PluginMetadata(
    name="backpressure",
    description="The backpressure pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


def _below_high_water(instance: BackpressureConfig, attribute: Any, value: int) -> None:
    if value >= instance.high_water:
        raise ValueError(f"low_water ({value}) must be below high_water ({instance.high_water})")


@attrs.frozen(kw_only=True)
class BackpressureConfig(PatternConfig):
    #: The gate closes when this many calls are in flight.
    high_water: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    #: ... and opens again once they drain to this many (default: half of high_water).
    low_water: int = attrs.field(
        default=attrs.Factory(lambda self: self.high_water // 2, takes_self=True),
        validator=[attrs.validators.ge(0), _below_high_water],
    )
    #: In ``wait`` mode, the longest a call waits for the gate; None waits as long as it takes.
    wait_seconds: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    #: ``wait``: callers queue (FIFO) while the gate is closed; ``reject``: refused at once.
    mode: Literal["wait", "reject"] = attrs.field(
        default="wait", validator=attrs.validators.in_(("wait", "reject"))
    )


class _HysteresisGate(SlotGate):
    """A :class:`SlotGate` whose ``limit`` is ``high`` while open and 0 while closed."""

    __slots__ = ("closed", "high", "low", "on_change")

    def __init__(self, high: int, low: int, on_change: Callable[[str, str], None]) -> None:
        super().__init__(high)
        self.high = high
        self.low = low
        self.closed = False
        self.on_change = on_change

    def try_acquire(self) -> bool:
        if super().try_acquire():
            if self.in_use >= self.high:
                self.close()
            return True
        return False

    def close(self) -> None:
        self.closed = True
        self.limit = 0
        self.on_change(OPEN, CLOSED)

    def release(self) -> None:
        self.in_use -= 1
        if self.closed:
            if self.in_use <= self.low:
                self.closed = False
                self.limit = self.high
                self.on_change(CLOSED, OPEN)
                self.wake()
        elif self.waiting:
            self.wake()

    def wake(self) -> None:
        super().wake()  # admits waiters in FIFO order up to high_water ...
        if not self.closed and self.in_use >= self.high:
            self.close()  # ... and shuts again when they reach it


class Backpressure(Pattern):
    """Holds (``wait``) or refuses (``reject``) calls while the gate is closed.

    Refusals and waits that run out raise :class:`LoadShed` with reason
    ``BACKPRESSURE``.  Each opening and closing emits ``STATE_CHANGED``
    (``"open"`` / ``"closed"``).
    """

    kind = "backpressure"
    config_class = BackpressureConfig
    config: BackpressureConfig

    def __init__(
        self, config: BackpressureConfig | None = None, *, policy: str | None = None
    ) -> None:
        super().__init__(config, policy=policy)
        self.gate = _HysteresisGate(self.config.high_water, self.config.low_water, self._changed)
        self.calls = 0
        self.rejected = 0
        self.closings = 0

    @property
    def state(self) -> str:
        return CLOSED if self.gate.closed else OPEN

    def _changed(self, old: str, new: str) -> None:
        if new == CLOSED:
            self.closings += 1
        self.emit(
            EventKind.STATE_CHANGED,
            old_state=old,
            new_state=new,
            metadata={"in_flight": self.gate.in_use, "waiting": self.gate.waiting},
        )

    async def _acquire(self) -> None:
        gate, config = self.gate, self.config
        if gate.try_acquire():
            return
        if config.mode == "reject":
            raise self._rejected(
                f"{self.name}: gate closed with {gate.in_use} call(s) in flight", timed_out=False
            )
        if not await gate.wait(config.wait_seconds):
            raise self._rejected(
                f"{self.name}: gate stayed closed for {config.wait_seconds}s", timed_out=True
            )

    def _rejected(self, detail: str, *, timed_out: bool) -> BaseException:
        self.rejected += 1
        gate = self.gate
        self.emit(
            EventKind.REJECTED,
            reason=Reason.BACKPRESSURE,
            metadata={"in_flight": gate.in_use, "waiting": gate.waiting, "timed_out": timed_out},
        )
        default = LoadShed(
            pattern=self.name, policy=self.policy, reason=Reason.BACKPRESSURE, detail=detail
        )
        return self.failure(Reason.BACKPRESSURE, None, default, timed_out=timed_out)

    def bind(self, inner: AsyncFn) -> AsyncFn:
        gate = self.gate
        acquire = self._acquire
        high = self.config.high_water

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if gate.in_use < gate.limit and not gate.waiting:  # try_acquire, inlined
                gate.in_use += 1
                if gate.in_use >= high:
                    gate.close()
            else:
                await acquire()
            try:
                return await inner(*args, **kwargs)
            finally:
                gate.release()

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
        gate, config = self.gate, self.config
        return {
            "state": self.state,
            "in_flight": gate.in_use,
            "waiting": gate.waiting,
            "high_water": config.high_water,
            "low_water": config.low_water,
            "mode": config.mode,
            "calls": self.calls,
            "rejected": self.rejected,
            "closings": self.closings,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind(
            "backpressure",
            BackpressureConfig,
            Backpressure,
            "hold or refuse calls while too many are in flight (with hysteresis)",
        )
    ]
