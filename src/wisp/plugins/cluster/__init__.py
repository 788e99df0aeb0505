"""Cluster: gateway shard ranges across processes and machines.

Bundled plugin ``cluster``; block it with ``-p no:cluster``.  Off unless
``[cluster]`` is in wisp.toml (or ``wisp run --shards 4-7 --shard-count 16``):
then ``wisp run`` runs one ``AutoShardedBot`` over a range of shards from a
shard plan kept in SQL per generation, owns its range statically or through a
Redis lease, paces IDENTIFYs across processes, and can be resharded without
downtime.  ``wisp cluster status|query|reshard`` looks after it.  See
docs/scaling-out.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.cluster.config import ClusterConfig, parse_range

__all__ = ["ClusterConfig"]

HERE = Path(__file__).parent

WISP_PLUGIN = wisp.PluginMetadata(
    name="cluster",
    description="Gateway shard ranges across processes: shard plans, range leases, "
    "identify pacing, resharding, admin queries.",
    api=">=1.0,<2",
    data="Nothing about users: shard plans, and in Redis leases, heartbeats and event ids "
    "kept for a minute while two generations overlap.",
)

#: What ``wisp run`` was told, once the cluster is on for this run.
run_key = wisp.StashKey[Any]()
#: The cluster service of this run.
service_key = wisp.StashKey[Any]()


@wisp.hookimpl
def wisp_addhooks(pluginmanager: Any) -> None:
    from wisp.plugins.cluster import hookspecs

    pluginmanager.add_hookspecs(hookspecs)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"cluster": ClusterConfig}


@wisp.hookimpl(optionalhook=True)  # the storage plugin may be blocked
def wisp_storage_models() -> Any:
    from wisp.plugins.cluster.models import GenerationRow
    from wisp.plugins.storage.api import ModelSet

    return ModelSet([GenerationRow], HERE / "migrations", branch="cluster")


@wisp.hookimpl
def wisp_cli_arguments(command: str, parser: argparse.ArgumentParser) -> None:
    if command == "run":
        group = parser.add_argument_group("cluster (see docs/scaling-out.md)")
        group.add_argument(
            "--shards", metavar="FIRST-LAST", help="run these shards (inclusive, like 4-7)"
        )
        group.add_argument(
            "--shard-count", type=int, metavar="N", help="total shards (fixes the shard plan)"
        )
        group.add_argument(
            "--generation",
            type=int,
            metavar="G",
            help="join shard generation G (a pending one, while resharding)",
        )


def _enabled(app: wisp.Wisp, config: ClusterConfig, flags: bool) -> bool:
    if config.enabled is not None:
        return config.enabled
    source = app.config.source
    return flags or "cluster" in source.data or "cluster" in source.env_sections()


def _refuse(message: str) -> int:
    print(f"wisp run: {message}", file=sys.stderr)
    return 2


def _check_cli(config: ClusterConfig, shards: str | None, count: int | None) -> str | None:
    """What is wrong with ``--shards``/``--shard-count``, if anything."""
    if count is not None and count < 1:
        return f"--shard-count must be at least 1, not {count}"
    if shards is None:
        return None
    try:
        last = parse_range(shards, "--shards")[1]
    except ValueError as exc:
        return str(exc)
    if config.ordinal is not None or config.ordinal_env:
        return "--shards and [cluster] ordinal/ordinal_env both choose this process's shards"
    total, where = (count, "--shard-count") if count else (config.shard_count, "shard_count")
    if total is not None and last >= total:
        return f"--shards {shards} go beyond {where} {total} (shard ids are 0-{total - 1})"
    return None


@wisp.hookimpl(tryfirst=True)
async def wisp_run(app: wisp.Wisp, args: argparse.Namespace) -> int | None:
    shards: str | None = getattr(args, "shards", None)
    count: int | None = getattr(args, "shard_count", None)
    generation: int | None = getattr(args, "generation", None)
    flags = shards is not None or count is not None or generation is not None
    if getattr(args, "offline", False):
        return (
            _refuse("--shards, --shard-count and --generation need an online run")
            if flags
            else None
        )
    config: ClusterConfig = app.config.section(ClusterConfig)
    if not _enabled(app, config, flags):
        return (
            None
            if not flags
            else _refuse("--shards and friends need the cluster on ([cluster] enabled = false)")
        )
    problem = _check_cli(config, shards, count)
    if problem is None and generation is not None and generation < 1:
        problem = f"--generation must be at least 1, not {generation}"
    for needed in ("discord", "storage"):
        if problem is None and not app.pluginmanager.has_plugin(needed):
            problem = f"the cluster needs the {needed} plugin, which is not loaded"
    if problem is None:
        discord = app.config.section("discord")
        if discord.shard_count is not None or discord.shard_ids is not None:
            problem = (
                "[discord] shard_count/shard_ids and [cluster] both choose shards; with the "
                "cluster on, set them in [cluster] (or with --shards/--shard-count)"
            )
        elif not discord.token:
            problem = "no Discord token: set [discord] token or DISCORD_TOKEN"
    if problem is not None:
        return _refuse(problem)

    import asyncio

    from wisp.plugins.cluster.service import RunOptions, StandbyStopped
    from wisp.plugins.discord import enable

    stop = asyncio.Event()
    app.stash[run_key] = RunOptions(shards, count, generation, stop)
    enable(app, offline=False)
    try:
        await app.serve(stop)
    except wisp.PluginError as exc:
        if isinstance(exc.__cause__, StandbyStopped):
            logger.info("cluster: stopped while standing by")
            return 0
        raise
    service = app.stash.get(service_key, None)
    return service.exit_code if service is not None else 0


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    options = app.stash.get(run_key, None)
    if options is None:
        return []  # only `wisp run` with the cluster on runs shards
    from wisp.plugins.cluster.service import ClusterService

    service = ClusterService(app, app.config.section(ClusterConfig), options)
    app.stash[service_key] = service
    return [service]


@wisp.hookimpl(optionalhook=True)  # the discord plugin adds this hook
def wisp_discord_client_options(app: wisp.Wisp) -> Mapping[str, Any] | None:
    service = app.stash.get(service_key, None)
    if service is None or not service.shards:
        return None
    result: Mapping[str, Any] = service.client_options()
    return result


@wisp.hookimpl(optionalhook=True)
def wisp_discord_client_created(app: wisp.Wisp, client: Any) -> None:
    service = app.stash.get(service_key, None)
    if service is None or not service.shards:
        return
    discord = app.services.get("discord") if "discord" in app.services else None
    service.attach(client, discord)


@wisp.hookimpl(optionalhook=True)  # the jobs plugin adds this hook
def wisp_job_queues(app: wisp.Wisp) -> Sequence[str] | None:
    service = app.stash.get(service_key, None)
    if service is None or not service.shards:
        return None
    from wisp.plugins.cluster.api import shard_queue

    return [shard_queue(s) for s in service.shards]


@wisp.hookimpl
def wisp_cluster_queries(app: wisp.Wisp) -> Mapping[str, Any]:
    from wisp.plugins.cluster.service import query_functions

    return query_functions(app)


@wisp.hookimpl(tryfirst=True)
async def wisp_shutdown(app: wisp.Wisp) -> None:
    # Before anything else stops (jobs may take their time): shards, then the lease.
    service = app.stash.get(service_key, None)
    if service is not None and service.started:
        await service.shutdown()


@wisp.hookimpl
def wisp_cli_commands() -> Sequence[wisp.CliCommand]:
    from wisp.plugins.cluster.cli import COMMANDS

    return COMMANDS
