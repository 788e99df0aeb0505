"""Circuit breaker: thresholds, windows, half-open probes, modes, events,
concurrency, and shared state in Redis across processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid

import pytest

import wisp
from wisp.plugins.resilience.api import (
    CircuitOpen,
    EventKind,
    FailureContext,
    Policy,
    Reason,
    ResilienceEvent,
)
from wisp.plugins.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker

pytestmark = pytest.mark.needs_plugin("resilience")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom("down")


def breaker(clock: Clock | None = None, **config: object) -> CircuitBreaker:
    return CircuitBreaker(BreakerConfig(**config), policy="p", clock=clock or Clock())  # type: ignore[arg-type]


async def settle() -> None:
    for _ in range(3):
        await asyncio.sleep(0)


async def test_consecutive_failures_open_then_probe_and_close() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=3, open_seconds=10, half_open_calls=2)
    good, bad = b.bind(ok), b.bind(boom)
    for _ in range(2):
        with pytest.raises(Boom):
            await bad()
    assert await good() == "ok"  # a success resets the count
    for _ in range(3):
        with pytest.raises(Boom):
            await bad()
    assert b.state is BreakerState.OPEN
    clock.now += 4
    with pytest.raises(CircuitOpen) as info:
        await good()
    assert info.value.retry_after == pytest.approx(6.0)
    assert "try again in about 6 seconds" in info.value.safe_message
    assert info.value.reason is Reason.CIRCUIT_OPEN
    clock.now += 6
    assert await good() == "ok"  # first probe
    assert b.state is BreakerState.HALF_OPEN
    assert await good() == "ok"  # second: closes
    assert b.state is BreakerState.CLOSED
    # a failing probe opens it again
    for _ in range(3):
        with pytest.raises(Boom):
            await bad()
    clock.now += 10
    with pytest.raises(Boom):
        await bad()
    assert b.state is BreakerState.OPEN
    status = b.status()
    assert status["opened"] == 3 and status["rejected"] == 1 and status["state"] == "open"


async def test_failure_rate_over_a_count_window_with_min_calls() -> None:
    b = breaker(failure_threshold=None, failure_rate=0.5, window=10, min_calls=6)
    good, bad = b.bind(ok), b.bind(boom)
    for _ in range(2):
        await good()
    for _ in range(3):
        with pytest.raises(Boom):
            await bad()
    assert b.state is BreakerState.CLOSED  # 3/5: too few calls to judge
    with pytest.raises(Boom):
        await bad()
    assert b.state is BreakerState.OPEN  # 4/6
    # the window slides: old outcomes fall out
    c = breaker(failure_threshold=None, failure_rate=0.75, window=4, min_calls=4)
    g, f = c.bind(ok), c.bind(boom)
    for _ in range(2):
        with pytest.raises(Boom):
            await f()
    for _ in range(4):
        await g()
    assert c.window.failures == 0 and c.state is BreakerState.CLOSED


async def test_time_window_and_slow_calls() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=None, failure_rate=0.5, window_seconds=10, min_calls=4)
    bad, good = b.bind(boom), b.bind(ok)
    for _ in range(3):
        with pytest.raises(Boom):
            await bad()
    clock.now += 11  # those failures leave the window
    await good()
    await good()
    with pytest.raises(Boom):
        await bad()
    assert b.state is BreakerState.CLOSED and b.window.calls == 3

    async def slow() -> str:
        clock.now += 2.0
        return "slow"

    s = breaker(
        clock,
        failure_threshold=None,
        slow_call_seconds=1.0,
        slow_call_rate=0.5,
        window=4,
        min_calls=4,
    )
    fast_call, slow_call = s.bind(ok), s.bind(slow)
    await fast_call()
    await fast_call()
    await slow_call()
    assert s.state is BreakerState.CLOSED
    await slow_call()
    assert s.state is BreakerState.OPEN and s.slow_calls == 2


async def test_ignored_errors_predicate_and_cancellation_are_not_failures() -> None:
    b = breaker(failure_threshold=1, ignored=[KeyError], predicate=lambda e: "fatal" in str(e))

    async def raise_(exc: BaseException) -> None:
        raise exc

    call = b.bind(raise_)
    with pytest.raises(KeyError):
        await call(KeyError("x"))
    with pytest.raises(Boom):
        await call(Boom("harmless"))  # the predicate says: not a failure
    with pytest.raises(asyncio.CancelledError):
        await call(asyncio.CancelledError())
    assert b.state is BreakerState.CLOSED and b.failures == 0 and b.ignored == 3
    with pytest.raises(Boom):
        await call(Boom("fatal"))
    assert b.state is BreakerState.OPEN


async def test_cancelled_probe_gives_its_permit_back() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=1, open_seconds=1, half_open_calls=1)
    with pytest.raises(Boom):
        await b.bind(boom)()
    clock.now += 2
    gate = asyncio.Event()

    async def wait() -> str:
        await gate.wait()
        return "done"

    probe = asyncio.create_task(b.bind(wait)())
    await settle()
    with pytest.raises(CircuitOpen):
        await b.bind(ok)()  # the only probe is taken
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await b.bind(ok)() == "ok"  # the permit came back; this probe closes it
    assert b.state is BreakerState.CLOSED


async def test_modes_forced_open_disabled_metrics_only() -> None:
    forced = breaker(mode="forced_open")
    with pytest.raises(CircuitOpen):
        await forced.bind(ok)()
    off = breaker(mode="disabled", failure_threshold=1)
    for _ in range(3):
        with pytest.raises(Boom):
            await off.bind(boom)()
    assert off.state is BreakerState.DISABLED and off.failures == 0
    watch = breaker(mode="metrics_only", failure_threshold=1)
    for _ in range(3):
        with pytest.raises(Boom):
            await watch.bind(boom)()
    assert await watch.bind(ok)() == "ok"
    assert watch.state is BreakerState.METRICS_ONLY and watch.failures == 3
    watch.force_open()
    with pytest.raises(CircuitOpen):
        await watch.bind(ok)()
    watch.reset()
    assert await watch.bind(ok)() == "ok"


def test_bad_config_names_the_field() -> None:
    with pytest.raises(ValueError, match="must be in"):
        BreakerConfig(failure_rate=1.5)
    with pytest.raises(ValueError, match="must be at least 1"):
        BreakerConfig(half_open_calls=0)
    with pytest.raises(ValueError, match="never opens"):
        BreakerConfig(failure_threshold=None)
    with pytest.raises(ValueError, match="handled: cannot import 'nowhere:Thing'"):
        BreakerConfig(handled=["nowhere:Thing"])


async def test_a_thousand_concurrent_calls_through_half_open_let_exactly_the_permitted_in() -> None:
    clock = Clock()
    b = breaker(clock, failure_threshold=1, open_seconds=5, half_open_calls=7)
    with pytest.raises(Boom):
        await b.bind(boom)()
    clock.now += 5
    gate = asyncio.Event()
    entered = 0

    async def probe() -> str:
        nonlocal entered
        entered += 1
        await gate.wait()
        return "ok"

    call = b.bind(probe)
    tasks = [asyncio.create_task(call()) for _ in range(1000)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert entered == 7
    assert sum(1 for r in results if r == "ok") == 7
    assert sum(1 for r in results if isinstance(r, CircuitOpen)) == 993
    assert b.state is BreakerState.CLOSED


async def test_concurrent_failures_transition_once_with_one_event_each() -> None:
    b = breaker(failure_threshold=5, open_seconds=60)
    events: list[ResilienceEvent] = []
    b.events.add_listener(events.append)
    gate = asyncio.Event()

    async def fail_together() -> None:
        await gate.wait()
        raise Boom("together")

    call = b.bind(fail_together)
    tasks = [asyncio.create_task(call()) for _ in range(200)]
    await settle()
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, Boom) for r in results)
    await settle()
    changes = [e for e in events if e.kind is EventKind.STATE_CHANGED]
    assert len(changes) == 1
    assert (changes[0].old_state, changes[0].new_state) == (BreakerState.CLOSED, BreakerState.OPEN)
    assert b.opened == 1 and b.failures == 200


async def test_events_are_delivered_off_the_call_path_and_late_listeners_hear_the_next() -> None:
    b = breaker(failure_threshold=1, open_seconds=60)
    seen: list[EventKind] = []
    call_done = False

    def listener(event: ResilienceEvent) -> None:
        assert call_done, "delivered inside the call"
        seen.append(event.kind)

    with pytest.raises(Boom):
        await b.bind(boom)()  # nobody listens: nothing built
    b.reset()
    b.events.add_listener(listener)
    with pytest.raises(Boom):
        await b.bind(boom)()
    call_done = True
    await settle()
    assert seen == [EventKind.FAILURE, EventKind.STATE_CHANGED]
    late: list[ResilienceEvent] = []

    async def async_listener(event: ResilienceEvent) -> None:
        late.append(event)

    b.events.add_listener(async_listener)
    with pytest.raises(CircuitOpen):
        await b.bind(ok)()
    await settle()
    assert [e.kind for e in late] == [EventKind.REJECTED]
    assert late[0].reason is Reason.CIRCUIT_OPEN and late[0].pattern == "breaker"
    assert late[0].name == "p.breaker" and late[0].policy == "p"


async def test_failure_callback_context_and_callback_errors_are_logged(log_lines) -> None:
    seen: list[FailureContext] = []

    class Closed(Exception):
        pass

    b = breaker(failure_threshold=1, on_failure=seen.append, raise_as=Closed)
    with pytest.raises(Boom):
        await b.bind(boom)()
    with pytest.raises(Closed, match=r"circuit p\.breaker is open"):
        await b.bind(ok)()
    assert seen[0].reason is Reason.CIRCUIT_OPEN and seen[0].pattern == "breaker"
    assert seen[0].metadata["retry_after"] == pytest.approx(30.0)

    def broken(ctx: FailureContext) -> None:
        raise RuntimeError("callback bug")

    c = breaker(failure_threshold=1, on_failure=broken)
    with pytest.raises(Boom):
        await c.bind(boom)()
    with pytest.raises(CircuitOpen):  # the breaker's own error still comes through
        await c.bind(ok)()
    assert any(
        "on_failure callback of p.breaker failed" in r["message"] and r["exception"]
        for r in log_lines
    )


async def test_policy_decorator_async_with_and_sync_functions() -> None:
    b = breaker(failure_threshold=2)
    policy = Policy("p", [b])

    @policy
    async def fetch(x: int) -> int:
        return x * 2

    assert await fetch(21) == 42 and fetch.__name__ == "fetch"

    class Client:
        async def __call__(self, x: int) -> int:
            return x + 1

    assert await policy(Client())(1) == 2
    with pytest.raises(TypeError, match="wraps async callables only"):

        @policy
        def sync() -> None:
            pass

    for _ in range(2):
        with pytest.raises(Boom):
            async with policy:
                raise Boom("in a block")
    with pytest.raises(CircuitOpen):
        async with policy:
            pass


# -- shared state ---------------------------------------------------------------------


@pytest.mark.slow
class _Services(dict):  # type: ignore[type-arg]
    """What a breaker's start reads of ``app.services``."""

    def get(self, name: str) -> object:
        return self[name]


def test_two_processes_share_one_open_breaker(tmp_path, redis_url) -> None:
    name = f"shared-{uuid.uuid4().hex[:8]}"
    script = tmp_path / "proc.py"
    script.write_text(
        textwrap.dedent(f"""
        import asyncio, sys
        from wisp.plugins.redis import RedisService
        from wisp.plugins.resilience.api import CircuitOpen
        from wisp.plugins.resilience.breaker import BreakerConfig, CircuitBreaker

        class Services(dict):
            def get(self, name):
                return self[name]

        async def main(role):
            redis = RedisService({redis_url!r})
            await redis.start()
            b = CircuitBreaker(BreakerConfig(name={name!r}, failure_threshold=2,
                                             open_seconds=30, shared=True))
            await b.start(Services(redis=redis))
            async def boom():
                raise RuntimeError("down")
            async def ok():
                return "ok"
            if role == "opener":
                for _ in range(2):
                    try:
                        await b.bind(boom)()
                    except RuntimeError:
                        pass
                await asyncio.sleep(0.3)  # the publish goes out
                print(b.state.value)
            else:
                print("ready", flush=True)
                for _ in range(100):  # wait for the other process to open it
                    if b.state.value == "open":
                        break
                    await asyncio.sleep(0.05)
                try:
                    await b.bind(ok)()
                    print("called")
                except CircuitOpen as exc:
                    print("rejected", round(exc.retry_after))
            await b.stop()
            await redis.stop()

        asyncio.run(main(sys.argv[1]))
    """)
    )
    watcher = subprocess.Popen(
        [sys.executable, str(script), "watcher"], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline().strip() == "ready"
    opener = subprocess.run(
        [sys.executable, str(script), "opener"], capture_output=True, text=True, timeout=60
    )
    assert opener.stdout.strip() == "open", opener.stderr
    out, _ = watcher.communicate(timeout=60)
    assert out.strip().startswith("rejected"), out
    assert 25 <= int(out.split()[1]) <= 30
    # a third process that starts later reads the open state at start-up
    late = subprocess.run(
        [sys.executable, str(script), "watcher"], capture_output=True, text=True, timeout=60
    )
    assert "rejected" in late.stdout, late.stderr


async def test_shared_half_open_probes_are_counted_across_breakers(
    start_redis_service,
) -> None:
    name = f"probes-{uuid.uuid4().hex[:8]}"
    services = [await start_redis_service() for _ in range(2)]
    breakers = [
        CircuitBreaker(
            BreakerConfig(
                name=name, failure_threshold=1, open_seconds=2.0, half_open_calls=3, shared=True
            )
        )
        for _ in range(2)
    ]
    try:
        for b, redis in zip(breakers, services, strict=True):
            await b.start(_Services(redis=redis))
        with pytest.raises(Boom):
            await breakers[0].bind(boom)()
        # Open elsewhere, then the open period passes.  It is also how long a probe
        # may go unanswered before it is handed out again (its prober presumed
        # dead): 2 s leaves a loaded machine room to admit the 40 calls below.
        await asyncio.sleep(2.1)
        gate = asyncio.Event()

        async def wait() -> str:
            await gate.wait()
            return "ok"

        tasks = [asyncio.create_task(b.bind(wait)()) for b in breakers for _ in range(20)]
        # The probes end only when the gate opens: first let every call be
        # decided (on a loaded machine 40 round trips to Redis take a while).
        # The 37 refused finish at once; 3 (across both "processes") hold probes.
        async with asyncio.timeout(10):
            while sum(t.done() for t in tasks) < 37:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        assert sum(t.done() for t in tasks) == 37
        gate.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert sum(1 for r in results if r == "ok") == 3
        await asyncio.sleep(0.2)
        assert [b.state for b in breakers] == [BreakerState.CLOSED] * 2
    finally:
        for b in breakers:
            await b.stop()


async def test_user_errors_do_not_count_and_raise_as_keeps_the_kind_message() -> None:
    import wisp

    b = breaker(failure_threshold=1)

    async def typo() -> None:
        raise wisp.UserError("No such user.")

    for _ in range(3):
        with pytest.raises(wisp.UserError):
            await b.bind(typo)()
    assert b.state is BreakerState.CLOSED and b.ignored == 3

    class Unavailable(wisp.ExternalServiceError):
        pass

    c = breaker(failure_threshold=1, raise_as=Unavailable)
    with pytest.raises(Boom):
        await c.bind(boom)()
    with pytest.raises(Unavailable) as info:
        await c.bind(ok)()
    assert info.value.safe_message.startswith("This feature is taking a short break")
    assert "p.breaker is open" in str(info.value)  # the detail stays in the logs
    assert BreakerConfig(failure_threshold=0, failure_rate=0.5).failure_threshold is None


async def test_a_dead_probers_probe_is_handed_out_again(start_redis_service) -> None:
    from wisp.plugins.resilience.breaker import _PROBE

    name = f"dead-{uuid.uuid4().hex[:8]}"
    redis = await start_redis_service()
    config = BreakerConfig(name=name, failure_threshold=1, open_seconds=0.3, shared=True)
    a, b = CircuitBreaker(config), CircuitBreaker(config)
    try:
        for x in (a, b):
            await x.start(_Services(redis=redis))
        with pytest.raises(Boom):
            await a.bind(boom)()
        await asyncio.sleep(0.35)
        assert a._shared is not None and b._shared is not None
        assert await a._shared.admit(a) == _PROBE  # ...and "a" dies holding it
        with pytest.raises(CircuitOpen):
            await b.bind(ok)()
        await asyncio.sleep(0.35)  # the probe's time is up
        assert await b.bind(ok)() == "ok"
        await asyncio.sleep(0.1)
        assert b.state is BreakerState.CLOSED
    finally:
        for x in (a, b):
            await x.stop()


async def test_a_lost_subscription_is_restored_and_resynced(log_lines, start_redis_service) -> None:
    name = f"resub-{uuid.uuid4().hex[:8]}"
    listening, opening = await start_redis_service(), await start_redis_service()
    other = opening.client
    config = BreakerConfig(name=name, failure_threshold=1, open_seconds=30, shared=True)
    watcher, opener = CircuitBreaker(config), CircuitBreaker(config)
    try:
        # Only this test's subscriptions: other tests share the Redis server.
        before = {c["id"] for c in await other.client_list(_type="pubsub")}
        await watcher.start(_Services(redis=listening))
        await opener.start(_Services(redis=opening))
        ours = [c["id"] for c in await other.client_list(_type="pubsub") if c["id"] not in before]
        assert ours
        for client_id in ours:
            await other.client_kill_filter(_id=client_id)
        with pytest.raises(Boom):
            await opener.bind(boom)()
        for _ in range(60):
            if watcher.state is BreakerState.OPEN:
                break
            await asyncio.sleep(0.1)
        assert watcher.state is BreakerState.OPEN
        assert any("lost the subscription for shared breakers" in r["message"] for r in log_lines)
    finally:
        for x in (watcher, opener):
            await x.stop()


async def test_a_shared_breaker_that_cannot_subscribe_fails_its_start(
    start_redis_service, monkeypatch, log_lines
) -> None:
    """Redis answers commands but no subscription can be made (here: the client
    points at a closed port): start fails with the breaker's name, not silently."""
    import redis.asyncio as aioredis

    from wisp.plugins.resilience.breaker import _Hub

    monkeypatch.setattr(_Hub, "subscribe_timeout", 0.5)
    redis = await start_redis_service()
    real = redis.client
    redis.client = aioredis.Redis.from_url("redis://127.0.0.1:1/0")
    config = BreakerConfig(name=f"deaf-{uuid.uuid4().hex[:8]}", shared=True)
    b = CircuitBreaker(config)
    try:
        with pytest.raises(wisp.PluginError, match=rf"breaker {config.name}: could not subscribe"):
            await b.start(_Services(redis=redis))
        assert any("lost the subscription for shared breakers" in r["message"] for r in log_lines)
    finally:
        await redis.client.aclose()
        redis.client = real
