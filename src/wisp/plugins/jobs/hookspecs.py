"""Hooks the jobs plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp


@hookspec
def wisp_job_schedules(app: Wisp) -> Sequence[Any] | None:
    """Return recurring jobs: ``wisp.plugins.jobs.schedule.Schedule`` records.

    A schedule enqueues one job of its type per firing (interval or cron),
    exactly once however many workers run the scheduler.

    :param app: The application.

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_job_queues(app: Wisp) -> Sequence[str] | None:
    """Return more queues for this process's workers to take jobs from.

    Added to ``[jobs] queues`` (or ``--queues``) when a worker starts: the
    cluster plugin returns ``shard:N`` for the shards this process owns, so a
    job enqueued for a shard runs only on that shard's owner.

    :param app: The application.

    ``wispconf.py`` files: all.
    """
