"""The ``health`` service: readiness reports, and the optional HTTP server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.app import State
from wisp.plugins.health.config import HealthConfig

__all__ = ["HealthService"]


class HealthService(wisp.BaseService):
    """Answers "alive?" and "ready?"; serves them over HTTP when configured."""

    name = "health"
    requires: Sequence[str] = ()

    def __init__(self, app: wisp.Wisp, config: HealthConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self._runner: Any = None
        #: ``(host, port)`` the HTTP server listens on, once started; else None.
        self.address: tuple[str, int] | None = None

    async def live(self) -> dict[str, Any]:
        """Liveness: answering at all means the event loop runs."""
        return {"status": "ok", "state": self.app.state.value}

    async def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether the application can serve now, and each service's answer."""
        checks = await self.app.services.ready_all(timeout=self.config.timeout)
        started = self.app.state is State.STARTED
        ok = started and all(h.ok for h in checks.values())
        return ok, {
            "status": "ready" if ok else "not ready",
            "state": self.app.state.value,
            "services": {n: {"ready": h.ok, "detail": h.detail} for n, h in checks.items()},
        }

    @property
    def serving(self) -> bool:
        """Whether this process serves the endpoint (see ``[health] commands``)."""
        command = self.app.cli_command
        return self.config.http and (command is None or command in self.config.commands)

    async def ready(self) -> wisp.Health:
        if self.serving and self._runner is None:
            return wisp.Health(False, "HTTP endpoint not listening")
        if self.address is not None:
            return wisp.Health(True, f"http://{self._url_host()}:{self.address[1]}")
        if self.config.http:
            return wisp.Health(True, f"HTTP not served by `wisp {self.app.cli_command}`")
        return wisp.Health(True, "HTTP off")

    async def health(self) -> wisp.Health:
        return await self.ready()

    def _url_host(self) -> str:
        host = self.address[0] if self.address else self.config.host
        return f"[{host}]" if ":" in host else host

    async def start(self) -> None:
        if self.serving:
            await self._serve()
        await super().start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.address = None
        await super().stop()

    async def _serve(self) -> None:
        from aiohttp import web

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response(await self.live())

        async def readyz(request: web.Request) -> web.Response:
            ok, body = await self.readiness()
            return web.json_response(body, status=200 if ok else 503)

        server = web.Application()
        server.router.add_get("/healthz", healthz)
        server.router.add_get("/readyz", readyz)
        runner = web.AppRunner(server, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.config.host, self.config.port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise wisp.ConfigError(
                [
                    f"health.port: cannot listen on {self.config.host}:{self.config.port}: "
                    f"{exc.strerror or exc}"
                ]
            ) from exc
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.address = (str(host), int(port))
        logger.info("health endpoint on http://{}:{} (/healthz, /readyz)", self._url_host(), port)
