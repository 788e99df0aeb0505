"""Concurrency limits under the resilience patterns: bulkhead, load shedding,
backpressure and the adaptive limiter, with cancellation thrown at them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from wisp.plugins.resilience import adaptive, backpressure, bulkhead, loadshed
from wisp.plugins.resilience.adaptive import AdaptiveConfig, AdaptiveLimiter
from wisp.plugins.resilience.api import (
    BulkheadFull,
    EventKind,
    LoadShed,
    Pattern,
    Policy,
    Reason,
    ResilienceEvent,
    priority,
)
from wisp.plugins.resilience.backpressure import Backpressure, BackpressureConfig
from wisp.plugins.resilience.bulkhead import Bulkhead, BulkheadConfig, SlotGate
from wisp.plugins.resilience.loadshed import LoadShedConfig, LoadShedder

pytestmark = pytest.mark.needs_plugin("resilience")

# -- helpers ------------------------------------------------------------------------


async def settle(rounds: int = 5) -> None:
    """Let every ready task run until it blocks again."""
    for _ in range(rounds):
        await asyncio.sleep(0)


async def eventually(check: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait for a background task to make ``check`` true (bounded, never a speed test)."""
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "condition never became true"
        await asyncio.sleep(0.005)


class Work:
    """An inner call that holds its slot until released, recording who ran."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.entered: list[Any] = []
        self.inside: set[asyncio.Task[Any]] = set()
        self.gates: dict[Any, asyncio.Event] = {}
        self.everyone = asyncio.Event()

    def release(self, tag: Any) -> None:
        self.gates.setdefault(tag, asyncio.Event()).set()

    async def __call__(self, tag: Any = None, fail: BaseException | None = None) -> Any:
        task = asyncio.current_task()
        assert task is not None
        self.running += 1
        self.peak = max(self.peak, self.running)
        self.entered.append(tag)
        self.inside.add(task)
        try:
            gate = self.gates.setdefault(tag, asyncio.Event())
            waits = [
                asyncio.ensure_future(gate.wait()),
                asyncio.ensure_future(self.everyone.wait()),
            ]
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
            if fail is not None:
                raise fail
            return tag
        finally:
            self.running -= 1
            self.inside.discard(task)


def start(call: Callable[..., Awaitable[Any]], *args: Any) -> asyncio.Task[Any]:
    async def run() -> Any:
        return await call(*args)

    return asyncio.ensure_future(run())


def listen(pattern: Pattern) -> list[ResilienceEvent]:
    events: list[ResilienceEvent] = []
    pattern.events.add_listener(events.append)
    return events


async def trivial() -> int:
    return 1


def completes_without_suspending(coro: Any) -> bool:
    """True when the coroutine finishes on its first step (it never awaited the loop)."""
    try:
        coro.send(None)
    except StopIteration:
        return True
    coro.close()
    return False


# -- bulkhead -----------------------------------------------------------------------


async def test_bulkhead_admits_its_slots_queues_fifo_and_rejects_the_rest() -> None:
    b = Bulkhead(BulkheadConfig(max_concurrent=2, max_waiting=2))
    events = listen(b)
    work = Work()
    call = b.bind(work)
    tasks = [start(call, i) for i in range(4)]
    await settle()
    assert work.running == 2 and work.entered == [0, 1]
    assert b.status() == {
        "state": "full",
        "in_use": 2,
        "waiting": 2,
        "max_concurrent": 2,
        "calls": 4,
        "rejected": 0,
    }
    with pytest.raises(BulkheadFull) as info:
        await call(99)
    assert info.value.reason is Reason.BULKHEAD_FULL and info.value.pattern == "bulkhead"
    assert b.rejected == 1
    await settle()
    assert [(e.kind, e.reason) for e in events] == [(EventKind.REJECTED, Reason.BULKHEAD_FULL)]
    work.release(1)
    await settle()
    assert work.entered == [0, 1, 2]  # the oldest waiter got the freed slot
    for i in (0, 2, 3):
        work.release(i)
    assert await asyncio.gather(*tasks) == [0, 1, 2, 3]
    assert work.peak == 2
    assert b.status()["in_use"] == 0 and b.status()["waiting"] == 0
    assert b.status()["state"] == "ready"


async def test_bulkhead_wait_seconds_runs_out() -> None:
    b = Bulkhead(BulkheadConfig(max_concurrent=1, max_waiting=5, wait_seconds=0.05))
    work = Work()
    call = b.bind(work)
    holder = start(call, "held")
    await settle()
    with pytest.raises(BulkheadFull, match=r"within 0\.05s"):
        await call("late")
    assert b.status()["waiting"] == 0 and b.status()["in_use"] == 1
    work.release("held")
    assert await holder == "held"
    assert b.status()["in_use"] == 0
    assert await call_released(b, work, "after") == "after"


async def call_released(b: Pattern, work: Work, tag: Any) -> Any:
    work.release(tag)
    return await b.bind(work)(tag)


async def test_uncontended_calls_never_suspend() -> None:
    """A free slot is taken without awaiting anything, in every gate."""
    patterns: list[Pattern] = [
        Bulkhead(),
        LoadShedder(),
        Backpressure(BackpressureConfig(high_water=2)),
        AdaptiveLimiter(),
    ]
    for pattern in patterns:
        call = pattern.bind(trivial)
        assert completes_without_suspending(call()), pattern.kind
        assert completes_without_suspending(call()), pattern.kind


async def test_ten_thousand_cancelled_callers_leak_no_slot() -> None:
    """Callers cancelled while waiting, while holding a slot, and right after a
    slot was handed to them (before they resumed) leave the bulkhead exact."""
    b = Bulkhead(BulkheadConfig(max_concurrent=2, max_waiting=1_000_000))
    work = Work()
    call = b.bind(work)
    rng = random.Random(20240611)
    tasks = [start(call, i) for i in range(10_000)]
    await settle()
    assert work.running == 2 and b.status()["waiting"] == 9_998

    # Cancelled while waiting: a third of the queue, scattered.
    for task in rng.sample(tasks[2:], 3_333):
        task.cancel()
    await settle()
    assert work.running == 2 and b.status()["in_use"] == 2
    assert b.status()["waiting"] == 9_998 - 3_333

    first = 0  # every task before this one has finished

    def queue_head(n: int) -> list[asyncio.Task[Any]]:
        """The ``n`` oldest unfinished callers: FIFO makes them the slot holders."""
        nonlocal first
        while first < len(tasks) and tasks[first].done():
            first += 1
        head: list[asyncio.Task[Any]] = []
        for task in tasks[first:]:
            if len(head) == n:
                break
            if not task.done():
                head.append(task)
        return head

    handed_cancelled = 0
    while queue_head(1):
        assert set(queue_head(2)) == work.inside  # FIFO: the oldest two hold the slots
        for task in list(work.inside):  # cancelled while holding a slot
            task.cancel()
        if rng.random() < 0.3:  # and a few waiters in the same step
            for task in rng.sample(tasks, 5):
                task.cancel()
        await asyncio.sleep(0)  # the holders' `finally` hands their slots on
        while rng.random() < 0.6:
            # Handed a slot but not resumed: the slots are taken, nobody runs.
            handed = queue_head(2)
            if not handed:
                break
            assert work.running == 0 and b.status()["in_use"] == len(handed)
            for task in handed:
                task.cancel()
                handed_cancelled += 1
            await asyncio.sleep(0)  # they resume cancelled and pass the slots on
        await settle()
        assert work.running == b.status()["in_use"] <= 2

    assert handed_cancelled > 500  # the path under test really ran
    assert all(t.cancelled() for t in tasks)  # nobody was refused or failed
    assert b.status()["in_use"] == 0 and b.status()["waiting"] == 0
    assert b.status()["rejected"] == 0 and work.peak == 2

    # Still exactly two at a time afterwards.
    after = [start(call, f"after-{i}") for i in range(5)]
    await settle()
    assert work.running == 2
    assert b.status()["in_use"] == 2 and b.status()["waiting"] == 3
    work.everyone.set()
    await asyncio.gather(*after)
    assert work.peak == 2
    assert b.status()["in_use"] == 0 and b.status()["waiting"] == 0


async def test_slot_gate_skips_waiters_that_timed_out_or_were_cancelled() -> None:
    gate = SlotGate(1)
    assert gate.try_acquire()
    expiring = asyncio.ensure_future(gate.wait(0.01))
    patient = asyncio.ensure_future(gate.wait(None))
    assert await expiring is False
    assert gate.waiting == 1
    gate.release()  # past the expired waiter, to the patient one
    assert await patient is True
    assert gate.in_use == 1 and gate.waiting == 0

    # A waiter cancelled but not yet resumed still counts as waiting; a slot
    # freed meanwhile must still go to the next caller at once.
    cancelled = asyncio.ensure_future(gate.wait(None))
    await settle()
    cancelled.cancel()
    gate.release()
    assert gate.in_use == 0 and gate.waiting == 1
    assert completes_without_suspending(gate.wait(None))
    await settle()
    assert cancelled.cancelled()
    assert gate.in_use == 1 and gate.waiting == 0


async def test_guard_releases_on_exceptions_and_cancellation() -> None:
    b = Bulkhead(BulkheadConfig(max_concurrent=1, max_waiting=1))
    seen: list[int] = []

    async def failing_block(cm: contextlib.AbstractAsyncContextManager[Any]) -> None:
        async with cm:
            seen.append(b.status()["in_use"])
            raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await failing_block(b.guard())
    assert seen == [1]
    assert b.status()["in_use"] == 0

    entered = asyncio.Event()

    async def hold() -> None:
        async with b.guard():
            entered.set()
            await asyncio.Event().wait()

    holder = asyncio.ensure_future(hold())
    await entered.wait()
    waiter = asyncio.ensure_future(hold())
    await settle()
    assert b.status()["waiting"] == 1
    waiter.cancel()  # cancelled in the queue
    await settle()
    assert b.status()["waiting"] == 0 and b.status()["in_use"] == 1
    holder.cancel()  # cancelled inside the block
    await settle()
    assert holder.cancelled() and waiter.cancelled()
    assert b.status()["in_use"] == 0

    policy = Policy("p", [b])
    with pytest.raises(ValueError, match="boom"):
        await failing_block(policy)
    assert seen == [1, 1]
    assert b.status()["in_use"] == 0


# -- load shedding ------------------------------------------------------------------


async def test_load_shedder_sheds_normal_calls_before_important_ones() -> None:
    shedder = LoadShedder(LoadShedConfig(max_in_flight=10, priority_reserve={0: 0.8}))
    events = listen(shedder)
    work = Work()
    call = shedder.bind(work)
    normal = [start(call, i) for i in range(8)]
    await settle()
    assert work.running == 8
    with pytest.raises(LoadShed) as info:
        await call("ninth")  # normal calls may fill 80% only
    assert info.value.reason is Reason.LOAD_SHED
    with priority(1):
        high = [start(call, f"high-{i}") for i in range(2)]
    await settle()
    assert work.running == 10  # the reserve is theirs
    with priority(1), pytest.raises(LoadShed):
        await call("eleventh")
    assert shedder.status()["shed"] == 2 and shedder.status()["in_flight"] == 10
    await settle()
    assert [e.metadata["priority"] for e in events if e.kind is EventKind.REJECTED] == [0, 1]
    work.everyone.set()
    await asyncio.gather(*normal, *high)
    assert shedder.status()["in_flight"] == 0


async def test_default_reserve_gives_background_work_half() -> None:
    shedder = LoadShedder(LoadShedConfig(max_in_flight=10))
    work = Work()
    call = shedder.bind(work)
    with priority(-5):
        background = [start(call, i) for i in range(5)]
    await settle()
    with priority(-1), pytest.raises(LoadShed):
        await call("sixth background")
    normal = [start(call, f"n{i}") for i in range(3)]
    await settle()
    assert work.running == 8
    with pytest.raises(LoadShed):
        await call("ninth")
    with priority(3):
        critical = [start(call, f"c{i}") for i in range(2)]
    await settle()
    assert work.running == 10
    work.everyone.set()
    await asyncio.gather(*background, *normal, *critical)


async def test_load_shedder_queue_is_bounded_ordered_and_timed() -> None:
    shedder = LoadShedder(
        LoadShedConfig(max_in_flight=2, max_queue=2, priority_reserve={}, queue_seconds=None)
    )
    work = Work()
    call = shedder.bind(work)
    running = [start(call, i) for i in range(2)]
    queued = [start(call, i) for i in (2, 3)]
    await settle()
    assert shedder.status()["queued"] == 2
    with pytest.raises(LoadShed, match="queue full"):
        await call("fifth")
    with priority(2):
        vip = start(call, "vip")  # outranks the queue: pushes the newest out
    await settle()
    with pytest.raises(LoadShed, match="pushed out"):
        await queued[1]
    work.release(0)
    await settle()
    assert work.entered == [0, 1, "vip"]  # the highest priority goes first
    work.release(1)
    await settle()
    assert work.entered == [0, 1, "vip", 2]
    work.everyone.set()
    await asyncio.gather(*running, queued[0], vip)
    assert shedder.status()["in_flight"] == 0 and shedder.status()["queued"] == 0

    timed = LoadShedder(
        LoadShedConfig(max_in_flight=1, max_queue=1, priority_reserve={}, queue_seconds=0.05)
    )
    work2 = Work()
    holder = start(timed.bind(work2), "held")
    await settle()
    with pytest.raises(LoadShed, match="no room within"):
        await timed.bind(work2)("late")
    assert timed.status()["queued"] == 0
    work2.everyone.set()
    await holder
    assert timed.status()["in_flight"] == 0


async def test_cancelled_queued_calls_leave_the_load_shedder_exact() -> None:
    shedder = LoadShedder(LoadShedConfig(max_in_flight=1, max_queue=100, priority_reserve={}))
    work = Work()
    call = shedder.bind(work)
    tasks = [start(call, i) for i in range(50)]
    await settle()
    for task in tasks[1::2]:
        task.cancel()
    await settle()
    assert shedder.status()["queued"] == 24  # the cancelled ones left the queue
    tasks[0].cancel()  # the holder: its slot goes to the next live waiter
    await asyncio.sleep(0)
    tasks[2].cancel()  # handed the slot, not resumed yet: passes it on
    await settle()
    assert work.entered == [0, 4]
    work.everyone.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert shedder.status()["in_flight"] == 0 and shedder.status()["queued"] == 0
    assert await call_released(shedder, work, "after") == "after"


async def test_a_lagging_loop_sheds_low_priority_work() -> None:
    shedder = LoadShedder(
        LoadShedConfig(max_in_flight=100, max_loop_lag_ms=100, sample_seconds=0.2)
    )
    events = listen(shedder)
    call = shedder.bind(trivial)
    await shedder.start()
    await asyncio.sleep(0)  # the sampler is now asleep, timing its wake-up
    time.sleep(0.6)  # noqa: ASYNC251 - block the loop on purpose
    await eventually(lambda: shedder.samples >= 1)
    lag = shedder.status()["last_lag_ms"]
    assert lag >= 250  # blocked 600 ms against a 200 ms sleep
    assert shedder.overloaded and shedder.status()["state"] == "overloaded"
    with pytest.raises(LoadShed, match="overloaded"):
        await call()
    with priority(-1), pytest.raises(LoadShed):
        await call()
    with priority(1):
        assert await call() == 1  # above every reserve: still admitted
    await eventually(lambda: not shedder.overloaded)  # the next sample is on time
    assert await call() == 1
    await settle()
    changes = [(e.old_state, e.new_state) for e in events if e.kind is EventKind.STATE_CHANGED]
    assert changes == [("ready", "overloaded"), ("overloaded", "ready")]
    await shedder.stop()


async def test_cpu_load_over_the_limit_sheds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (64.0, 0.0, 0.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    shedder = LoadShedder(LoadShedConfig(max_cpu_load=2.0, sample_seconds=0.01))
    call = shedder.bind(trivial)
    assert await call() == 1  # the first call starts the sampler
    await eventually(lambda: shedder.overloaded)
    assert shedder.status()["last_load"] == 8.0
    with pytest.raises(LoadShed):
        await call()
    await shedder.stop()


async def test_overload_sheds_queued_calls_below_critical() -> None:
    shedder = LoadShedder(
        LoadShedConfig(max_in_flight=1, max_queue=5, priority_reserve={0: 1.0}, max_cpu_load=1.0)
    )
    work = Work()
    call = shedder.bind(work)
    await shedder.stop()  # drive the samples by hand below
    holder = start(call, "held")
    waiting = start(call, "normal")
    with priority(1):
        vip = start(call, "vip")
    await settle()
    shedder.record_sample(0.0, 5.0)
    with pytest.raises(LoadShed, match="overloaded"):
        await waiting
    assert shedder.status()["queued"] == 1
    work.everyone.set()
    assert await holder == "held" and await vip == "vip"
    assert not shedder.status()["sampling"]  # calls after stop() do not start it


async def test_sampler_stays_off_the_call_path_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []

    def read_load() -> float:
        reads.append(1)
        return 0.0

    monkeypatch.setattr(loadshed, "_read_load", read_load)
    shedder = LoadShedder(LoadShedConfig(max_cpu_load=100.0, sample_seconds=0.01))
    call = shedder.bind(trivial)
    assert not shedder.status()["sampling"]  # nothing runs before it is used
    for _ in range(1000):
        assert await call() == 1
    assert shedder.status()["sampling"]
    assert reads == []  # 1000 calls, no sample taken on their path
    await eventually(lambda: len(reads) >= 2)  # it samples in the background
    await shedder.stop()
    assert not shedder.status()["sampling"]
    stopped_at = len(reads)
    await asyncio.sleep(0.05)
    assert await call() == 1  # and a call does not restart it after stop()
    await asyncio.sleep(0.05)
    assert len(reads) == stopped_at and not shedder.status()["sampling"]
    await shedder.start()
    assert shedder.status()["sampling"]
    await shedder.stop()


# -- backpressure -------------------------------------------------------------------


async def test_backpressure_gate_closes_at_high_water_and_opens_at_low() -> None:
    bp = Backpressure(BackpressureConfig(high_water=4, low_water=2))
    events = listen(bp)
    work = Work()
    call = bp.bind(work)
    first = [start(call, i) for i in range(3)]
    await settle()
    assert bp.state == "open"
    fourth = start(call, 3)
    await settle()
    assert bp.state == "closed" and work.running == 4
    waiters = [start(call, f"w{i}") for i in range(3)]
    await settle()
    assert bp.status()["waiting"] == 3

    work.release(0)  # 3 in flight: above low water, still closed
    await settle()
    assert bp.state == "closed" and work.running == 3 and bp.status()["waiting"] == 3
    work.release(1)  # 2 in flight: low water, open
    await settle()
    # The two oldest waiters enter, in order, and fill it to high water again.
    assert work.entered == [0, 1, 2, 3, "w0", "w1"]
    assert bp.state == "closed" and bp.status()["waiting"] == 1
    await settle()
    changes = [(e.old_state, e.new_state) for e in events if e.kind is EventKind.STATE_CHANGED]
    assert changes == [("open", "closed"), ("closed", "open"), ("open", "closed")]

    work.everyone.set()
    await asyncio.gather(*first, fourth, *waiters)
    assert bp.status()["in_flight"] == 0 and bp.state == "open"
    assert bp.status()["closings"] == 2


async def test_backpressure_reject_mode_refuses_at_once() -> None:
    bp = Backpressure(BackpressureConfig(high_water=2, low_water=1, mode="reject"))
    work = Work()
    call = bp.bind(work)
    tasks = [start(call, i) for i in range(2)]
    await settle()
    with pytest.raises(LoadShed) as info:
        await call("third")
    assert info.value.reason is Reason.BACKPRESSURE
    assert bp.status()["rejected"] == 1 and bp.status()["waiting"] == 0
    work.release(0)
    await settle()
    assert bp.state == "open"
    assert await call_released(bp, work, "fourth") == "fourth"
    work.everyone.set()
    await asyncio.gather(*tasks)


async def test_backpressure_wait_times_out() -> None:
    bp = Backpressure(BackpressureConfig(high_water=1, low_water=0, wait_seconds=0.05))
    work = Work()
    call = bp.bind(work)
    holder = start(call, "held")
    await settle()
    with pytest.raises(LoadShed, match="stayed closed") as info:
        await call("late")
    assert info.value.reason is Reason.BACKPRESSURE
    assert bp.status()["waiting"] == 0
    work.release("held")
    await holder
    assert bp.state == "open" and bp.status()["in_flight"] == 0


async def test_backpressure_survives_cancelled_waiters_and_holders() -> None:
    bp = Backpressure(BackpressureConfig(high_water=2, low_water=1))
    work = Work()
    call = bp.bind(work)
    tasks = [start(call, i) for i in range(10)]
    await settle()
    for task in tasks[3:6]:
        task.cancel()  # in the queue
    tasks[0].cancel()  # holding: 1 in flight is low water, so the gate opens
    await asyncio.sleep(0)
    tasks[2].cancel()  # handed a place, not resumed yet: passes it on
    await settle()
    assert work.entered == [0, 1, 6]

    async def guarded() -> str:
        async with bp.guard():
            return "guarded"

    late = asyncio.ensure_future(guarded())  # queues behind the others
    await settle()
    assert bp.status()["waiting"] == 4
    work.everyone.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await late == "guarded"
    assert bp.status()["in_flight"] == 0 and bp.status()["waiting"] == 0
    assert bp.state == "open"


# -- adaptive -----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def limit_changes(events: list[ResilienceEvent]) -> list[tuple[int, int]]:
    return [
        (e.metadata["old"], e.metadata["new"]) for e in events if e.kind is EventKind.LIMIT_CHANGED
    ]


async def test_adaptive_limit_grows_on_fast_successes_up_to_max() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(AdaptiveConfig(initial_limit=2, max_limit=5), clock=clock)
    events = listen(limiter)
    call = limiter.bind(trivial)
    await call()
    await call()
    assert limiter.limit == 2  # 2 + 1/2 + 1/2.5 = 2.9: a limit's worth adds about 1
    await call()
    await call()
    assert limiter.limit == 3  # 3.55
    for _ in range(96):
        assert await call() == 1
    assert limiter.limit == 5
    await settle()
    assert limit_changes(events) == [(2, 3), (3, 4), (4, 5)]
    assert limiter.status()["successes"] == 100 and limiter.status()["failures"] == 0

    leaping = AdaptiveLimiter(AdaptiveConfig(initial_limit=2, max_limit=5, increase=10.0))
    await leaping.bind(trivial)()
    assert leaping.limit == 5  # never past max_limit


async def test_adaptive_limit_shrinks_on_failures_and_slow_calls() -> None:
    clock = FakeClock()
    limiter = AdaptiveLimiter(
        AdaptiveConfig(initial_limit=20, min_limit=3, decrease=0.5, latency_target_seconds=1.0),
        clock=clock,
    )
    events = listen(limiter)

    async def slow() -> str:
        clock.now += 2.0
        return "slow"

    async def failing() -> None:
        raise ConnectionError("down")

    assert await limiter.bind(slow)() == "slow"
    assert limiter.limit == 10 and limiter.status()["slow"] == 1
    with pytest.raises(ConnectionError):
        await limiter.bind(failing)()
    assert limiter.limit == 5
    for _ in range(3):
        with pytest.raises(ConnectionError):
            await limiter.bind(failing)()
    assert limiter.limit == 3  # min_limit
    assert limiter.status()["failures"] == 4 and limiter.status()["in_flight"] == 0
    await settle()
    assert limit_changes(events) == [(20, 10), (10, 5), (5, 3)]


async def test_adaptive_cuts_once_per_round_and_ignores_ignored_errors() -> None:
    limiter = AdaptiveLimiter(
        AdaptiveConfig(initial_limit=16, ignored=(KeyError,)), clock=FakeClock()
    )
    work = Work()
    call = limiter.bind(work)
    failing = [start(call, i, ConnectionError("down")) for i in range(3)]
    await settle()
    work.everyone.set()
    await asyncio.gather(*failing, return_exceptions=True)
    assert limiter.limit == 8  # three failures of one round: one cut
    assert limiter.status()["failures"] == 3
    work.release("again")
    with pytest.raises(ConnectionError):
        await call("again", ConnectionError("again"))  # a new round: cut again
    assert limiter.limit == 4

    async def not_found() -> None:
        raise KeyError("nope")

    with pytest.raises(KeyError):
        await limiter.bind(not_found)()
    assert limiter.limit == 4 and limiter.status()["failures"] == 4


async def test_adaptive_rejects_and_queues_beyond_the_limit() -> None:
    limiter = AdaptiveLimiter(
        AdaptiveConfig(initial_limit=2, max_waiting=1, wait_seconds=None), clock=FakeClock()
    )
    work = Work()
    call = limiter.bind(work)
    tasks = [start(call, i) for i in range(3)]
    await settle()
    assert work.running == 2 and limiter.status()["waiting"] == 1
    with pytest.raises(LoadShed) as info:
        await call("fourth")
    assert info.value.reason is Reason.CONCURRENCY_LIMIT
    assert limiter.status()["rejected"] == 1
    work.release(0)  # a fast success: the slot goes to the waiter
    await settle()
    assert work.entered == [0, 1, 2]
    work.everyone.set()
    await asyncio.gather(*tasks)
    assert limiter.status()["in_flight"] == 0 and limiter.status()["waiting"] == 0


async def test_adaptive_guard_learns_and_releases() -> None:
    limiter = AdaptiveLimiter(AdaptiveConfig(initial_limit=8), clock=FakeClock())
    seen: list[int] = []

    async def failing_block() -> None:
        async with limiter.guard():
            seen.append(limiter.status()["in_flight"])
            raise TimeoutError

    with pytest.raises(TimeoutError):
        await failing_block()
    assert seen == [1]
    assert limiter.limit == 4 and limiter.status()["in_flight"] == 0
    async with limiter.guard():
        pass
    assert limiter.status()["successes"] == 1 and limiter.status()["in_flight"] == 0


# -- configuration ------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: BulkheadConfig(max_concurrent=0),
        lambda: BulkheadConfig(wait_seconds=0),
        lambda: BackpressureConfig(high_water=4, low_water=4),
        lambda: BackpressureConfig(mode="drop"),  # type: ignore[arg-type]
        lambda: AdaptiveConfig(decrease=1.0),
        lambda: AdaptiveConfig(min_limit=5, initial_limit=2),
        lambda: AdaptiveConfig(min_limit=50, max_limit=10, initial_limit=20),
        lambda: LoadShedConfig(priority_reserve={-1: 0.9, 0: 0.5}),
        lambda: LoadShedConfig(priority_reserve={0: 1.5}),
        lambda: LoadShedConfig(max_loop_lag_ms=0),
    ],
)
def test_bad_configs_are_refused(make: Callable[[], Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each names its own field
        make()


def test_config_defaults_and_toml_shapes() -> None:
    assert BackpressureConfig(high_water=10).low_water == 5
    assert LoadShedConfig(priority_reserve={"0": "0.8"}).priority_reserve == {0: 0.8}
    shedder = LoadShedder(LoadShedConfig(max_in_flight=10))
    assert [shedder.cap(p) for p in (-3, -1, 0, 1, 7)] == [5, 5, 8, 10, 10]
    kinds = [
        module.wisp_resilience_patterns()[0].name
        for module in (bulkhead, loadshed, backpressure, adaptive)
    ]
    assert kinds == ["bulkhead", "load_shedding", "backpressure", "adaptive"]
