"""Retry: run a failed call again after a growing, jittered pause.

Bundled plugin ``retry``; block it with ``-p no:retry``.

Exceptions that count as failures (``handled``/``ignored``/``predicate``,
never ``CancelledError``) are retried; anything else propagates at once.
When attempts or the time budget run out, the *last original* exception is
re-raised, so callers still see the real error (``transform``/``raise_as``
change that).  Retry cannot guard an ``async with`` block: it would have to
run the block again.
"""

from __future__ import annotations

import asyncio
import math
import random as _random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    EventKind,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
    _callable,
)

__all__ = ["Retry", "RetryConfig"]

Jitter = Literal["full", "equal", "none"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="retry",
    description="The retries pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


def _to_result_check(value: Any) -> Callable[[Any], bool] | None:
    """A callable, or a ``"module:name"`` string naming one (as in ``wisp.toml``)."""
    check: Callable[[Any], bool] | None = _callable("retry_on_result")(value)
    return check


@attrs.frozen(kw_only=True)
class RetryConfig(PatternConfig):
    #: Total attempts, the first one included (1 means never retry).
    attempts: int = attrs.field(
        default=3, validator=[attrs.validators.instance_of(int), attrs.validators.ge(1)]
    )
    #: Time allowed for retrying, counted from the first failure (so a call that
    #: succeeds at once never reads the clock); a pause that would end past it
    #: is never started: retry gives up instead.  Bound the first attempt with a
    #: timeout outside the retry.
    budget_seconds: float | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.gt(0))
    )
    #: The first pause, in seconds; each later one is ``multiplier`` times longer.
    backoff: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    #: No backoff pause is longer than this (``retry_after`` waits are not capped).
    max_backoff: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))
    #: Spread pauses so callers that failed together do not retry together:
    #: ``full`` waits uniform(0, d), ``equal`` d/2 + uniform(0, d/2), ``none`` d.
    jitter: Jitter = attrs.field(
        default="full", validator=attrs.validators.in_(("full", "equal", "none"))
    )
    #: A result for which this returns true is retried like a failure; when the
    #: retries run out on such a result, that last result is returned.
    retry_on_result: Callable[[Any], bool] | None = attrs.field(
        default=None, converter=_to_result_check
    )
    #: Wait an exception's numeric ``retry_after`` (``wisp.RateLimited``,
    #: discord.py's 429s, ``CircuitOpen``) instead of the backoff; when that
    #: wait exceeds the remaining budget, give up at once.
    honour_retry_after: bool = True
    #: A ``retry_after`` longer than this gives up at once rather than wait (an
    #: open breaker's 30 s is better reported than slept through).
    max_retry_after: float = attrs.field(default=10.0, validator=attrs.validators.ge(0))


def _retry_after(exc: BaseException | None) -> float | None:
    """The server's or breaker's own "come back in" hint, when it is a usable number."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return max(0.0, float(value))


class Retry(Pattern):
    """Retries failures with exponential backoff and jitter, within attempts and a budget.

    ``sleep``, ``random`` and ``clock`` are injectable so tests need not wait.
    """

    kind = "retry"
    config_class = RetryConfig
    config: RetryConfig

    def __init__(
        self,
        config: RetryConfig | None = None,
        *,
        policy: str | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        random: Callable[[], float] = _random.random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, policy=policy)
        self._sleep = sleep
        self._random = random
        self._clock = clock
        self.calls = 0
        self.retries = 0
        self.successes_after_retry = 0
        self.exhausted = 0

    def bind(self, inner: AsyncFn) -> AsyncFn:
        # Everything is read once here: the first attempt is straight-line code
        # and the retry loop (`again`) only starts after a failure.
        config = self.config
        attempts = config.attempts
        budget = config.budget_seconds
        backoff, multiplier, cap = config.backoff, config.multiplier, config.max_backoff
        jitter = config.jitter
        check = config.retry_on_result
        honour = config.honour_retry_after
        max_after = config.max_retry_after
        is_failure = self.is_failure
        sleep, rand, clock = self._sleep, self._random, self._clock

        async def again(args: Any, kwargs: Any, exc: BaseException | None, result: Any) -> Any:
            """Attempts 2..n; ``exc`` is the first failure, or None for a rejected result."""
            deadline = None if budget is None else clock() + budget
            delay = min(backoff, cap)
            attempt = 1  # attempts made so far
            while attempt < attempts:
                hint = _retry_after(exc) if honour else None
                if hint is not None:
                    if hint > max_after:
                        break
                    wait = hint
                elif jitter == "full":
                    wait = rand() * delay
                elif jitter == "equal":
                    wait = delay / 2 + rand() * delay / 2
                else:
                    wait = delay
                delay = min(delay * multiplier, cap)  # the schedule advances either way
                if deadline is not None and clock() + wait > deadline:
                    break
                self.retries += 1
                self.emit(
                    EventKind.RETRY, exception=exc, metadata={"attempt": attempt, "delay": wait}
                )
                await sleep(wait)
                attempt += 1
                try:
                    result = await inner(*args, **kwargs)
                except BaseException as error:
                    if not is_failure(error):
                        raise
                    exc, result = error, None
                    continue
                if check is None or not check(result):
                    self.successes_after_retry += 1
                    return result
                exc = None
            self.exhausted += 1
            if self.events.active:
                self.emit(
                    EventKind.FAILURE,
                    reason=Reason.RETRIES_EXHAUSTED,
                    exception=exc,
                    metadata={"attempts": attempt},
                )
            if exc is None:
                return result  # the last result was rejected: it is still the best answer
            raised = self.failure(Reason.RETRIES_EXHAUSTED, exc, exc, attempts=attempt)
            if raised is exc:
                raise exc
            raise raised from exc

        if check is None:

            async def call(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                try:
                    return await inner(*args, **kwargs)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    first = exc
                # Outside the except block, so later errors do not chain onto this one.
                return await again(args, kwargs, first, None)

        else:

            async def call(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                first: BaseException | None = None
                try:
                    result = await inner(*args, **kwargs)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    first, result = exc, None
                else:
                    if not check(result):
                        return result
                return await again(args, kwargs, first, result)

        return call

    def status(self) -> dict[str, Any]:
        return {
            "state": "ready",
            "attempts": self.config.attempts,
            "calls": self.calls,
            "retries": self.retries,
            "successes_after_retry": self.successes_after_retry,
            "exhausted": self.exhausted,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind("retry", RetryConfig, Retry, "run failed calls again with backoff and jitter")
    ]
