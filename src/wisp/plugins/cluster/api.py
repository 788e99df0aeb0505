"""What other plugins and bot code import from the cluster plugin.

Importing this module never registers the plugin (blocking it leaves this
import working).  Jobs that need a shard's state go to the queue of that
shard, ``shard:N``, which only the process owning shard N consumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["ClusterError", "enqueue_for_guild", "enqueue_for_shard", "shard_of", "shard_queue"]


class ClusterError(Exception):
    """The cluster cannot run as configured; the message names the culprit."""


def shard_of(guild_id: int, shard_count: int) -> int:
    """The shard Discord delivers ``guild_id``'s events on: ``(id >> 22) % count``."""
    return (int(guild_id) >> 22) % shard_count


def shard_queue(shard_id: int) -> str:
    """The jobs queue of one shard, consumed only by that shard's owner."""
    return f"shard:{shard_id}"


async def enqueue_for_shard(
    app: Wisp, shard_id: int, job_type: str, payload: Any = None, **kwargs: Any
) -> Any:
    """Enqueue a job that runs only on the process that owns ``shard_id``."""
    return await app.services.get("jobs").enqueue(
        job_type, payload, queue=shard_queue(shard_id), **kwargs
    )


async def enqueue_for_guild(
    app: Wisp, guild_id: int, job_type: str, payload: Any = None, **kwargs: Any
) -> Any:
    """Enqueue a job for the owner of ``guild_id``'s shard in the active generation."""
    from wisp.plugins.cluster.plan import get_plan

    plan = await get_plan(app.services.get("db"))
    if plan is None:
        raise ClusterError("no active shard generation: start `wisp run` with [cluster] first")
    return await enqueue_for_shard(
        app, shard_of(guild_id, plan.shard_count), job_type, payload, **kwargs
    )
