"""Shared REST limits: one Redis-backed limiter for every process on a bot token.

Bundled plugin ``restlimits``; block it with ``-p no:restlimits``.  With
``[redis] url`` set, every REST request the discord.py bot makes waits, through
discord.py's public ``http_trace`` option, for a slot in the route's bucket
(learned from Discord's ``X-RateLimit-*`` headers), in the global limit and
under the invalid-request guard, all kept in Redis so that four processes on
one token never get a 429 that one process would not.  It also retries 429s
that a REST proxy in front of Discord sends (``[discord] api_url``), which
discord.py takes for a Cloudflare ban.  See docs/scaling-out.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.metrics.api import metrics_of
from wisp.plugins.restlimits.config import RestLimitsConfig

__all__ = ["RestLimitsConfig"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="restlimits",
    description="A REST limiter shared through Redis by every process on one bot token; "
    "retries REST-proxy 429s.",
    api=">=1.0,<2",
    data="Nothing about users: route names, bucket ids, counters, and a hash of the token.",
)


def _config(app: wisp.Wisp) -> RestLimitsConfig:
    config: RestLimitsConfig = app.config.section(RestLimitsConfig)
    return config


def _redis_url(app: wisp.Wisp) -> str:
    if not app.pluginmanager.has_plugin("redis"):
        return ""
    return str(getattr(app.config.section("redis"), "url", "") or "")


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"restlimits": RestLimitsConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config = _config(app)
    if config.enabled is False:
        return []
    if not _redis_url(app):
        if config.enabled:
            # Blocking redis (or running without it) must leave the bot working.
            logger.warning(
                "shared REST limits are off: [restlimits] enabled = true needs the redis "
                "plugin and [redis] url; each process keeps only discord.py's own limits"
            )
        return []
    from wisp.plugins.restlimits.service import RestLimitsService

    return [RestLimitsService(app, config)]


@wisp.hookimpl(optionalhook=True)  # the discord plugin may be blocked
def wisp_discord_client_options(app: wisp.Wisp) -> Mapping[str, Any] | None:
    if "restlimits" not in app.services:
        return None
    return {"http_trace": app.services.get("restlimits").trace_config()}


@wisp.hookimpl(optionalhook=True)
def wisp_discord_client_created(app: wisp.Wisp, client: Any) -> None:
    config = _config(app)
    if not config.proxy_retries:
        return
    from wisp.plugins.restlimits.discordpy import InternalsChanged, install_proxy_retry

    registry = metrics_of(app)

    def retried(wait: float) -> None:
        if registry is not None:
            registry.counter("wisp.restlimits.proxy_retries").inc()

    try:
        install_proxy_retry(
            client.http,
            retries=config.proxy_retries,
            max_wait=config.proxy_max_wait,
            on_retry=retried,
        )
    except InternalsChanged as exc:
        # The bot still runs; only proxy 429s go back to raising at once.
        logger.error("REST-proxy 429s will not be retried: {}", exc)
