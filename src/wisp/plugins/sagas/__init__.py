"""Sagas: durable multi-step workflows with compensation, journaled in the
database or in Redis, run on job workers (or inline), recovered after crashes.

Bundled plugin ``sagas``; block it with ``-p no:sagas``.  Plugins declare
sagas with ``wisp_sagas`` (see :mod:`wisp.plugins.sagas.api`), code starts
them with ``await ctx.service("sagas").start("order", {...}, key=...)``,
``wisp sagas list|show|resume|compensate|retry|recover`` looks after them and
``/sagas show`` shows one to admins (capability ``sagas.view``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.sagas import hookspecs
from wisp.plugins.sagas.api import SagaDefinition, as_definitions
from wisp.plugins.sagas.config import SagasConfig
from wisp.plugins.sagas.service import CLAIMED, CLEANUP_JOB, RECOVER_JOB, RUN_JOB, SagasService

__all__ = ["SagasConfig", "SagasService"]

HERE = Path(__file__).parent


WISP_PLUGIN = wisp.PluginMetadata(
    name="sagas",
    description="Durable sagas with compensation on SQL or Redis: wisp sagas, /sagas show.",
    api=">=1.0,<2",
    commands=("sagas show",),
    capabilities=("sagas.view",),
    data="Saga runs: their input and each step's output, as the defining plugins write "
    "them (those plugins state what); finished runs are deleted after retention_hours.",
)


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"sagas": SagasConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked (Redis journal)
def wisp_storage_models() -> Any:
    from wisp.plugins.sagas.models import SagaRunRow
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([SagaRunRow], HERE / "migrations", branch="sagas")


def collect_definitions(app: wisp.Wisp) -> dict[str, SagaDefinition]:
    """Every plugin's ``wisp_sagas``; a name declared twice names both plugins."""
    found: dict[str, tuple[str, SagaDefinition]] = {}
    for plugin, result in app.pluginmanager.results("wisp_sagas", app=app):
        for definition in as_definitions(list(result), plugin):
            if definition.name in found:
                raise wisp.PluginError(
                    f"saga {definition.name!r} is declared twice: by plugin "
                    f"{found[definition.name][0]!r} and by plugin {plugin!r}"
                )
            found[definition.name] = (plugin, definition)
    return {name: d for name, (_, d) in found.items()}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[Any]:
    config: SagasConfig = app.config.section(SagasConfig)
    needs = "storage" if config.backend == "sql" else "redis"
    if not app.pluginmanager.has_plugin(needs):
        # Blocking storage (or redis) must leave the rest of the bot working.
        logger.warning(
            "sagas are off: [sagas] backend = {!r} needs the {} plugin, which is not loaded",
            config.backend,
            needs,
        )
        return []
    return [SagasService(app, config, collect_definitions(app))]


async def _run_saga(ctx: wisp.WispContext, payload: Any) -> Any:
    """Job ``sagas.run``: drive one run (re-entered as a ``saga`` invocation)."""
    if "sagas" not in ctx.app.services:
        return "sagas are off"
    service: SagasService = ctx.service("sagas")
    run_id = str(payload["run_id"])
    if ctx.invocation_type is wisp.InvocationType.SAGA:
        claimed = ctx.stash.get(CLAIMED, None)
        run = await service.engine.claim_and_drive(run_id, ctx, claimed=claimed)
        return None if run is None else run.status.value
    outcome = await service.execute(run_id, job_id=ctx.job_id)
    if outcome.error is not None:
        raise outcome.error
    return outcome.value


async def _recover_sagas(ctx: wisp.WispContext, payload: Any) -> Any:
    """Job ``sagas.recover`` (scheduled): a recovery scan."""
    if "sagas" not in ctx.app.services:
        return "sagas are off"
    return await ctx.service("sagas").recover()


async def _cleanup_sagas(ctx: wisp.WispContext, payload: Any) -> Any:
    """Job ``sagas.cleanup`` (scheduled): delete finished runs past the retention."""
    if "sagas" not in ctx.app.services:
        return "sagas are off"
    service: SagasService = ctx.service("sagas")
    cutoff = datetime.now(UTC) - timedelta(hours=service.config.retention_hours)
    return await service.purge(cutoff)


@wisp.hookimpl
def wisp_job_handlers(app: wisp.Wisp) -> Mapping[str, Any]:
    return {RUN_JOB: _run_saga, RECOVER_JOB: _recover_sagas, CLEANUP_JOB: _cleanup_sagas}


@wisp.hookimpl(optionalhook=True)  # the jobs plugin may be blocked
def wisp_job_schedules(app: wisp.Wisp) -> Sequence[Any]:
    from wisp.plugins.jobs.schedule import Schedule

    config: SagasConfig = app.config.section(SagasConfig)
    if not config.use_jobs:
        return []
    return [
        Schedule("sagas.recover", RECOVER_JOB, every=config.recovery_seconds, catch_up=0),
        Schedule("sagas.cleanup", CLEANUP_JOB, every=3600, catch_up=1),
    ]


@wisp.hookimpl
def wisp_capabilities() -> list[wisp.Capability]:
    return [wisp.Capability("sagas.view", "See saga runs and their history.", "deny")]


@wisp.hookimpl
def wisp_commands() -> list[wisp.Command]:
    from wisp.plugins.sagas.commands import COMMANDS

    return COMMANDS


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.sagas.cli import COMMANDS

    return COMMANDS
