"""Turn hook implementations into plain callables, once, at start-up.

pluggy's dispatch costs microseconds per call; the runtime hooks (context,
policy, error messages, middleware) run on every command, so the kernel asks
pluggy once for the implementations in call order and calls them directly.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

if TYPE_CHECKING:
    import pluggy

    from wisp.pipeline import CallNext, Middleware
    from wisp.targets import Target

__all__ = ["CompiledTarget", "call_each", "call_first", "implementations"]

Impl = Callable[..., Any]


def _adapt(impl: pluggy.HookImpl, spec_args: Sequence[str]) -> Impl:
    """Call ``impl`` with the spec's arguments by position, passing the ones it takes."""
    func = impl.function
    if tuple(impl.argnames) == tuple(spec_args):
        return func
    index = tuple(spec_args.index(a) for a in impl.argnames)

    def call(*args: Any) -> Any:
        return func(*[args[i] for i in index])

    return call


def _traced(name: str, plugin: str, func: Impl) -> Impl:
    def call(*args: Any) -> Any:
        start = time.perf_counter_ns()
        try:
            return func(*args)
        finally:
            logger.debug(
                "trace hook {} [{}] {:.1f}us (compiled)",
                name,
                plugin,
                (time.perf_counter_ns() - start) / 1000,
            )

    return call


def implementations(caller: pluggy.HookCaller, *, trace: bool = False) -> tuple[Impl, ...]:
    """The implementations of ``caller`` in pluggy's call order, as positional callables."""
    assert caller.spec is not None, caller.name
    spec_args = caller.spec.argnames
    out = []
    for impl in reversed(caller.get_hookimpls()):
        if impl.wrapper or impl.hookwrapper:
            continue
        func = _adapt(impl, spec_args)
        out.append(_traced(caller.name, impl.plugin_name, func) if trace else func)
    return tuple(out)


async def call_first(impls: Sequence[Impl], *args: Any) -> Any:
    """Return the first non-``None`` result, awaiting coroutine results."""
    for impl in impls:
        result = impl(*args)
        if inspect.isawaitable(result):
            result = await result
        if result is not None:
            return result
    return None


async def call_each(impls: Sequence[Impl], *args: Any) -> None:
    """Call every implementation in order, awaiting coroutine results."""
    for impl in impls:
        result = impl(*args)
        if inspect.isawaitable(result):
            await result


@attrs.frozen(eq=False)
class CompiledTarget:
    """One target with its hooks resolved for its scope and its chain built."""

    target: Target
    middleware: tuple[Middleware, ...]
    chain: CallNext
    enrich: tuple[Impl, ...]
    decide: tuple[Impl, ...]
    error_message: tuple[Impl, ...]
