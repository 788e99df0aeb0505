"""Durable jobs: a queue in the database or in Redis, workers, retries with
backoff, dead letters, leases, and a scheduler.

Bundled plugin ``jobs``; block it with ``-p no:jobs``.  Handlers are
``@wisp.job("type")`` functions (or ``wisp_job_handlers``); code enqueues
with ``ctx.service("jobs").enqueue("type", payload)``; ``wisp worker`` runs
them, each through the pipeline with a context of type ``job``; ``wisp jobs
list|show|retry|purge`` looks after them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.jobs import hookspecs
from wisp.plugins.jobs.config import JobsConfig
from wisp.plugins.jobs.schedule import Schedule
from wisp.plugins.jobs.service import JobsService

__all__ = ["JobsConfig", "JobsService", "Schedule"]

HERE = Path(__file__).parent


WISP_PLUGIN = wisp.PluginMetadata(
    name="jobs",
    description="Durable jobs in the database or Redis: wisp worker, wisp jobs.",
    api=">=1.0,<2",
    data="Jobs and their payloads, as the plugins that enqueue them write them (those "
    "plugins state what); the guild and user ids of each job.",
)


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"jobs": JobsConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked (Redis backend)
def wisp_storage_models() -> Any:
    from wisp.plugins.jobs.models import JobRow
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([JobRow], HERE / "migrations", branch="jobs")


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: JobsConfig = app.config.section(JobsConfig)
    needs = "storage" if config.backend == "sql" else "redis"
    if not app.pluginmanager.has_plugin(needs):
        # Blocking storage (or redis) must leave the rest of the bot working.
        logger.warning(
            "jobs are off: [jobs] backend = {!r} needs the {} plugin, which is not loaded",
            config.backend,
            needs,
        )
        return []
    return [JobsService(app, config)]


@wisp.hookimpl
async def wisp_startup(app: wisp.Wisp) -> None:
    # After every service started, so the bot a job talks to is connected.
    config: JobsConfig = app.config.section(JobsConfig)
    if config.embedded_worker and "jobs" in app.services and "discord" in app.services:
        app.services.get("jobs").start_worker()


@wisp.hookimpl
async def wisp_shutdown(app: wisp.Wisp) -> None:
    # Before services stop: running jobs finish (or are released) while the bot is up.
    if "jobs" in app.services:
        await app.services.get("jobs").stop_worker()


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.jobs.cli import COMMANDS

    return COMMANDS
