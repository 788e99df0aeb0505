"""Idempotency: an operation runs once per key; repeats get its stored result.

Bundled plugin ``idempotency``; block it with ``-p no:idempotency``.  Keys
live in the storage plugin's database (SQLite, PostgreSQL) or in Redis
(``[idempotency] backend``).  Code uses ``@idempotent(...)`` (from
:mod:`wisp.plugins.idempotency.api`) or ``async with
ctx.service("idempotency").idempotent(key) as claim``; commands marked
``idempotent=True`` (or all, by config) answer a second delivery of the same
interaction or message with the first one's reply.  Expired keys are cleaned
up on the jobs plugin's scheduler and by ``wisp idempotency cleanup``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.idempotency.config import IdempotencyConfig
from wisp.targets import Target

__all__ = ["IdempotencyConfig"]

HERE = Path(__file__).parent

#: The job type of the scheduled cleanup.
CLEANUP_JOB = "idempotency.cleanup"


def _needs(config: IdempotencyConfig) -> str:
    return "storage" if config.backend == "sql" else "redis"


def _available(app: wisp.Wisp) -> bool:
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    return app.pluginmanager.has_plugin(_needs(config))


WISP_PLUGIN = wisp.PluginMetadata(
    name="idempotency",
    description="Operations and commands that run once per key; stored results replayed.",
    api=">=1.0,<2",
    data="Idempotency keys (hashes) and each operation's stored result, which may hold "
    "a reply to a user; they expire after their TTL.",
)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"idempotency": IdempotencyConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked (Redis backend)
def wisp_storage_models() -> Any:
    from wisp.plugins.idempotency.models import IdempotencyRow
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([IdempotencyRow], HERE / "migrations", branch="idempotency")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    if not _available(app):
        # Blocking storage (or redis) must leave the rest of the bot working.
        logger.warning(
            "idempotency is off: [idempotency] backend = {!r} needs the {} plugin, "
            "which is not loaded",
            config.backend,
            _needs(config),
        )
        return []
    from wisp.plugins.idempotency.service import IdempotencyService

    return [IdempotencyService(app, config)]


@wisp.hookimpl
def wisp_middleware(app: wisp.Wisp, target: Target) -> wisp.Middleware | None:
    from wisp.plugins.idempotency.middleware import middleware_for

    return middleware_for(app, target, available=_available(app))


async def _cleanup(ctx: wisp.WispContext, payload: Any) -> dict[str, int]:
    """The scheduled cleanup: delete expired keys, live ones stay."""
    deleted = await ctx.service("idempotency").cleanup()
    return {"deleted": deleted}


@wisp.hookimpl
def wisp_job_handlers(app: wisp.Wisp) -> Mapping[str, Any] | None:
    if not _available(app):
        return None
    return {CLEANUP_JOB: wisp.job(CLEANUP_JOB, max_attempts=1)(_cleanup)}


@wisp.hookimpl(optionalhook=True)  # the jobs plugin (which adds this hook) may be blocked
def wisp_job_schedules(app: wisp.Wisp) -> Sequence[Any] | None:
    config: IdempotencyConfig = app.config.section(IdempotencyConfig)
    if not config.cleanup_seconds or not _available(app):
        return None
    from wisp.plugins.jobs.schedule import Schedule

    return [
        Schedule(name="idempotency.cleanup", job_type=CLEANUP_JOB, every=config.cleanup_seconds)
    ]


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.idempotency.cli import COMMANDS

    return COMMANDS
