"""wisp-uptime: an ``uptime`` service and an ``/uptime`` command."""

from __future__ import annotations

import time

import wisp

WISP_PLUGIN = wisp.PluginMetadata(
    name="uptime",
    description="How long has the bot been up? A service and an /uptime command.",
    api=">=1.0,<2",
    commands=("uptime",),
    data="Nothing.",
)


class UptimeService(wisp.BaseService):
    """Remembers when the application started, on the monotonic clock."""

    name = "uptime"

    def __init__(self) -> None:
        super().__init__()
        self.started_at: float | None = None

    async def start(self) -> None:
        self.started_at = time.monotonic()
        await super().start()

    async def stop(self) -> None:
        self.started_at = None
        await super().stop()

    def seconds(self) -> float:
        if self.started_at is None:
            raise wisp.ExternalServiceError("The uptime clock is not running.")
        return time.monotonic() - self.started_at

    async def health(self) -> wisp.Health:
        if self.started_at is None:
            return wisp.Health(False, "not started")
        return wisp.Health(True, f"up {self.seconds():.1f}s")


@wisp.hookimpl
def wisp_services() -> UptimeService:
    return UptimeService()


@wisp.command(description="How long the bot has been running.")
async def uptime(ctx: wisp.WispContext) -> str:
    seconds = ctx.service_of(UptimeService).seconds()
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"Up for {hours}h {minutes}m {secs}s."
