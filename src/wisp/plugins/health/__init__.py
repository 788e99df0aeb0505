"""Health: liveness and readiness over HTTP for container orchestrators.

Bundled plugin ``health``; block it with ``-p no:health``.  Every service
reports its health (``health()``) and readiness (``ready()``, or its health
when it has none); ``wisp doctor`` shows both.  With ``[health] http = true``
an aiohttp server (off by default, on 127.0.0.1 unless configured) answers
``GET /healthz`` (the process is alive) and ``GET /readyz`` (the application
has started and every service, such as the database, Redis and the Discord
gateway, is ready), each as JSON with status 200 or 503.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import wisp
from wisp.plugins.health.config import HealthConfig
from wisp.plugins.health.service import HealthService

__all__ = ["HealthConfig", "HealthService"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="health",
    description="Health and readiness of every service; optional /healthz and /readyz endpoints.",
    api=">=1.0,<2",
    data="Nothing.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"health": HealthConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    return [HealthService(app, app.config.section(HealthConfig))]
