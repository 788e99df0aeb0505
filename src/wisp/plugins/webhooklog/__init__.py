"""Webhook log sink: errors (and configured levels) posted to a Discord channel.

Bundled plugin ``webhooklog``; block it with ``-p no:webhooklog``.  Set
``[webhooklog] url`` (or ``WISP_WEBHOOKLOG__URL``) to a channel webhook's URL;
without one the sink is off.  Delivery goes through discord.py's ``Webhook``,
batched and kept within Discord's rate limits; a full queue drops and counts,
it never makes a command wait.  Its service ``webhooklog`` reports the counts
as its health (``wisp doctor``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.webhooklog.config import WebhookLogConfig
from wisp.plugins.webhooklog.service import WebhookLogService

__all__ = ["WebhookLogConfig", "WebhookLogService"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="webhooklog",
    description="Error log lines posted to a Discord channel webhook, batched and rate-limited.",
    api=">=1.0,<2",
    data="Nothing stored; posts error log lines (which may name user ids) to a Discord channel.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"webhooklog": WebhookLogConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: WebhookLogConfig = app.config.section("webhooklog")
    if not config.url:
        logger.debug("webhook log sink is off: no [webhooklog] url")
        return []
    return [WebhookLogService(config, _scrubber(app, config))]


def _scrubber(app: wisp.Wisp, config: WebhookLogConfig) -> Any:
    """The logging plugin's redactor when it runs, else one of this config's own."""
    from wisp.plugins.logconfig.api import Redactor, redactor_of

    redactor = redactor_of(app) or Redactor.build([config.url.rsplit("/", 1)[-1]])
    return redactor.scrub
