"""Retry and fallback patterns: backoff, budget, retry_after, failure handling, composition."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import wisp
from wisp.plugins.resilience import fallback as fallback_module
from wisp.plugins.resilience import retry as retry_module
from wisp.plugins.resilience.api import (
    CircuitOpen,
    EventKind,
    FailureContext,
    Policy,
    Reason,
    ResilienceEvent,
)
from wisp.plugins.resilience.fallback import Fallback, FallbackConfig
from wisp.plugins.resilience.retry import Retry, RetryConfig

pytestmark = pytest.mark.needs_plugin("resilience")


class FakeTime:
    """A clock that only moves when the retry sleeps (or a call says it took time)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []
        self.sleep_started: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleep_started.append(self.now)
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(*outcomes: Any, took: float = 0.0, time: FakeTime | None = None) -> Any:
    """An async callable that raises or returns ``outcomes`` in turn; ``.calls`` counts."""
    queue = list(outcomes)

    async def inner(*args: Any, **kwargs: Any) -> Any:
        inner.calls += 1  # type: ignore[attr-defined]
        inner.seen.append((args, kwargs))  # type: ignore[attr-defined]
        if time is not None:
            time.now += took
        outcome = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    inner.calls = 0  # type: ignore[attr-defined]
    inner.seen = []  # type: ignore[attr-defined]
    return inner


def make_retry(fake: FakeTime, rand: Callable[[], float] = lambda: 0.5, **config: Any) -> Retry:
    config.setdefault("jitter", "none")
    return Retry(RetryConfig(**config), sleep=fake.sleep, random=rand, clock=fake.clock)


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


# -- retry: the happy path and the basic loop ---------------------------------------


async def test_success_path_untouched_and_counted(fake: FakeTime) -> None:
    inner = scripted("ok")
    retry = make_retry(fake)
    call = retry.bind(inner)
    assert await call(1, two=2) == "ok"
    assert inner.seen == [((1,), {"two": 2})]
    assert fake.sleeps == []
    assert retry.status() == {
        "state": "ready",
        "attempts": 3,
        "calls": 1,
        "retries": 0,
        "successes_after_retry": 0,
        "exhausted": 0,
    }


async def test_retries_then_success(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("a"), ConnectionError("b"), "ok")
    retry = make_retry(fake, attempts=3, backoff=0.1)
    assert await retry.bind(inner)("x") == "ok"
    assert inner.calls == 3
    assert inner.seen == [(("x",), {})] * 3
    assert fake.sleeps == pytest.approx([0.1, 0.2])
    status = retry.status()
    assert (status["retries"], status["successes_after_retry"], status["exhausted"]) == (2, 1, 0)


async def test_exhaustion_reraises_the_last_original_exception(fake: FakeTime) -> None:
    errors = [ConnectionError("first"), ConnectionError("second"), ConnectionError("last")]
    inner = scripted(*errors)
    retry = make_retry(fake, attempts=3)
    with pytest.raises(ConnectionError) as info:
        await retry.bind(inner)()
    assert info.value is errors[-1]
    # The retry loop runs outside the first failure's except block: no spurious chaining.
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert inner.calls == 3
    assert retry.status()["exhausted"] == 1
    assert retry.status()["retries"] == 2


async def test_single_attempt_never_retries(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("once"))
    retry = make_retry(fake, attempts=1)
    with pytest.raises(ConnectionError):
        await retry.bind(inner)()
    assert inner.calls == 1 and fake.sleeps == []
    assert retry.status()["exhausted"] == 1


# -- retry: timing ---------------------------------------------------------------------


async def test_budget_is_never_overrun_by_a_sleep(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"), took=0.5, time=fake)
    retry = make_retry(fake, attempts=50, backoff=1.0, multiplier=2.0, budget_seconds=5.0)
    with pytest.raises(ConnectionError):
        await retry.bind(inner)()
    # The budget counts from the first failure (the end of attempt 1).
    start = 1000.0 + 0.5
    assert fake.sleeps == [1.0, 2.0]  # a 4 s pause would end at 8.5 s > 5 s: give up
    for began, seconds in zip(fake.sleep_started, fake.sleeps, strict=True):
        assert began + seconds <= start + 5.0
    assert inner.calls == 3
    assert retry.status()["exhausted"] == 1


async def test_exponential_growth_is_capped(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"))
    retry = make_retry(fake, attempts=7, backoff=0.5, multiplier=3.0, max_backoff=5.0)
    with pytest.raises(ConnectionError):
        await retry.bind(inner)()
    assert fake.sleeps == pytest.approx([0.5, 1.5, 4.5, 5.0, 5.0, 5.0])


async def test_zero_backoff_retries_without_waiting(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"), "ok")
    retry = make_retry(fake, backoff=0.0)
    assert await retry.bind(inner)() == "ok"
    assert fake.sleeps == [0.0]


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [
        ("full", [0.25 * 1.0, 0.25 * 2.0, 0.25 * 4.0]),
        ("equal", [0.5 + 0.25 * 0.5, 1.0 + 0.25 * 1.0, 2.0 + 0.25 * 2.0]),
        ("none", [1.0, 2.0, 4.0]),
    ],
)
async def test_jitter_with_a_fixed_random(
    fake: FakeTime, jitter: str, expected: list[float]
) -> None:
    inner = scripted(ConnectionError("down"))
    retry = make_retry(fake, rand=lambda: 0.25, attempts=4, backoff=1.0, jitter=jitter)
    with pytest.raises(ConnectionError):
        await retry.bind(inner)()
    assert fake.sleeps == pytest.approx(expected)


async def test_full_jitter_stays_within_bounds(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"))
    rng = random.Random(1234)
    retry = Retry(
        RetryConfig(attempts=30, backoff=0.1, max_backoff=2.0),  # jitter "full" by default
        sleep=fake.sleep,
        random=rng.random,
        clock=fake.clock,
    )
    with pytest.raises(ConnectionError):
        await retry.bind(inner)()
    caps = [min(0.1 * 2**i, 2.0) for i in range(29)]
    assert len(fake.sleeps) == 29
    assert all(0 <= s <= cap for s, cap in zip(fake.sleeps, caps, strict=True))
    assert len(set(fake.sleeps)) > 1


async def test_retry_after_is_honoured(fake: FakeTime) -> None:
    inner = scripted(wisp.RateLimited(2.5), CircuitOpen("db.breaker", 4.0), "ok")
    retry = make_retry(fake, backoff=0.1, budget_seconds=60.0)
    assert await retry.bind(inner)() == "ok"
    assert fake.sleeps == [2.5, 4.0]


async def test_retry_after_can_be_ignored(fake: FakeTime) -> None:
    inner = scripted(wisp.RateLimited(2.5), "ok")
    retry = make_retry(fake, backoff=0.1, honour_retry_after=False)
    assert await retry.bind(inner)() == "ok"
    assert fake.sleeps == [0.1]


async def test_non_numeric_retry_after_falls_back_to_backoff(fake: FakeTime) -> None:
    class Odd(Exception):
        retry_after = "soon"

    class Endless(Exception):
        retry_after = float("inf")

    inner = scripted(Odd(), Endless(), "ok")
    retry = make_retry(fake, backoff=0.1)
    assert await retry.bind(inner)() == "ok"
    assert fake.sleeps == pytest.approx([0.1, 0.2])


async def test_retry_after_beyond_the_budget_gives_up_at_once(fake: FakeTime) -> None:
    limited = wisp.RateLimited(2.5)
    inner = scripted(limited, "never reached")
    retry = make_retry(fake, attempts=5, budget_seconds=2.0)
    with pytest.raises(wisp.RateLimited) as info:
        await retry.bind(inner)()
    assert info.value is limited
    assert fake.sleeps == []
    assert inner.calls == 1
    assert retry.status()["exhausted"] == 1


# -- retry: what is retried ------------------------------------------------------------


async def test_retry_on_result(fake: FakeTime) -> None:
    inner = scripted(None, None, "ok")
    retry = make_retry(fake, attempts=3, retry_on_result=lambda r: r is None)
    assert await retry.bind(inner)() == "ok"
    assert inner.calls == 3
    assert retry.status()["successes_after_retry"] == 1


async def test_retry_on_result_exhausted_returns_the_last_result(fake: FakeTime) -> None:
    inner = scripted({"n": 1}, {"n": 2}, {"n": 3})
    retry = make_retry(fake, attempts=3, retry_on_result=lambda r: r["n"] < 10)
    assert await retry.bind(inner)() == {"n": 3}
    assert retry.status()["exhausted"] == 1


async def test_retry_on_result_mixes_with_failures(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"), "", "ok")
    retry = make_retry(fake, attempts=3, retry_on_result=lambda r: r == "")
    assert await retry.bind(inner)() == "ok"
    assert inner.calls == 3


def test_retry_on_result_accepts_a_module_name_string() -> None:
    config = RetryConfig(retry_on_result="operator:not_")
    assert config.retry_on_result is not None and config.retry_on_result(None) is True
    with pytest.raises(ValueError, match="retry_on_result"):
        RetryConfig(retry_on_result="no_such_module_xyz:thing")


@pytest.mark.parametrize(
    ("config", "error", "retried"),
    [
        ({"handled": (ConnectionError,)}, ValueError("bad input"), False),
        ({"handled": (ConnectionError,)}, ConnectionResetError("reset"), True),
        ({"ignored": (ConnectionResetError,)}, ConnectionResetError("reset"), False),
        ({"ignored": ("builtins:ConnectionResetError",)}, ConnectionError("down"), True),
        ({"predicate": lambda e: "transient" in str(e)}, OSError("permanent"), False),
        ({"predicate": lambda e: "transient" in str(e)}, OSError("transient"), True),
    ],
)
async def test_handled_ignored_and_predicate_choose_what_is_retried(
    fake: FakeTime, config: dict[str, Any], error: Exception, retried: bool
) -> None:
    inner = scripted(error, "ok")
    retry = make_retry(fake, **config)
    if retried:
        assert await retry.bind(inner)() == "ok"
        assert inner.calls == 2
    else:
        with pytest.raises(type(error)) as info:
            await retry.bind(inner)()
        assert info.value is error
        assert inner.calls == 1 and fake.sleeps == []
        assert retry.status()["exhausted"] == 0


async def test_cancellation_is_never_retried(fake: FakeTime) -> None:
    entered = asyncio.Event()
    cancelled = 0
    calls = 0

    async def inner() -> None:
        nonlocal cancelled, calls
        calls += 1
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled += 1
            raise

    retry = make_retry(fake, attempts=5, handled=(BaseException,))
    task = asyncio.ensure_future(retry.bind(inner)())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()
    assert (calls, cancelled) == (1, 1)
    assert fake.sleeps == []


async def test_cancelled_error_raised_by_the_call_is_not_retried(fake: FakeTime) -> None:
    inner = scripted(asyncio.CancelledError(), "ok")
    retry = make_retry(fake, handled=(BaseException,))
    with pytest.raises(asyncio.CancelledError):
        await retry.bind(inner)()
    assert inner.calls == 1


async def test_cancellation_during_the_pause_propagates() -> None:
    inner = scripted(ConnectionError("down"), "ok")
    retry = Retry(RetryConfig(backoff=60.0, jitter="none"))
    task = asyncio.ensure_future(retry.bind(inner)())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert inner.calls == 1


# -- retry: failure handling -----------------------------------------------------------


async def test_on_failure_receives_the_context(fake: FakeTime) -> None:
    seen: list[FailureContext] = []
    last = ConnectionError("last")
    inner = scripted(ConnectionError("first"), last)
    retry = Retry(
        RetryConfig(attempts=2, jitter="none", on_failure=seen.append),
        policy="api",
        sleep=fake.sleep,
    )
    with pytest.raises(ConnectionError) as info:
        await retry.bind(inner)()
    assert info.value is last
    [ctx] = seen
    assert ctx.reason is Reason.RETRIES_EXHAUSTED
    assert ctx.exception is last
    assert (ctx.pattern, ctx.name, ctx.policy) == ("retry", "api.retry", "api")
    assert ctx.metadata == {"attempts": 2}


async def test_a_failing_on_failure_is_logged_and_the_error_still_propagates(
    fake: FakeTime, log_lines: list[dict[str, Any]]
) -> None:
    def explode(ctx: FailureContext) -> None:
        raise RuntimeError("callback bug")

    last = ConnectionError("real problem")
    retry = make_retry(fake, attempts=2, on_failure=explode)
    with pytest.raises(ConnectionError) as info:
        await retry.bind(scripted(ConnectionError("first"), last))()
    assert info.value is last
    errors = [r for r in log_lines if r["level"] == "ERROR"]
    assert any("on_failure" in r["message"] and "retry" in r["message"] for r in errors)
    assert any(r["exception"] is not None for r in errors)


async def test_raise_as_replaces_the_exhausted_error(fake: FakeTime) -> None:
    last = ConnectionError("gateway down")
    retry = make_retry(fake, attempts=2, raise_as=wisp.ExternalServiceError)
    with pytest.raises(wisp.ExternalServiceError) as info:
        await retry.bind(scripted(ConnectionError("first"), last))()
    assert info.value.__cause__ is last
    assert "gateway down" in str(info.value)


async def test_transform_chooses_the_raised_error(fake: FakeTime) -> None:
    last = ConnectionError("gateway down")

    def transform(ctx: FailureContext) -> BaseException:
        return wisp.UserError(f"gave up: {ctx.reason.value} after {ctx.metadata['attempts']}")

    retry = make_retry(fake, attempts=2, transform=transform)
    with pytest.raises(wisp.UserError, match="retries_exhausted after 2") as info:
        await retry.bind(scripted(ConnectionError("first"), last))()
    assert info.value.__cause__ is last


async def test_retry_events_reach_listeners(fake: FakeTime) -> None:
    events: list[ResilienceEvent] = []
    failure = ConnectionError("down")
    retry = make_retry(fake, attempts=3, backoff=0.5)
    retry.events.add_listener(events.append)
    assert await retry.bind(scripted(failure, failure, "ok"))() == "ok"
    await asyncio.sleep(0)
    assert [e.kind for e in events] == [EventKind.RETRY, EventKind.RETRY]
    assert [dict(e.metadata) for e in events] == [
        {"attempt": 1, "delay": 0.5},
        {"attempt": 2, "delay": 1.0},
    ]
    assert all(e.exception is failure and e.pattern == "retry" for e in events)


def test_retry_config_is_validated() -> None:
    for bad in (
        {"attempts": 0},
        {"backoff": -1.0},
        {"multiplier": 0.5},
        {"max_backoff": -1.0},
        {"budget_seconds": 0},
        {"jitter": "sometimes"},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - attrs' messages vary by validator
            RetryConfig(**bad)
    with pytest.raises(TypeError):
        RetryConfig(attempts=2.5)  # type: ignore[arg-type]


def test_retry_cannot_guard_a_block() -> None:
    assert Retry().guard() is None


# -- fallback ---------------------------------------------------------------------------


async def test_fallback_value() -> None:
    fallback = Fallback(FallbackConfig(value="cached"))
    call = fallback.bind(scripted(ConnectionError("down")))
    assert await call() == "cached"
    assert await fallback.bind(scripted("fresh"))() == "fresh"
    assert fallback.status() == {"state": "ready", "calls": 2, "fallbacks": 1}


async def test_fallback_async_factory_receives_the_exception() -> None:
    seen: list[BaseException | None] = []
    failure = ConnectionError("down")

    async def factory(exc: BaseException | None) -> str:
        seen.append(exc)
        await asyncio.sleep(0)
        return "from factory"

    fallback = Fallback(FallbackConfig(factory=factory))
    assert await fallback.bind(scripted(failure))() == "from factory"
    assert seen == [failure]


async def test_fallback_sync_factory_and_module_name_string() -> None:
    fallback = Fallback(FallbackConfig(factory="builtins:repr"))
    assert await fallback.bind(scripted(KeyError("k")))() == "KeyError('k')"


async def test_fallback_on_result() -> None:
    seen: list[BaseException | None] = []

    def factory(exc: BaseException | None) -> str:
        seen.append(exc)
        return "default"

    fallback = Fallback(FallbackConfig(factory=factory, on_result=lambda r: r == ""))
    assert await fallback.bind(scripted(""))() == "default"
    assert await fallback.bind(scripted("real"))() == "real"
    assert await fallback.bind(scripted(ConnectionError("down")))() == "default"
    assert seen[0] is None and isinstance(seen[1], ConnectionError)
    assert fallback.status()["fallbacks"] == 2


async def test_fallback_lets_non_failures_through() -> None:
    fallback = Fallback(FallbackConfig(value="x", handled=(ConnectionError,)))
    error = ValueError("a bug, not an outage")
    with pytest.raises(ValueError, match="a bug") as info:
        await fallback.bind(scripted(error))()
    assert info.value is error
    inner = scripted(asyncio.CancelledError())
    with pytest.raises(asyncio.CancelledError):
        await Fallback(FallbackConfig(value="x", handled=(BaseException,))).bind(inner)()
    assert fallback.status()["fallbacks"] == 0


async def test_a_failing_factory_propagates_chained_to_the_failure() -> None:
    failure = ConnectionError("down")

    def factory(exc: BaseException | None) -> str:
        raise LookupError("no cached copy")

    fallback = Fallback(FallbackConfig(factory=factory))
    with pytest.raises(LookupError, match="no cached copy") as info:
        await fallback.bind(scripted(failure))()
    assert info.value.__context__ is failure


async def test_fallback_events_reach_listeners() -> None:
    events: list[ResilienceEvent] = []
    failure = ConnectionError("down")
    fallback = Fallback(FallbackConfig(value=0, on_result=lambda r: r is None))
    fallback.events.add_listener(events.append)
    await fallback.bind(scripted(failure))()
    await fallback.bind(scripted(None))()
    await asyncio.sleep(0)
    assert [e.kind for e in events] == [EventKind.FALLBACK, EventKind.FALLBACK]
    assert events[0].exception is failure
    assert events[1].exception is None and events[1].metadata == {"result": None}


def test_fallback_cannot_guard_a_block() -> None:
    assert Fallback().guard() is None


# -- composition -------------------------------------------------------------------------


async def test_fallback_inside_retry_hides_failures_from_retry(fake: FakeTime) -> None:
    inner = scripted(ConnectionError("down"), "ok")
    retry = make_retry(fake, attempts=3)
    fallback = Fallback(FallbackConfig(value="fallback"))
    call = Policy("p", [retry, fallback])(inner)
    assert await call() == "fallback"
    assert inner.calls == 1
    assert retry.status()["retries"] == 0 and fake.sleeps == []


async def test_fallback_outside_retry_replaces_only_the_final_failure(fake: FakeTime) -> None:
    seen: list[BaseException | None] = []
    last = ConnectionError("last")
    inner = scripted(ConnectionError("1"), ConnectionError("2"), last)
    retry = make_retry(fake, attempts=3)

    def factory(exc: BaseException | None) -> str:
        seen.append(exc)
        return "fallback"

    fallback = Fallback(FallbackConfig(factory=factory))
    call = Policy("p", [fallback, retry])(inner)
    assert await call() == "fallback"
    assert inner.calls == 3
    assert seen == [last]
    assert retry.status()["exhausted"] == 1 and fallback.status()["fallbacks"] == 1


async def test_policy_rejects_sync_functions_at_decoration_time() -> None:
    policy = Policy("p", [Retry(), Fallback()])

    def sync() -> int:
        return 1

    with pytest.raises(TypeError, match="not async"):
        policy(sync)  # type: ignore[arg-type]


async def test_policy_wraps_an_object_with_an_async_call(fake: FakeTime) -> None:
    class Client:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, x: int) -> int:
            self.calls += 1
            if self.calls == 1:
                raise ConnectionError("cold start")
            return x * 2

    client = Client()
    call: Callable[..., Awaitable[int]] = Policy("p", [make_retry(fake)])(client)
    assert await call(21) == 42
    assert client.calls == 2


async def test_policy_with_retry_or_fallback_cannot_guard_a_block() -> None:
    with pytest.raises(TypeError, match="retry cannot guard"):
        async with Policy("p", [Retry()]):
            pass
    with pytest.raises(TypeError, match="fallback cannot guard"):
        async with Policy("p", [Fallback()]):
            pass


def test_plugins_contribute_their_pattern_kinds() -> None:
    [retry_kind] = retry_module.wisp_resilience_patterns()
    [fallback_kind] = fallback_module.wisp_resilience_patterns()
    assert (retry_kind.name, retry_kind.config_class, retry_kind.factory) == (
        "retry",
        RetryConfig,
        Retry,
    )
    assert (fallback_kind.name, fallback_kind.config_class, fallback_kind.factory) == (
        "fallback",
        FallbackConfig,
        Fallback,
    )
    assert Retry(policy="api").name == "api.retry"
