"""The answer to "may this caller do that?", shared by every policy source."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import attrs

from wisp._asyncutil import is_async_callable
from wisp.context import WispContext, current_context

__all__ = ["Capability", "Decision", "requires_capability"]

P = ParamSpec("P")
R = TypeVar("R")


@attrs.frozen
class Capability:
    """A capability a plugin declares through ``wisp_capabilities``.

    It lives in the kernel so any plugin can declare one without importing the
    policy plugin; ``default`` applies when no rule matches.
    """

    name: str
    description: str = ""
    default: str = attrs.field(default="allow", validator=attrs.validators.in_(("allow", "deny")))


@attrs.frozen
class Decision:
    """Allow or deny, with the reason and who decided."""

    allowed: bool
    reason: str = ""
    source: str | None = None

    @classmethod
    def allow(cls, reason: str = "", source: str | None = None) -> Decision:
        return cls(True, reason, source)

    @classmethod
    def deny(cls, reason: str = "", source: str | None = None) -> Decision:
        return cls(False, reason, source)


def requires_capability(
    capability: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Guard an async function outside commands: the caller must hold ``capability``.

    The caller is the first ``WispContext`` argument, else the invocation
    running now; the decision comes from the ``wisp_policy_decide`` hooks (the
    policy plugin's rules, ``wispconf.py`` files).  Denied: ``PermissionDenied``.
    """

    def decorate(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        if not is_async_callable(func):
            raise TypeError(f"requires_capability({capability!r}) needs an async function")

        @functools.wraps(func)
        async def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
            ctx: Any = next((a for a in args if isinstance(a, WispContext)), None)
            ctx = ctx or current_context()
            if ctx is None:
                raise RuntimeError(
                    f"{getattr(func, '__qualname__', func)} requires {capability!r} but runs "
                    "outside any invocation: pass a WispContext"
                )
            await ctx.app.require(ctx, capability)
            return await func(*args, **kwargs)

        return guarded

    return decorate
