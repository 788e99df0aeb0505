"""Is this thing something we can await the result of?"""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["is_async_callable", "underlying_function"]


def underlying_function(obj: object) -> Any:
    """The function that runs when ``obj`` is called: itself, or its class's ``__call__``."""
    if inspect.isfunction(obj) or inspect.ismethod(obj):
        return inspect.unwrap(obj)
    call = getattr(type(obj), "__call__", None)  # noqa: B004 - we want the function
    return inspect.unwrap(call) if call is not None else None


def is_async_callable(obj: object) -> bool:
    """True for ``async def`` functions and objects with an ``async def __call__``."""
    func = underlying_function(obj)
    return func is not None and inspect.iscoroutinefunction(func)
