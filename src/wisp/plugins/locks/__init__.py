"""Distributed locks with fencing tokens, in Redis, PostgreSQL or in-process.

Bundled plugin ``locks``; block it with ``-p no:locks``.  Code takes a lock
with ``async with app.services.get("locks").acquire(name, ttl=..., timeout=...)
as lock:``; ``lock.token`` is a fencing token for writes that must refuse a
stale holder (``lock.fence(session)``, ``lock.fenced_set(key, value)``).
``wisp locks list|status`` shows what is held.  See docs/locks.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.locks.config import LocksConfig
from wisp.plugins.locks.service import LocksService

__all__ = ["LocksConfig", "LocksService"]

HERE = Path(__file__).parent


WISP_PLUGIN = wisp.PluginMetadata(
    name="locks",
    description="Distributed locks with fencing tokens on Redis, PostgreSQL or in-process.",
    api=">=1.0,<2",
    data="Nothing about users: lock names, owners (host and process) and fencing tokens.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"locks": LocksConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked
def wisp_storage_models() -> Any:
    from wisp.plugins.locks.models import LockFence, LockRow
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([LockRow, LockFence], HERE / "migrations", branch="locks")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: LocksConfig = app.config.section(LocksConfig)
    needs = {"redis": "redis", "sql": "storage"}.get(config.backend)
    if needs is not None and not app.pluginmanager.has_plugin(needs):
        # Blocking storage (or redis) must leave the rest of the bot working.
        logger.warning(
            "locks are off: [locks] backend = {!r} needs the {} plugin, which is not loaded",
            config.backend,
            needs,
        )
        return []
    return [LocksService(app, config)]


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.locks.cli import COMMANDS

    return COMMANDS
