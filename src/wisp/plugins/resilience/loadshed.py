"""Load shedding: refuse less important work first when the bot is overloaded.

Two signals.  Capacity: at most ``max_in_flight`` calls run at once, and
lower priorities may fill only part of it (``priority_reserve``), so the
important calls always find room.  Health: a background sampler measures
event-loop lag and CPU load; while either is over its limit, only the most
important calls are admitted.  Priorities come from
:func:`wisp.plugins.resilience.api.priority`.  Bundled plugin
``load_shedding``; block it with ``-p no:load_shedding``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import attrs
from loguru import logger

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    EventKind,
    LoadShed,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
    current_priority,
)

__all__ = ["LoadShedConfig", "LoadShedder"]

#: Default shares: background (-1 and below) may fill half of max_in_flight,
#: normal (0) 80%, and priority 1 and above all of it.
DEFAULT_RESERVE: dict[int, float] = {-1: 0.5, 0: 0.8}


WISP_PLUGIN = wisp.PluginMetadata(
    name="load_shedding",
    description="The load shedding pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


def _reserve(value: Mapping[Any, Any]) -> dict[int, float]:
    """Accept TOML tables too, whose keys are strings (``"-1" = 0.5``)."""
    try:
        return {int(k): float(v) for k, v in value.items()}
    except (AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"priority_reserve: expected {{priority: share}}, got {value!r}") from exc


def _check_reserve(instance: Any, attribute: Any, value: dict[int, float]) -> None:
    last = 0.0
    for prio in sorted(value):
        share = value[prio]
        if not 0.0 < share <= 1.0:
            raise ValueError(f"priority_reserve[{prio}] = {share}: a share must be in (0, 1]")
        if share < last:
            raise ValueError(
                f"priority_reserve[{prio}] = {share} is less than a lower priority's share"
            )
        last = share


_positive_or_none = attrs.validators.optional(attrs.validators.gt(0))


@attrs.frozen(kw_only=True)
class LoadShedConfig(PatternConfig):
    #: Calls allowed to run at once, at the highest priorities.
    max_in_flight: int = attrs.field(default=100, validator=attrs.validators.ge(1))
    #: Calls allowed to queue for room; 0 sheds at once.
    max_queue: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Longest a queued call waits; None waits as long as it takes.
    queue_seconds: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: ``{priority: share}``: a call of priority ``p`` may run only while fewer
    #: than ``floor(share * max_in_flight)`` (at least 1) calls are in flight,
    #: ``share`` being that of the lowest listed priority ``>= p``.  Priorities
    #: above every listed one may use all of ``max_in_flight`` and are the only
    #: ones admitted while the bot is overloaded.  Shares may not fall as the
    #: priority rises.
    priority_reserve: dict[int, float] = attrs.field(
        factory=lambda: dict(DEFAULT_RESERVE),
        converter=_reserve,
        validator=_check_reserve,
        hash=False,
    )
    #: Overloaded while the event loop wakes up this many ms late; None: ignore lag.
    max_loop_lag_ms: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: Overloaded while the 1-minute load average per CPU exceeds this; None: ignore.
    max_cpu_load: float | None = attrs.field(default=None, validator=_positive_or_none)
    #: How often the background sampler measures lag and load.
    sample_seconds: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))


# A queued call: sorted by priority (highest first), then arrival.  Its future
# resolves to None (admitted) or to why it was shed.
_Entry = tuple[int, int, asyncio.Future[str | None]]


def _read_load() -> float | None:
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (AttributeError, OSError):  # not on this platform
        return None


class LoadShedder(Pattern):
    """Sheds calls with :class:`LoadShed` (reason ``LOAD_SHED``) by priority.

    A call is admitted while ``in_flight`` is below its priority's cap and,
    when overloaded, only if it is critical.  Otherwise it queues (up to
    ``max_queue``, highest priority first, FIFO within one; a newcomer that
    outranks the last queued call takes its place and that call is shed) or
    is shed.  When overload begins, queued calls below critical are shed too.

    The sampler is an asyncio task, started by :meth:`start` or by the first
    call in a running loop (unless :meth:`stop` was called since), and it
    never runs on the call path: a call only reads what it last measured.
    """

    kind = "load_shedding"
    config_class = LoadShedConfig
    config: LoadShedConfig

    def __init__(self, config: LoadShedConfig | None = None, *, policy: str | None = None) -> None:
        super().__init__(config, policy=policy)
        config = self.config
        reserve = config.priority_reserve
        self._keys = sorted(reserve)
        # (The epsilon keeps 0.29 * 100 at 29, not 28.999...)
        self._key_caps = [max(1, int(reserve[k] * config.max_in_flight + 1e-9)) for k in self._keys]
        #: Calls of this priority and above are critical.
        self.critical = self._keys[-1] + 1 if self._keys else 1
        self._caps: dict[int, int] = {}
        self.in_flight = 0
        self._queue: list[_Entry] = []
        self._seq = 0
        self.overloaded = False
        self.last_lag_ms: float | None = None
        self.last_load: float | None = None
        self.samples = 0
        self._samples_wanted = config.max_loop_lag_ms is not None or config.max_cpu_load is not None
        self._sampler: asyncio.Task[None] | None = None
        self._lazy_start = self._samples_wanted  # start the sampler on the next call
        self.calls = 0
        self.shed = 0

    # -- capacity ---------------------------------------------------------------

    def cap(self, prio: int) -> int:
        """How many calls may be in flight for a call of ``prio`` to be admitted."""
        cap = self._caps.get(prio)
        if cap is None:
            i = bisect.bisect_left(self._keys, prio)
            cap = self._key_caps[i] if i < len(self._keys) else self.config.max_in_flight
            self._caps[prio] = cap
        return cap

    def _admits(self, prio: int) -> bool:
        return self.in_flight < self.cap(prio) and (not self.overloaded or prio >= self.critical)

    def _release(self) -> None:
        self.in_flight -= 1
        if self._queue:
            self._wake()

    def _wake(self) -> None:
        """Admit queued calls, best first, while they fit.

        Caps rise with priority, so once the head does not fit nobody
        behind it does; this is also why a newcomer that fits may pass the
        queue: it must outrank everyone in it.
        """
        queue = self._queue
        while queue:
            negprio, _, fut = queue[0]
            if fut.done():  # cancelled, its task not yet resumed
                del queue[0]
                continue
            if not self._admits(-negprio):
                return
            del queue[0]
            fut.set_result(None)
            self.in_flight += 1

    def _drop(self, entry: _Entry) -> None:
        with contextlib.suppress(ValueError):
            self._queue.remove(entry)

    async def _admit(self, prio: int) -> None:
        """The slow path: queue for room, or shed."""
        if self._admits(prio):
            self.in_flight += 1
            return
        if self.overloaded and prio < self.critical:
            raise self._shed(prio, f"{self.name}: overloaded ({self._load_text()})")
        queue = self._queue
        if len(queue) >= self.config.max_queue:
            if not queue or -queue[-1][0] >= prio:
                raise self._shed(prio, f"{self.name}: {self.in_flight} in flight, queue full")
            victim = queue.pop()[2]  # the newest of the least important
            if not victim.done():
                victim.set_result(f"{self.name}: pushed out of the queue by a higher priority")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()
        self._seq += 1
        entry: _Entry = (-prio, self._seq, fut)
        bisect.insort(queue, entry)
        seconds = self.config.queue_seconds
        timer = None if seconds is None else loop.call_later(seconds, self._expire, entry)
        try:
            verdict = await fut
        except BaseException:
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                self._drop(entry)
            elif fut.result() is None:
                self._release()  # handed room we will not use: pass it on
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if verdict is not None:
            raise self._shed(prio, verdict)

    def _expire(self, entry: _Entry) -> None:
        fut = entry[2]
        if not fut.done():
            self._drop(entry)
            fut.set_result(f"{self.name}: no room within {self.config.queue_seconds}s")

    def _shed(self, prio: int, detail: str) -> BaseException:
        self.shed += 1
        self.emit(
            EventKind.REJECTED,
            reason=Reason.LOAD_SHED,
            metadata={
                "priority": prio,
                "in_flight": self.in_flight,
                "overloaded": self.overloaded,
                "loop_lag_ms": self.last_lag_ms,
                "cpu_load": self.last_load,
            },
        )
        default = LoadShed(pattern=self.name, policy=self.policy, detail=detail)
        return self.failure(Reason.LOAD_SHED, None, default, priority=prio)

    # -- health -----------------------------------------------------------------

    def _load_text(self) -> str:
        lag = "?" if self.last_lag_ms is None else f"{self.last_lag_ms:.0f}"
        load = "?" if self.last_load is None else f"{self.last_load:.2f}"
        return f"loop lag {lag} ms, cpu load {load}"

    def record_sample(self, lag_ms: float, load: float | None) -> None:
        """Take one measurement and enter or leave overload on it.

        Each sample decides alone (no smoothing): the sampling interval is
        the hold time, so a lag spike sheds for one ``sample_seconds``.
        The sampler calls this; tests and custom probes may too.
        """
        config = self.config
        self.samples += 1
        self.last_lag_ms = lag_ms
        self.last_load = load
        over = (config.max_loop_lag_ms is not None and lag_ms > config.max_loop_lag_ms) or (
            config.max_cpu_load is not None and load is not None and load > config.max_cpu_load
        )
        if over == self.overloaded:
            return
        self.overloaded = over
        if self.events.active:
            old, new = ("ready", "overloaded") if over else ("overloaded", "ready")
            self.emit(
                EventKind.STATE_CHANGED,
                old_state=old,
                new_state=new,
                metadata={"loop_lag_ms": lag_ms, "cpu_load": load},
            )
        # Only critical calls queue while overloaded, so leaving overload
        # admits nobody new; entering it sheds what waits below critical.
        if over:
            keep: list[_Entry] = []
            for entry in self._queue:
                if -entry[0] >= self.critical or entry[2].done():
                    keep.append(entry)
                else:
                    entry[2].set_result(f"{self.name}: overloaded ({self._load_text()})")
            self._queue[:] = keep

    async def _sample(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.sample_seconds
        want_load = self.config.max_cpu_load is not None
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = max(0.0, loop.time() - before - interval)
            self.record_sample(lag * 1000.0, _read_load() if want_load else None)

    def _start_sampler(self) -> None:
        self._lazy_start = False
        task = asyncio.get_running_loop().create_task(self._sample(), name=f"{self.name} sampler")
        self._sampler = task
        task.add_done_callback(self._sampler_done)

    def _sampler_done(self, task: asyncio.Task[None]) -> None:
        if self._sampler is task:  # ended with its loop: the next loop starts anew
            self._sampler = None
            self._lazy_start = self._samples_wanted
        if not task.cancelled() and task.exception() is not None:
            logger.opt(exception=task.exception()).error("{} sampler failed", self.name)

    @property
    def sampling(self) -> bool:
        return self._sampler is not None and not self._sampler.done()

    async def start(self, services: Any = None) -> None:
        """Start the sampler now rather than on the first call."""
        task = self._sampler
        if task is not None and task.get_loop() is not asyncio.get_running_loop():
            self._sampler = None  # left behind by a loop that ended without stop()
        if self._samples_wanted and not self.sampling:
            self._start_sampler()

    async def stop(self) -> None:
        """Cancel the sampler; calls no longer start it (until :meth:`start`).

        With no sampler, no measurement can end an overload: clear it.
        """
        self._lazy_start = False
        self.overloaded = False
        task, self._sampler = self._sampler, None
        await wisp.cancel_and_wait(task)

    # -- wrapping ---------------------------------------------------------------

    def bind(self, inner: AsyncFn) -> AsyncFn:
        caps = self._caps
        get_priority = current_priority.get
        admit, release = self._admit, self._release

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            if self._lazy_start:
                self._start_sampler()
            prio = get_priority()
            cap = caps.get(prio)
            if cap is not None and self.in_flight < cap and not self.overloaded:
                self.in_flight += 1
            else:
                await admit(prio)
            try:
                return await inner(*args, **kwargs)
            finally:
                release()

        return call

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._guard()

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        self.calls += 1
        if self._lazy_start:
            self._start_sampler()
        await self._admit(current_priority.get())
        try:
            yield
        finally:
            self._release()

    def status(self) -> dict[str, Any]:
        return {
            "state": "overloaded" if self.overloaded else "ready",
            "in_flight": self.in_flight,
            "queued": len(self._queue),
            "max_in_flight": self.config.max_in_flight,
            "calls": self.calls,
            "shed": self.shed,
            "last_lag_ms": self.last_lag_ms,
            "last_load": self.last_load,
            "sampling": self.sampling,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind(
            "load_shedding",
            LoadShedConfig,
            LoadShedder,
            "shed low-priority calls when capacity or the event loop runs short",
        )
    ]
