"""Cache: get, set with a TTL, delete and single-flight ``get_or_set``, in memory
(LRU-bounded) or in Redis, values as cattrs-made JSON (never pickle).

Bundled plugin ``cache``; block it with ``-p no:cache``.  Code reaches it with
``ctx.service("cache")``.  With the metrics plugin loaded it counts
``wisp.cache.hits``, ``misses``, ``computes``, ``evictions`` and ``errors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.cache.api import CacheError
from wisp.plugins.cache.config import CacheConfig
from wisp.plugins.cache.service import CacheService

__all__ = ["CacheConfig", "CacheError", "CacheService"]


WISP_PLUGIN = wisp.PluginMetadata(
    name="cache",
    description="A cache service: TTLs, single-flight get_or_set, memory (LRU) or Redis.",
    api=">=1.0,<2",
    data="What plugins cache through it, with a TTL; those plugins state what.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"cache": CacheConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: CacheConfig = app.config.section(CacheConfig)
    if config.backend == "redis" and not app.pluginmanager.has_plugin("redis"):
        # Blocking redis must leave the rest of the bot working.
        logger.warning(
            'the cache is off: [cache] backend = "redis" needs the redis plugin, '
            "which is not loaded"
        )
        return []
    return [CacheService(app, config)]
