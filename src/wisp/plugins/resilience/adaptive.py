"""Adaptive concurrency: a limit on calls in flight that finds itself (AIMD).

A fixed bulkhead needs someone to guess the right size; this one grows the
limit while calls come back fast and cuts it when they fail or slow down,
the way TCP finds a link's capacity.  Bundled plugin ``adaptive``; block it
with ``-p no:adaptive``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

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

__all__ = ["AdaptiveConfig", "AdaptiveLimiter"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="adaptive",
    description="The adaptive concurrency pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


def _limits_consistent(instance: AdaptiveConfig, attribute: Any, value: int) -> None:
    if not instance.min_limit <= instance.max_limit:
        raise ValueError(
            f"min_limit ({instance.min_limit}) exceeds max_limit ({instance.max_limit})"
        )
    if not instance.min_limit <= instance.initial_limit <= instance.max_limit:
        raise ValueError(
            f"initial_limit ({instance.initial_limit}) is outside "
            f"[{instance.min_limit}, {instance.max_limit}]"
        )


@attrs.frozen(kw_only=True)
class AdaptiveConfig(PatternConfig):
    #: Concurrency limit to start from.
    initial_limit: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    #: The limit never drops below this ...
    min_limit: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    #: ... nor grows above this.
    max_limit: int = attrs.field(
        default=200, validator=[attrs.validators.ge(1), _limits_consistent]
    )
    #: A success slower than this counts as a sign of overload.
    latency_target_seconds: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    #: Added to the limit per limit's worth of fast successes.
    increase: float = attrs.field(default=1.0, validator=attrs.validators.gt(0))
    #: The limit is multiplied by this on a failure or slow call.
    decrease: float = attrs.field(
        default=0.5, validator=[attrs.validators.gt(0), attrs.validators.lt(1)]
    )
    #: Calls allowed to queue when the limit is reached; 0 rejects at once.
    max_waiting: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Longest a queued call waits; None waits as long as it takes.
    wait_seconds: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )


class AdaptiveLimiter(Pattern):
    """Admits up to ``limit`` calls at once and tunes ``limit`` from their outcome.

    Each fast success adds ``increase / limit`` (so a limit's worth of them
    adds ``increase``); a failure (``is_failure``) or a success slower than
    ``latency_target_seconds`` multiplies it by ``decrease``.  The cut
    happens at most once per *round*: calls admitted before the last cut
    report the congestion that caused it, so their failures do not cut again
    (like TCP, which halves once per window, not once per lost packet).
    Errors that are not failures and cancellations leave the limit alone.
    Calls over the limit queue FIFO (``max_waiting``, ``wait_seconds``) or
    are refused with :class:`LoadShed` (reason ``CONCURRENCY_LIMIT``).
    """

    kind = "adaptive"
    config_class = AdaptiveConfig
    config: AdaptiveConfig

    def __init__(
        self,
        config: AdaptiveConfig | None = None,
        *,
        policy: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, policy=policy)
        self.clock = clock
        self._limit = float(self.config.initial_limit)  # the integer part applies
        self.gate = SlotGate(self.config.initial_limit)
        self._started = 0  # calls admitted so far: each call's sequence number
        self._round = 0  # calls numbered below this were admitted before the last cut
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.slow = 0
        self.rejected = 0

    @property
    def limit(self) -> int:
        """The concurrency limit in force now."""
        return self.gate.limit

    # -- admission --------------------------------------------------------------

    async def _acquire(self) -> None:
        gate, config = self.gate, self.config
        if gate.try_acquire():
            return
        if gate.in_use >= gate.limit and gate.waiting >= config.max_waiting:
            raise self._rejected(
                f"{self.name}: {gate.in_use} call(s) in flight at limit {gate.limit}",
                timed_out=False,
            )
        if not await gate.wait(config.wait_seconds):
            raise self._rejected(
                f"{self.name}: no room under limit {gate.limit} within {config.wait_seconds}s",
                timed_out=True,
            )

    def _rejected(self, detail: str, *, timed_out: bool) -> BaseException:
        self.rejected += 1
        gate = self.gate
        self.emit(
            EventKind.REJECTED,
            reason=Reason.CONCURRENCY_LIMIT,
            metadata={"limit": gate.limit, "in_flight": gate.in_use, "timed_out": timed_out},
        )
        default = LoadShed(
            pattern=self.name, policy=self.policy, reason=Reason.CONCURRENCY_LIMIT, detail=detail
        )
        return self.failure(Reason.CONCURRENCY_LIMIT, None, default, limit=gate.limit)

    # -- feedback ---------------------------------------------------------------

    def _ended(self, seq: int, start: float, exc: BaseException | None) -> None:
        """Learn from one call's outcome, then give its slot back."""
        try:
            if exc is None:
                self.successes += 1
                if self.clock() - start > self.config.latency_target_seconds:
                    self.slow += 1
                    self._decrease(seq)
                else:
                    self._increase()
            elif self.is_failure(exc):
                self.failures += 1
                self._decrease(seq)
        finally:
            # After the new limit is set, so a cut limit admits nobody new.
            self.gate.release()

    def _increase(self) -> None:
        limit = self._limit
        if limit < self.config.max_limit:
            self._limit = min(float(self.config.max_limit), limit + self.config.increase / limit)
            self._apply()

    def _decrease(self, seq: int) -> None:
        if seq < self._round:
            return  # admitted before the last cut: same congestion, already answered
        self._round = self._started
        self._limit = max(float(self.config.min_limit), self._limit * self.config.decrease)
        self._apply()

    def _apply(self) -> None:
        gate = self.gate
        old, new = gate.limit, int(self._limit)  # _limit is within [min, max]
        if new == old:
            return
        gate.limit = new
        if new > old and gate.waiting:
            gate.wake()
        self.emit(
            EventKind.LIMIT_CHANGED,
            old_state=old,
            new_state=new,
            metadata={"old": old, "new": new, "in_flight": gate.in_use},
        )

    # -- wrapping ---------------------------------------------------------------

    def bind(self, inner: AsyncFn) -> AsyncFn:
        gate = self.gate
        acquire, ended, clock = self._acquire, self._ended, self.clock

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if gate.in_use < gate.limit and not gate.waiting:
                gate.in_use += 1
            else:
                await acquire()
            seq = self._started
            self._started = seq + 1
            start = clock()
            try:
                result = await inner(*args, **kwargs)
            except BaseException as exc:
                ended(seq, start, exc)
                raise
            ended(seq, start, None)
            return result

        return call

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._guard()

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        self.calls += 1
        await self._acquire()
        seq = self._started
        self._started = seq + 1
        start = self.clock()
        try:
            yield
        except BaseException as exc:
            self._ended(seq, start, exc)
            raise
        self._ended(seq, start, None)

    def status(self) -> dict[str, Any]:
        gate = self.gate
        return {
            "state": "limited" if gate.in_use >= gate.limit else "ready",
            "limit": gate.limit,
            "in_flight": gate.in_use,
            "waiting": gate.waiting,
            "calls": self.calls,
            "successes": self.successes,
            "failures": self.failures,
            "slow": self.slow,
            "rejected": self.rejected,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind(
            "adaptive",
            AdaptiveConfig,
            AdaptiveLimiter,
            "a concurrency limit that adapts to latency and failures (AIMD)",
        )
    ]
