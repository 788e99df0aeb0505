"""The ``restlimits`` service: the shared limiter, started on the redis
service's client, and the aiohttp trace the discord plugin hands to discord.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import wisp
from wisp.plugins.metrics.api import metrics_of
from wisp.plugins.restlimits.config import RestLimitsConfig

if TYPE_CHECKING:
    import aiohttp

    from wisp.plugins.restlimits.limiter import SharedRestLimiter

__all__ = ["RestLimitsService"]


class RestLimitsService(wisp.BaseService):
    """``app.services.get("restlimits").limiter`` once started."""

    name = "restlimits"
    requires: Sequence[str] = ("redis",)

    def __init__(self, app: wisp.Wisp, config: RestLimitsConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.limiter: SharedRestLimiter | None = None

    async def start(self) -> None:
        from wisp.plugins.restlimits.discordpy import api_base
        from wisp.plugins.restlimits.limiter import SharedRestLimiter

        registry = metrics_of(self.app)

        def rejected(scope: str) -> None:
            if registry is not None:
                registry.counter(
                    "wisp.restlimits.429s", family="wisp.restlimits.429s", scope=scope
                ).inc()

        def waited(reason: str, seconds: float) -> None:
            if registry is not None:
                registry.histogram(
                    "wisp.restlimits.wait", family="wisp.restlimits.wait", reason=reason
                ).observe(seconds)

        def invalid(count: int) -> None:
            if registry is not None:
                registry.gauge(
                    "wisp.restlimits.invalid_requests", family="wisp.restlimits.invalid_requests"
                ).set(count)

        self.limiter = SharedRestLimiter(
            self.app.services.get("redis").client,
            self.config,
            api_base,
            on_rejected=rejected,
            on_wait=waited,
            on_invalid=invalid,
        )
        await super().start()

    async def stop(self) -> None:
        if self.limiter is not None:
            await self.limiter.drain()
            self.limiter = None
        await super().stop()

    async def health(self) -> wisp.Health:
        limiter = self.limiter
        if limiter is None:
            return wisp.Health(False, "not started")
        s = limiter.stats
        rejected = ", ".join(f"{k} {v}" for k, v in sorted(s.rejected.items())) or "none"
        return wisp.Health(
            True,
            f"{s.requests} requests, {s.waits} waited ({s.wait_seconds:.3f}s), 429s: "
            f"{rejected}, {s.invalid_count} invalid in 10 min, {s.redis_errors} Redis errors",
        )

    def trace_config(self) -> aiohttp.TraceConfig:
        """For discord.py's ``http_trace``: built at start-up, used once started
        (the discord service starts after this one)."""
        import aiohttp

        trace = aiohttp.TraceConfig()

        async def start(session: Any, ctx: Any, params: Any) -> None:
            if self.limiter is not None:
                await self.limiter._on_request_start(session, ctx, params)

        async def end(session: Any, ctx: Any, params: Any) -> None:
            if self.limiter is not None:
                await self.limiter._on_request_end(session, ctx, params)

        async def failed(session: Any, ctx: Any, params: Any) -> None:
            if self.limiter is not None:
                await self.limiter._on_request_exception(session, ctx, params)

        trace.on_request_start.append(start)
        trace.on_request_end.append(end)
        trace.on_request_exception.append(failed)
        return trace
