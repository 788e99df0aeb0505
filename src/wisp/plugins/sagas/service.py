"""The ``sagas`` service: start runs, dispatch them, recover lost ones, look at them."""

from __future__ import annotations

import asyncio
import os
import random
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any, overload

from loguru import logger

import wisp
from wisp.context import InvocationType
from wisp.plugins.sagas.api import (
    DefinitionChanged,
    Run,
    RunStatus,
    SagaDefinition,
    SagaJournal,
    dumps_json,
    new_run,
)
from wisp.plugins.sagas.config import SagasConfig
from wisp.plugins.sagas.engine import Counters, Engine, check_definition, start_intent
from wisp.requestid import new_request_id

__all__ = ["CLAIMED", "CLEANUP_JOB", "RECOVER_JOB", "RUN_JOB", "SagasService"]

#: The job types the plugin registers (``wisp_job_handlers``).
RUN_JOB = "sagas.run"
RECOVER_JOB = "sagas.recover"
CLEANUP_JOB = "sagas.cleanup"

#: A run this process claimed already, handed to the ``sagas.run`` handler.
CLAIMED = wisp.StashKey[Run]()

#: Runs one recovery scan takes at most (the next scan takes the rest).
SCAN_LIMIT = 500


def owner_name() -> str:
    """``host:pid:random``: unique per process, readable in ``wisp sagas show``."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(24):06x}"


class SagasService:
    """``await app.services.get("sagas").start("order", {...}, key=...)`` -> run id.

    Not a :class:`wisp.BaseService` subclass only because its ``start`` also
    starts runs: called without a saga name it is the service's own start.
    """

    name = "sagas"
    after = ("jobs", "resilience")

    def __init__(
        self, app: wisp.Wisp, config: SagasConfig, definitions: dict[str, SagaDefinition]
    ) -> None:
        self.app = app
        self.config = config
        self.definitions = definitions
        self.requires: Sequence[str] = (
            ("db", "migrations") if config.backend == "sql" else ("redis",)
        )
        self.started = False
        self.counters = Counters()
        self.owner = owner_name()
        self._journal: SagaJournal | None = None
        self._engine: Engine | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._scanner: asyncio.Task[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def journal(self) -> SagaJournal:
        if self._journal is None:
            raise RuntimeError("the sagas service is not started")
        return self._journal

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the sagas service is not started")
        return self._engine

    @property
    def on_jobs(self) -> bool:
        """Whether runs go to job workers (else they run inline, in this process)."""
        return self.config.use_jobs and "jobs" in self.app.services

    @overload
    async def start(self) -> None: ...

    @overload
    async def start(self, name: str, input: Any = None, *, key: str | None = None) -> str: ...

    async def start(
        self, name: str | None = None, input: Any = None, *, key: str | None = None
    ) -> str | None:
        """Start a run of saga ``name`` on ``input`` (JSON) and return its id at
        once; the run goes on in a job worker (or in the background here when
        the jobs plugin is off).  A ``key`` used before returns that run's id
        and starts nothing.  Without arguments: start the service."""
        if name is None:
            await self._start_service()
            return None
        return await self.start_run(name, input, key=key)

    async def _start_service(self) -> None:
        if self.config.backend == "sql":
            from wisp.plugins.sagas.sqljournal import SQLJournal

            self._journal = SQLJournal(
                self.app.services.get("db"), sync_progress=self.config.sync_progress
            )
        else:
            from wisp.plugins.sagas.redisjournal import RedisJournal

            client = self.app.services.get("redis").client
            self._journal = RedisJournal(client, prefix=self.config.redis_prefix)
        self._engine = Engine(
            self.app,
            self._journal,
            self.config,
            self.definitions,
            self.owner,
            counters=self.counters,
            notify=self._notify,
        )
        self.started = True
        if not self.on_jobs:
            why = "[sagas] use_jobs = false" if not self.config.use_jobs else "jobs is off"
            logger.info("sagas run inline in this process ({})", why)
            self._scanner = asyncio.create_task(self._scan_forever(), name="wisp-sagas-recovery")
        else:
            try:
                await self.recover()
            except Exception as exc:  # the store's trouble must not stop the bot
                logger.warning("sagas: recovery scan at start-up failed: {}", exc)

    async def stop(self) -> None:
        await self.stop_scanning()
        await wisp.cancel_and_wait(*self._tasks)
        if self._journal is not None:
            await self._journal.close()
        self.started = False

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        counts = await self.journal.counts()
        shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        mode = "job workers" if self.on_jobs else "inline"
        detail = f"{self.config.backend}, {mode}: {shown or 'no runs'}"
        if counts.get(RunStatus.NEEDS_ATTENTION.value):
            # Healthy still (the engine works), but say where a person must look.
            detail += " (see wisp sagas list --status needs_attention)"
        return wisp.Health(True, detail)

    def _notify(self, run: Run, step: str | None, event: str) -> None:
        self.app.hook.wisp_saga_transition(app=self.app, run=run, step=step, event=event)

    # -- runs -----------------------------------------------------------------------------

    async def start_run(self, name: str, input: Any = None, *, key: str | None = None) -> str:
        definition = self.definitions.get(name)
        if definition is None:
            known = ", ".join(sorted(self.definitions)) or "none"
            raise KeyError(f"no saga {name!r} (known: {known})")
        dumps_json(input, f"the input of saga {name!r}")
        if key is not None and (not isinstance(key, str) or not key or len(key) > 200):
            raise ValueError(f"saga {name!r}: key must be a non-empty string of at most 200")
        # Inline, this process drives the run: it is stored claimed already,
        # with its first step's intent (one write fewer).
        owner = None if self.on_jobs else self.owner
        run = new_run(definition, new_request_id(), input, key)
        if owner is not None:
            start_intent(run.steps[0], definition.steps[0])
        run, created = await self.journal.create(run, self.config.lease_seconds, owner)
        if created:
            run.intent_stored = owner is not None
            self.counters.started += 1
            await self._dispatch(run, claimed=owner is not None)
        return run.id

    async def _dispatch(self, run: Run, *, claimed: bool = False) -> None:
        if self.on_jobs:
            # One job per lease generation: every claim rotates the token, so a
            # run that needs picking up again gets a new job, and scanners that
            # race over the same lapsed lease enqueue it once.
            await self.app.services.get("jobs").enqueue(
                RUN_JOB,
                {"run_id": run.id},
                idempotency_key=f"saga:{run.id}:{run.token or 'new'}",
                max_attempts=3,
            )
            return
        task = asyncio.create_task(
            self.execute(run.id, claimed=run if claimed else None), name=f"wisp-saga-{run.id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def execute(
        self, run_id: str, *, job_id: str | None = None, claimed: Run | None = None
    ) -> wisp.Outcome:
        """Claim and drive ``run_id`` here (``claimed``: the run, claimed by this
        process already), through the pipeline with a context of type ``saga``
        whose request id is the run id."""
        target = self.app.job_handlers[RUN_JOB]
        ctx = await self.app.make_context(InvocationType.SAGA, RUN_JOB, target=target)
        ctx.request_id = run_id
        ctx.job_id = job_id
        ctx.options = {"payload": {"run_id": run_id}}
        if claimed is not None:
            ctx.stash[CLAIMED] = claimed
        return await self.app.invoke(ctx)

    async def recover(self) -> int:
        """One recovery scan: runs whose owner was lost (lease lapsed, or never
        picked up) are dispatched again; runs whose definition changed are
        refused and logged.  Returns how many were dispatched."""
        dispatched = 0
        for run in await self.journal.expired(SCAN_LIMIT):
            try:
                check_definition(run, self.definitions)
            except DefinitionChanged as exc:
                self.counters.refused += 1
                logger.error("saga recovery refused a run: {}", exc)
                continue
            logger.info(
                "saga {} run {} ({}): owner {} lost; recovering it",
                run.saga,
                run.id,
                run.status.value,
                run.owner or "none",
            )
            await self._dispatch(run)
            dispatched += 1
        return dispatched

    async def _scan_forever(self) -> None:
        # The first scan waits a moment: a short-lived process (a CLI command)
        # is gone by then instead of taking runs over it cannot finish, and
        # the previous process's leases have had time to lapse.
        await asyncio.sleep(min(self.config.recovery_seconds, self.config.lease_seconds))
        while True:
            try:
                await self.recover()
            except Exception as exc:
                logger.warning("sagas: recovery scan failed: {}", exc)
            await asyncio.sleep(self.config.recovery_seconds)

    async def stop_scanning(self) -> None:
        """Stop this process's periodic recovery scan (inline mode); CLI commands
        that act on one run do, so that no scan takes runs meanwhile."""
        await wisp.cancel_and_wait(self._scanner)
        self._scanner = None

    async def drain(self) -> None:
        """Wait for the runs this process drives inline to end."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def wait(self, run_id: str, *, poll: float = 0.05, timeout: float = 60.0) -> Run:
        """Wait until ``run_id`` is terminal (tests, scripts); TimeoutError otherwise."""
        async with asyncio.timeout(timeout):
            while True:
                run = await self.journal.get(run_id)
                if run is None:
                    raise KeyError(f"no saga run {run_id!r}")
                if run.terminal:
                    return run
                await asyncio.sleep(poll)

    async def get(self, run_id: str) -> Run | None:
        return await self.journal.get(run_id)

    async def list(
        self, *, status: RunStatus | None = None, saga: str | None = None, limit: int = 100
    ) -> list[Run]:
        return await self.journal.list(status=status, saga=saga, limit=limit)

    async def compensate(self, run_id: str) -> Run | None:
        """Ask a non-terminal run to compensate: its owner does at its next step
        boundary; a run nobody holds is claimed and compensated here."""
        run = await self.journal.request_compensation(run_id)
        if run is None or run.terminal:
            return run
        await self.execute(run_id)
        return await self.journal.get(run_id)

    async def resume(self, run_id: str) -> Run | None:
        """Drive a non-terminal run here now, if nobody holds its lease."""
        await self.execute(run_id)
        return await self.journal.get(run_id)

    async def retry(self, run_id: str) -> str:
        """Start a new run of a compensated (or needs_attention) run's saga and
        input; the old run stays as it ended.  Returns the new run's id."""
        run = await self.journal.get(run_id)
        if run is None:
            raise KeyError(f"no saga run {run_id!r}")
        if run.status not in (RunStatus.COMPENSATED, RunStatus.NEEDS_ATTENTION):
            raise ValueError(
                f"run {run_id} is {run.status.value}; only compensated or needs_attention "
                "runs are retried (as a new run)"
            )
        return await self.start_run(run.saga, run.input)

    async def purge(self, older_than: datetime) -> int:
        return await self.journal.purge(older_than)
