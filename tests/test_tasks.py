"""wisp.cancel_and_wait: a stop that awaits a background task always returns."""

from __future__ import annotations

import asyncio

import wisp


async def _swallows_one_cancel(trail: list[str]) -> None:
    """What a redis-py call does on Python 3.11 when the cancel lands inside
    ``asyncio.wait_for`` as the wrapped call finishes: the cancel is lost."""
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        trail.append("first cancel lost")
    try:
        await asyncio.sleep(3600)  # the listener's next read
    except asyncio.CancelledError:
        trail.append("second cancel taken")
        raise


async def test_a_lost_cancellation_is_sent_again() -> None:
    trail: list[str] = []
    task = asyncio.create_task(_swallows_one_cancel(trail))
    await asyncio.sleep(0)
    # The plain pattern hangs on such a task: it is still running after the cancel.
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done and trail == ["first cancel lost"]
    await asyncio.wait_for(wisp.cancel_and_wait(task, again_after=0.05), 5)
    assert task.cancelled()
    assert trail == ["first cancel lost", "second cancel taken"]


async def test_several_tasks_none_and_finished_ones(log_lines) -> None:
    async def fails() -> None:
        raise RuntimeError("listener broke")

    async def sleeps() -> None:
        await asyncio.sleep(3600)

    broken = asyncio.create_task(fails(), name="wisp test listener")
    sleeping = asyncio.create_task(sleeps())
    finished = asyncio.create_task(asyncio.sleep(0))
    await asyncio.sleep(0.01)
    await asyncio.wait_for(wisp.cancel_and_wait(None, broken, sleeping, finished), 5)
    assert sleeping.cancelled() and not broken.cancelled() and not finished.cancelled()
    warnings = [r["message"] for r in log_lines if r["level"] == "WARNING"]
    assert warnings == [
        "background task wisp test listener had failed before it was stopped: "
        "RuntimeError('listener broke')"
    ]


async def test_the_callers_own_cancellation_propagates() -> None:
    trail: list[str] = []
    task = asyncio.create_task(_swallows_one_cancel(trail))
    await asyncio.sleep(0)
    stopper = asyncio.create_task(wisp.cancel_and_wait(task, again_after=3600))
    await asyncio.sleep(0.05)
    stopper.cancel()
    done, _ = await asyncio.wait({stopper}, timeout=5)
    assert stopper in done and stopper.cancelled()
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
