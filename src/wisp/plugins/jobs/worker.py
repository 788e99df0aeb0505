"""A worker: claims due jobs, runs them through the pipeline, renews their
leases, retries failures with backoff, dead-letters the hopeless, and stops
gracefully.

Delivery is at least once: a job runs again when its worker dies (its lease
expires) or loses its lease while still running (a stall longer than the
lease); handlers whose side effects must happen once make them idempotent
(``ctx.job_id`` and ``ctx.attempt`` say which run this is).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from loguru import logger

from wisp.plugins.jobs.api import Job, JobsBackend
from wisp.plugins.jobs.config import JobsConfig
from wisp.plugins.jobs.schedule import Schedule, Scheduler, collect_schedules
from wisp.plugins.metrics.api import record_outcome
from wisp.tasks import cancel_and_wait

__all__ = ["Worker", "backoff_seconds", "worker_name"]


def worker_name() -> str:
    """``host:pid:random``: unique per process, readable in ``wisp jobs show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


def backoff_seconds(config: JobsConfig, attempt: int, rand: Any = random.random) -> float:
    """Full-jitter exponential backoff after failed attempt ``attempt`` (1 first)."""
    ceiling = min(config.max_backoff_seconds, config.backoff_seconds * 2 ** (attempt - 1))
    return float(rand() * ceiling)


def _consume(done: asyncio.Future[bool]) -> None:
    """Retrieve an outcome nobody awaits any more (no "never retrieved" warning)."""
    if not done.cancelled():
        done.exception()


def _jsonable(value: Any) -> Any:
    if attrs.has(type(value)):
        return attrs.asdict(value)
    return value


class Worker:
    """Runs jobs of the handlers ``app`` knows from ``queues``, ``concurrency`` at once."""

    def __init__(
        self,
        app: Any,
        backend: JobsBackend,
        config: JobsConfig,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        name: str | None = None,
    ) -> None:
        self.app = app
        self.backend = backend
        self.config = config
        self.queues = list(queues or config.queues)
        for _, extra in app.pluginmanager.results("wisp_job_queues", app=app):
            self.queues.extend(q for q in extra if q not in self.queues)
        self.concurrency = concurrency or config.concurrency
        self.name = name or worker_name()
        self.running: dict[str, tuple[Job, asyncio.Task[None]]] = {}
        self.completed = self.failed = self.dead = self.lost = 0
        #: Runs started so far (a change means "not idle").
        self.started = 0
        self._wake = asyncio.Event()
        self._completions: list[tuple[str, str, Any, asyncio.Future[bool]]] = []
        self._recorder: asyncio.Task[None] | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Work until ``stop`` is set, then shut down gracefully."""
        types = sorted(self.app.job_handlers)
        schedules: list[Schedule] = []
        if self.config.scheduler:
            schedules = collect_schedules(self.app)  # a bad schedule stops the worker here
        if not types:
            logger.warning("worker {}: no job handlers are registered; nothing to run", self.name)
        logger.info(
            "worker {} started: queues {}, concurrency {}, job types {}",
            self.name,
            ",".join(self.queues),
            self.concurrency,
            ",".join(types) or "none",
        )
        helpers = [
            asyncio.create_task(self._heartbeats(), name="wisp-jobs-heartbeat"),
            asyncio.create_task(self._notifications(), name="wisp-jobs-notify"),
            asyncio.create_task(self._stop_on(stop), name="wisp-jobs-stop"),
        ]
        if schedules:
            scheduler = Scheduler(self.app.services.get("jobs"), schedules)
            helpers.append(asyncio.create_task(scheduler.run(stop), name="wisp-jobs-scheduler"))
        try:
            while not stop.is_set():
                free = self.concurrency - len(self.running)
                if free > 0 and types:
                    try:
                        jobs = await self.backend.claim(
                            self.name, self.queues, types, free, self.config.lease_seconds
                        )
                    except Exception as exc:
                        logger.warning("worker {}: cannot claim jobs: {}", self.name, exc)
                        jobs = []
                    for job in jobs:
                        self._start(job)
                    if len(jobs) == free:
                        continue  # more may be due: look again at once
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.poll_seconds):
                        await self._wake.wait()
        finally:
            await self._shutdown()
            if self._recorder is not None:  # outcomes still being written
                await asyncio.wait([self._recorder])
            await cancel_and_wait(*helpers)
            logger.info(
                "worker {} stopped: {} completed, {} failed, {} dead-lettered",
                self.name,
                self.completed,
                self.failed,
                self.dead,
            )

    async def _stop_on(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._wake.set()

    async def _notifications(self) -> None:
        while True:
            try:
                await self.backend.wait_for_work(self.config.poll_seconds)
            except Exception as exc:
                logger.warning("worker {}: waiting for work failed: {}", self.name, exc)
                await asyncio.sleep(self.config.poll_seconds)
            self._wake.set()

    def _start(self, job: Job) -> None:
        self.started += 1
        task = asyncio.create_task(self._run_one(job), name=f"wisp-job-{job.id}")
        self.running[job.id] = (job, task)

        def done(_: asyncio.Task[None]) -> None:
            self.running.pop(job.id, None)
            self._wake.set()

        task.add_done_callback(done)

    async def _run_one(self, job: Job) -> None:
        token = job.lease_token or ""
        handler = self.app.job_handlers[job.type]
        timeout = handler.metadata.get("timeout")
        try:
            async with asyncio.timeout(float(timeout) if timeout else None):
                outcome = await self.app.run_job(
                    job.type, job.payload, job_id=job.id, attempt=job.attempts
                )
        except TimeoutError:
            error: BaseException | None = TimeoutError(f"job ran longer than {timeout}s")
            value = None
        else:
            error, value = outcome.error, outcome.value
        try:
            if error is None:
                if await self._complete(job.id, token, _jsonable(value)):
                    self.completed += 1
                else:
                    self._lost(job, "completing")
                return
            text = "".join(traceback.format_exception_only(error)).strip()
            max_attempts = int(handler.metadata.get("max_attempts") or job.max_attempts)
            if job.attempts >= max_attempts:
                if await self.backend.fail(job.id, token, text, None):
                    self.dead += 1
                    record_outcome(self.app, "wisp.jobs", job.type, "dead_lettered")
                    logger.error(
                        "job {} ({}) dead-lettered after {} attempts: {}",
                        job.id,
                        job.type,
                        job.attempts,
                        text,
                    )
                else:
                    self._lost(job, "dead-lettering")
                return
            delay = backoff_seconds(self.config, job.attempts)
            retry_at = datetime.now(UTC) + timedelta(seconds=delay)
            if await self.backend.fail(job.id, token, text, retry_at):
                self.failed += 1
                record_outcome(self.app, "wisp.jobs", job.type, "retried")
                logger.warning(
                    "job {} ({}) attempt {} of {} failed, retrying in {:.1f}s: {}",
                    job.id,
                    job.type,
                    job.attempts,
                    max_attempts,
                    delay,
                    text,
                )
            else:
                self._lost(job, "recording its failure")
        except Exception as exc:  # the store is down: the lease will lapse, it runs again
            logger.error("job {} ({}): cannot record its outcome: {}", job.id, job.type, exc)

    async def _complete(self, job_id: str, token: str, value: Any) -> bool:
        """Record a success, grouped with the others that finish meanwhile: one
        write per batch instead of one per job (a group commit).  Under light
        load a batch is one job and costs no wait."""
        done = asyncio.get_running_loop().create_future()
        self._completions.append((job_id, token, value, done))
        if self._recorder is None:
            self._recorder = asyncio.create_task(self._record(), name="wisp-jobs-complete")
        try:
            return await asyncio.shield(done)  # a cancelled job still has its outcome written
        except asyncio.CancelledError:
            done.add_done_callback(_consume)
            raise

    async def _record(self) -> None:
        try:
            while self._completions:
                batch, self._completions = self._completions, []
                try:
                    kept = await self.backend.complete_many(
                        [(job_id, token, value) for job_id, token, value, _ in batch]
                    )
                except Exception as exc:
                    for *_, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                    continue
                for job_id, _, _, done in batch:
                    if not done.done():
                        done.set_result(job_id in kept)
        finally:
            self._recorder = None

    def _lost(self, job: Job, doing: str) -> None:
        self.lost += 1
        record_outcome(self.app, "wisp.jobs", job.type, "lease_lost")
        logger.warning(
            "job {} ({}): lease lost before {} (another worker took it over); "
            "this run's outcome is dropped",
            job.id,
            job.type,
            doing,
        )

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            leases = {jid: job.lease_token or "" for jid, (job, _) in self.running.items()}
            if not leases:
                continue
            try:
                kept = await self.backend.heartbeat(self.name, leases, self.config.lease_seconds)
            except Exception as exc:
                logger.warning("worker {}: heartbeat failed: {}", self.name, exc)
                continue
            # Jobs that finished while the heartbeat ran released their lease.
            for jid in (set(leases) - kept) & set(self.running):
                logger.warning("job {}: lease lost (it may run elsewhere now)", jid)

    async def _shutdown(self) -> None:
        """Let running jobs finish for ``shutdown_seconds``, then cancel and release them."""
        if not self.running:
            return
        logger.info(
            "worker {} stopping: waiting up to {}s for {} running job(s)",
            self.name,
            self.config.shutdown_seconds,
            len(self.running),
        )
        deadline = time.monotonic() + self.config.shutdown_seconds
        tasks = [task for _, task in self.running.values()]
        await asyncio.wait(tasks, timeout=max(0.0, deadline - time.monotonic()))
        leftover = list(self.running.values())
        for _, task in leftover:
            task.cancel()
        for job, task in leftover:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            try:
                if await self.backend.release(job.id, job.lease_token or ""):
                    logger.info("job {} ({}) released for another worker", job.id, job.type)
            except Exception as exc:
                logger.error("job {}: cannot release it ({}); its lease will lapse", job.id, exc)
