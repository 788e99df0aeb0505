"""Fallback: answer a failed call with a substitute instead of the error.

Bundled plugin ``fallback``; block it with ``-p no:fallback``.

Exceptions that count as failures (``handled``/``ignored``/``predicate``,
never ``CancelledError``) are replaced by ``value`` or by what ``factory``
returns; anything else propagates.  In a policy, put fallback *first*
(outermost) to replace the error only once retries and breakers have given
up: ``[fallback, retry]``.  ``[retry, fallback]`` replaces every attempt's
failure, so retry sees successes and never retries.

Fallback never fails a call itself, so ``on_failure``, ``transform`` and
``raise_as`` never run.  An exception raised by ``factory`` propagates as is
(chained to the failure it was replacing) and is not logged here.  Fallback
cannot guard an ``async with`` block: it would have to run instead of it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    EventKind,
    Pattern,
    PatternConfig,
    PatternKind,
    _callable,
)

__all__ = ["Fallback", "FallbackConfig"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="fallback",
    description="The fallbacks pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


def _to_factory(value: Any) -> Callable[..., Any] | None:
    """A callable, or a ``"module:name"`` string naming one (as in ``wisp.toml``)."""
    factory: Callable[..., Any] | None = _callable("factory")(value)
    return factory


def _to_result_check(value: Any) -> Callable[[Any], bool] | None:
    check: Callable[[Any], bool] | None = _callable("on_result")(value)
    return check


@attrs.frozen(kw_only=True)
class FallbackConfig(PatternConfig):
    #: The substitute, when there is no ``factory`` (shared between calls: do
    #: not mutate it).
    value: Any = None
    #: ``factory(exc)`` (sync or async) builds the substitute; ``exc`` is None
    #: when a result was rejected by ``on_result``.
    factory: Callable[..., Any] | None = attrs.field(default=None, converter=_to_factory)
    #: A result for which this returns true is replaced too.
    on_result: Callable[[Any], bool] | None = attrs.field(default=None, converter=_to_result_check)


class Fallback(Pattern):
    """Returns ``value`` or ``factory(exc)`` in place of a failure."""

    kind = "fallback"
    config_class = FallbackConfig
    config: FallbackConfig

    def __init__(self, config: FallbackConfig | None = None, *, policy: str | None = None) -> None:
        super().__init__(config, policy=policy)
        self.calls = 0
        self.fallbacks = 0

    def bind(self, inner: AsyncFn) -> AsyncFn:
        config = self.config
        value, factory, check = config.value, config.factory, config.on_result
        is_failure = self.is_failure

        async def substitute(exc: BaseException | None, result: Any) -> Any:
            # Counted and reported before the factory runs: a factory that
            # raises still means the fallback was used.
            self.fallbacks += 1
            if self.events.active:
                metadata = {} if exc is not None else {"result": result}
                self.emit(EventKind.FALLBACK, exception=exc, metadata=metadata)
            if factory is None:
                return value
            out = factory(exc)
            if inspect.isawaitable(out):
                out = await out
            return out

        if check is None:

            async def call(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                try:
                    return await inner(*args, **kwargs)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    # Inside the except block: a failing factory chains to `exc`.
                    return await substitute(exc, None)

        else:

            async def call(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                try:
                    result = await inner(*args, **kwargs)
                except BaseException as exc:
                    if not is_failure(exc):
                        raise
                    return await substitute(exc, None)
                if check(result):
                    return await substitute(None, result)
                return result

        return call

    def status(self) -> dict[str, Any]:
        return {"state": "ready", "calls": self.calls, "fallbacks": self.fallbacks}


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [
        PatternKind("fallback", FallbackConfig, Fallback, "answer failed calls with a substitute")
    ]
