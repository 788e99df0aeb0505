"""Stopping background tasks: cancel, and make sure the cancellation took.

``task.cancel(); await task`` is not enough on Python 3.11: ``asyncio.wait_for``
drops a cancellation that arrives just as the call it wraps finishes
(CPython gh-86296, fixed in 3.12).  redis-py sends commands through
``wait_for`` when a socket timeout is set, so a listener cancelled at that
moment carries on into its next read, and a service stop that awaits it never
returns.  :func:`cancel_and_wait` cancels again until the task has finished.
"""

from __future__ import annotations

import asyncio
from typing import Any

from loguru import logger

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None, again_after: float = 1.0) -> None:
    """Cancel ``tasks`` (``None`` entries are skipped) and return once all are done.

    A task still running ``again_after`` seconds after a cancel is cancelled
    again, so keep a cancelled task's own clean-up shorter than that.  What the
    tasks returned or raised is discarded; an error other than the
    cancellation is logged with the task's name.  If the caller is cancelled
    while waiting, that cancellation propagates as usual.
    """
    waiting = {task for task in tasks if task is not None and not task.done()}
    for task in waiting:
        task.cancel()
    while waiting:
        _, waiting = await asyncio.wait(waiting, timeout=again_after)
        for task in waiting:
            logger.debug("cancelling {!r} again: the first cancellation was lost", task)
            task.cancel()
    for finished in tasks:
        if finished is None or finished.cancelled():
            continue
        error = finished.exception()
        if error is not None:
            name = finished.get_name() if isinstance(finished, asyncio.Task) else repr(finished)
            logger.opt(exception=error).warning(
                "background task {} had failed before it was stopped: {!r}", name, error
            )
