"""Middleware, compiled once into a plain chain of async calls.

At start-up the kernel collects every middleware that applies to a target,
sorts it by ``order`` (outermost first; ties keep hook call order) and nests
the functions in closures.  Running a command then costs one call and one
await per middleware and no pluggy dispatch at all.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from wisp._asyncutil import is_async_callable

if TYPE_CHECKING:
    from wisp.context import WispContext

__all__ = ["CallNext", "Middleware", "MiddlewareFunc", "Order", "compile_chain", "middleware"]

CallNext = Callable[["WispContext"], Awaitable[Any]]
MiddlewareFunc = Callable[["WispContext", CallNext], Awaitable[Any]]


class Order(enum.IntEnum):
    """Well-known positions in the onion; lower runs outside (earlier)."""

    OUTERMOST = 0
    CONTEXT = 100
    OBSERVE = 200
    FEATURE_FLAGS = 300
    POLICY = 400
    RATE_LIMIT = 500
    RESILIENCE = 600
    DEFAULT = 1000
    INNERMOST = 2000


@attrs.frozen
class Middleware:
    """An async ``func(ctx, call_next)`` with a name and a place in the onion."""

    name: str
    func: MiddlewareFunc = attrs.field(repr=False)
    order: int = Order.DEFAULT
    plugin: str | None = None

    def __attrs_post_init__(self) -> None:
        if not is_async_callable(self.func):
            raise TypeError(f"middleware {self.name!r} must be an async function (ctx, call_next)")


def middleware(
    order: int = Order.DEFAULT, *, name: str | None = None
) -> Callable[[MiddlewareFunc], Middleware]:
    """Decorate ``async def mw(ctx, call_next)`` as a :class:`Middleware`."""

    def decorate(func: MiddlewareFunc) -> Middleware:
        return Middleware(name or str(getattr(func, "__name__", func)), func, order)

    return decorate


def _bind(func: MiddlewareFunc, call_next: CallNext) -> CallNext:
    # A closure with positional arguments: on CPython 3.11 this beats a keyword
    # functools.partial, whose every call copies its keyword dict.
    def step(ctx: WispContext) -> Awaitable[Any]:
        return func(ctx, call_next)

    return step


def _traced(mw: Middleware) -> MiddlewareFunc:
    func = mw.func

    async def traced(ctx: WispContext, call_next: CallNext) -> Any:
        start = time.perf_counter_ns()
        try:
            return await func(ctx, call_next)
        finally:
            logger.debug(
                "trace middleware {} ({}) {:.1f}us incl. inner",
                mw.name,
                mw.plugin,
                (time.perf_counter_ns() - start) / 1000,
            )

    return traced


def sort_middleware(items: Iterable[Middleware]) -> list[Middleware]:
    """Sort by ``order``; the sort is stable, so ties keep hook call order."""
    return sorted(items, key=lambda m: m.order)


def compile_chain(
    middlewares: Sequence[Middleware], endpoint: CallNext, *, trace: bool = False
) -> CallNext:
    """Nest ``middlewares`` (already sorted, outermost first) around ``endpoint``."""
    call = endpoint
    for mw in reversed(middlewares):
        call = _bind(_traced(mw) if trace else mw.func, call)
    return call
