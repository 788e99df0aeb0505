"""The ``jobs`` service: enqueue jobs and look at them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from loguru import logger

import wisp
from wisp.plugins.jobs.api import Job, JobsBackend, JobStatus, NewJob, dumps_payload
from wisp.plugins.jobs.config import JobsConfig
from wisp.requestid import new_request_id

__all__ = ["JobsService"]


class JobsService(wisp.BaseService):
    """``ctx.service("jobs").enqueue("reminders.fire", {...}, delay=60)``."""

    name = "jobs"

    def __init__(self, app: wisp.Wisp, config: JobsConfig) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.requires: Sequence[str] = (
            ("db", "migrations") if config.backend == "sql" else ("redis",)
        )
        self._backend: JobsBackend | None = None
        self._worker: tuple[asyncio.Event, asyncio.Task[None]] | None = None

    @property
    def backend(self) -> JobsBackend:
        if self._backend is None:
            raise RuntimeError("the jobs service is not started")
        return self._backend

    async def start(self) -> None:
        if self.config.backend == "sql":
            from wisp.plugins.jobs.sqlbackend import SQLBackend

            self._backend = SQLBackend(self.app.services.get("db"))
        else:
            from wisp.plugins.jobs.redisbackend import RedisBackend

            self._backend = RedisBackend(
                self.app.services.get("redis"), prefix=self.config.redis_prefix
            )
        await super().start()

    def start_worker(self) -> None:
        """Run a worker in this process (``[jobs] embedded_worker``) until :meth:`stop_worker`."""
        if self._worker is not None:
            return
        from wisp.plugins.jobs.worker import Worker

        stop = asyncio.Event()
        worker = Worker(self.app, self.backend, self.config)
        self._worker = (stop, asyncio.create_task(worker.run(stop), name="wisp-jobs-embedded"))

    async def stop_worker(self) -> None:
        """Stop the embedded worker gracefully (running jobs get ``shutdown_seconds``)."""
        if self._worker is None:
            return
        stop, task = self._worker
        self._worker = None
        stop.set()
        try:
            await task
        except Exception:
            logger.exception("the embedded jobs worker failed")

    async def stop(self) -> None:
        await self.stop_worker()
        if self._backend is not None:
            await self._backend.close()
            self._backend = None
        await super().stop()

    async def health(self) -> wisp.Health:
        counts = await self.backend.counts()
        shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        return wisp.Health(True, f"{self.config.backend}: {shown or 'no jobs'}")

    async def enqueue(
        self,
        job_type: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        priority: int = 0,
        max_attempts: int | None = None,
        queue: str | None = None,
    ) -> Job:
        """Store a job of ``job_type`` and return it.  With an ``idempotency_key``
        used before, the job stored then is returned and nothing new is made.

        ``payload``: JSON, or an attrs instance (unstructured; a handler whose
        ``payload`` is annotated with the class gets it back).  ``run_at`` or
        ``delay`` (seconds or a timedelta) put it off.  ``queue``,
        ``max_attempts`` default to the handler's ``@wisp.job`` metadata, then
        ``[jobs]``.
        """
        if run_at is not None and delay is not None:
            raise ValueError("give run_at or delay, not both")
        if attrs.has(type(payload)):
            payload = attrs.asdict(payload)
        dumps_payload(payload)  # fails here, naming the problem, not in a worker
        handler = self.app.job_handlers.get(job_type)
        meta = handler.metadata if handler is not None else {}
        if delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else float(delay)
            run_at = datetime.now(UTC) + timedelta(seconds=seconds)
        if run_at is not None and run_at.tzinfo is None:
            raise ValueError("run_at must carry a time zone (datetime.now(UTC), say)")
        attempts = max_attempts or int(meta.get("max_attempts") or self.config.max_attempts)
        if attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        job, _ = await self.backend.enqueue(
            NewJob(
                id=new_request_id(),
                type=job_type,
                payload=payload,
                queue=queue or str(meta.get("queue") or "default"),
                priority=priority,
                max_attempts=attempts,
                run_at=run_at,
                idempotency_key=idempotency_key,
            )
        )
        return job

    async def get(self, job_id: str) -> Job | None:
        return await self.backend.get(job_id)

    async def list(self, **filters: Any) -> list[Job]:
        return await self.backend.list(**filters)

    async def retry(self, job_id: str) -> Job | None:
        return await self.backend.retry(job_id)

    async def purge(self, *, status: JobStatus, older_than: datetime | None = None) -> int:
        return await self.backend.purge(status=status, older_than=older_than)
