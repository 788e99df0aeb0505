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
