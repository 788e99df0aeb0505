"""Timeout: cancel a call that runs longer than ``seconds`` (``asyncio.timeout``).

Bundled plugin ``timeout``; block it with ``-p no:timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import attrs

import wisp
from wisp.plugins.resilience.api import (
    AsyncFn,
    EventKind,
    Pattern,
    PatternConfig,
    PatternKind,
    Reason,
    TimedOut,
)

__all__ = ["Timeout", "TimeoutConfig"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="timeout",
    description="The timeouts pattern for resilience policies.",
    api=">=1.0,<2",
    data="Nothing.",
)


@attrs.frozen(kw_only=True)
class TimeoutConfig(PatternConfig):
    #: Longest a call may run, in seconds.
    seconds: float = attrs.field(default=10.0, validator=attrs.validators.gt(0))


class Timeout(Pattern):
    """Raises :class:`TimedOut` (a ``TimeoutError``) when the call overruns."""

    kind = "timeout"
    config_class = TimeoutConfig
    config: TimeoutConfig

    def __init__(self, config: TimeoutConfig | None = None, *, policy: str | None = None) -> None:
        super().__init__(config, policy=policy)
        self.timeouts = 0
        self.calls = 0

    def _timed_out(self, exc: BaseException) -> BaseException:
        self.timeouts += 1
        self.emit(EventKind.TIMEOUT, reason=Reason.TIMEOUT, exception=exc)
        seconds = self.config.seconds
        default = TimedOut(
            pattern=self.name, policy=self.policy, detail=f"{self.name}: over {seconds}s"
        )
        return self.failure(Reason.TIMEOUT, exc, default, seconds=seconds)

    def bind(self, inner: AsyncFn) -> AsyncFn:
        seconds = self.config.seconds
        timeout = asyncio.timeout

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            cm = timeout(seconds)
            try:
                async with cm:
                    return await inner(*args, **kwargs)
            except TimeoutError as exc:
                if not cm.expired():
                    raise  # raised inside the call, not by this timeout
                raise self._timed_out(exc) from exc

        return call

    def guard(self) -> contextlib.AbstractAsyncContextManager[Any]:
        return self._guard()

    @contextlib.asynccontextmanager
    async def _guard(self) -> AsyncIterator[None]:
        self.calls += 1
        cm = asyncio.timeout(self.config.seconds)
        try:
            async with cm:
                yield
        except TimeoutError as exc:
            if not cm.expired():
                raise
            raise self._timed_out(exc) from exc

    def status(self) -> dict[str, Any]:
        return {
            "state": "ready",
            "seconds": self.config.seconds,
            "calls": self.calls,
            "timeouts": self.timeouts,
        }


@wisp.hookimpl
def wisp_resilience_patterns() -> list[PatternKind]:
    return [PatternKind("timeout", TimeoutConfig, Timeout, "cancel calls that run too long")]
