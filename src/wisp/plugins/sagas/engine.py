"""The saga engine: claims a run, drives it forward or back, journaling each
step before and after its side effect.

One owner at a time holds a run, through a lease in the journal that its
heartbeat renews; a claim rotates the token, and every journal write names
the token, so an owner that stalled past its lease (and was replaced) has its
next write refused and stops there, without compensating: the new owner
carries the run on.  Nothing is held across a step's side effect: no
transaction, no row lock.

Forward: the first step not completed runs (its intent and attempt are
journaled first, then its output or error); completed steps are never run
again, their stored outputs are handed to later steps.  A step's outcome
rides on the next write (the next step's intent, or the run's end): both are
durable before the next side effect, in one round trip.  A step that fails
retries with backoff (the next attempt's time is journaled) until its
attempts are spent; then the run compensates: the compensations of the
completed steps run in reverse order, each retried, a failing one not
stopping the others, each journaled as done once it succeeded so it never
runs again.  The run ends completed, compensated, or needs_attention.

Blame by isolation: a process that dies mid-step leaves the step journaled
``running``, and every step then in flight in it looks the same, so the
journal cannot say which one killed it.  The first interruption of an
attempt that ran beside others is not counted: it makes the step *suspect*.
A suspect step's attempts run alone in their process (:class:`AttemptLock`,
journaled at the intent as ``exclusive``), so their interruptions are the
step's own and count against ``[sagas] max_interruptions``: a step that kills
its process every time gives up after 1 + max_interruptions attempts, and a
healthy step beside it is never blamed for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import traceback
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from wisp.plugins.sagas.api import (
    CompStatus,
    DefinitionChanged,
    LeaseLost,
    Run,
    RunStatus,
    SagaDefinition,
    SagaJournal,
    Step,
    StepContext,
    StepRecord,
    StepStatus,
    dumps_json,
    step_key,
)
from wisp.plugins.sagas.config import SagasConfig
from wisp.tasks import cancel_and_wait

if TYPE_CHECKING:
    from wisp.context import WispContext

__all__ = ["AttemptLock", "Counters", "Engine", "check_definition", "start_intent"]


class Counters:
    """What this process saw happen (the journal has the totals)."""

    def __init__(self) -> None:
        self.started = 0
        self.completed = 0
        self.compensated = 0
        self.needs_attention = 0
        self.step_retries = 0
        self.refused = 0
        self.lost = 0
        #: Interruptions found by recovery: counted against max_interruptions,
        #: or not counted (the step ran beside others; it became suspect).
        self.interruptions = 0
        self.suspects = 0
        #: Attempts whose wait for ``[sagas] exclusive_wait`` expired, so they
        #: ran beside attempts they should have waited for.
        self.exclusive_waits_expired = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def check_definition(run: Run, definitions: dict[str, SagaDefinition]) -> None:
    """Raise :class:`DefinitionChanged` unless ``run`` fits the definition here."""
    definition = definitions.get(run.saga)
    if definition is None:
        known = ", ".join(sorted(definitions)) or "none"
        raise DefinitionChanged(
            f"run {run.id}: no saga {run.saga!r} is declared in this process (known: {known})"
        )
    if definition.version != run.version:
        raise DefinitionChanged(
            f"run {run.id}: saga {run.saga!r} is version {definition.version} here but the "
            f"run was started at version {run.version}; run it with a process that has "
            "that version, or resolve it by hand"
        )
    recorded = [s.name for s in run.steps]
    if recorded != definition.step_names:
        raise DefinitionChanged(
            f"run {run.id}: saga {run.saga!r} version {run.version} has steps "
            f"{definition.step_names} here but the run recorded {recorded}; a change of "
            "steps needs a new version"
        )


def start_intent(record: StepRecord, step: Step) -> None:
    """Make ``record`` say an attempt of ``step`` begins now (its intent)."""
    record.status = StepStatus.RUNNING
    record.attempts += 1
    record.started_at = time.time()
    record.deadline = record.started_at + step.timeout if step.timeout else None
    record.wake_at = None


class AttemptLock:
    """Which step attempts may run now in this process: shared (any number of
    normal attempts at once) or exclusive (a suspect step's attempt, alone).

    Writer-preferring: while an exclusive attempt waits, no shared attempt
    starts, so a busy process cannot starve it; it waits only for the attempts
    already in flight.  Every wait is bounded (``wait``, ``[sagas]
    exclusive_wait``): when it expires the attempt starts anyway, shared,
    beside whatever runs.  Unbounded, either wait could deadlock the process:
    an attempt in flight that waits for another run's step (a step that polls
    another saga, or calls code that does) would never finish while that step
    queues behind an exclusive waiter that waits for it; and an exclusive
    attempt that waits for another run's step would never finish while that
    step queues behind it.  Bounded, the lock delays attempts but never stops
    the process's progress; what it costs, the isolation of the attempts that
    ran beside others anyway, is paid by counting (see ``Engine._blame``).

    One per engine (one engine per process).  Not thread-safe: one event loop.
    """

    def __init__(self) -> None:
        self.shared = 0
        self.exclusive = False
        self.queued = 0  # exclusive attempts waiting
        self._change = asyncio.Event()

    @property
    def in_flight(self) -> int:
        return self.shared + int(self.exclusive)

    def _free(self, exclusive: bool) -> bool:
        if exclusive:
            return not self.exclusive and self.shared == 0
        return not self.exclusive and self.queued == 0

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def acquire(self, exclusive: bool, wait: float) -> bool:
        """Take the lock for one attempt; False when the wait expired and the
        attempt holds it shared, beside the attempts it waited for.  Release
        with ``release(exclusive and the result)``."""
        deadline = time.monotonic() + wait
        if exclusive:
            self.queued += 1
        try:
            while not self._free(exclusive):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.shared += 1
                    return False
                change = self._change
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await change.wait()
            if exclusive:
                self.exclusive = True
            else:
                self.shared += 1
            return True
        finally:
            if exclusive:
                self.queued -= 1
                self._changed()  # shared waiters may go, or see the holder

    def release(self, exclusive: bool) -> None:
        """Synchronous, so a cancelled attempt always releases."""
        if exclusive:
            self.exclusive = False
        else:
            self.shared -= 1
        self._changed()


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


class Engine:
    """Drives runs of ``definitions`` journaled in ``journal``, as ``owner``."""

    def __init__(
        self,
        app: Any,
        journal: SagaJournal,
        config: SagasConfig,
        definitions: dict[str, SagaDefinition],
        owner: str,
        *,
        counters: Counters | None = None,
        notify: Callable[[Run, str | None, str], None] | None = None,
    ) -> None:
        self.app = app
        self.journal = journal
        self.config = config
        self.definitions = definitions
        self.owner = owner
        self.counters = counters or Counters()
        self._notify = notify
        self._warned_policies: set[str] = set()
        #: Runs this engine is driving now, by id.
        self.active: dict[str, Run] = {}
        # Events whose state rides on a run's next write (see _defer).
        self._carry: dict[str, list[tuple[str, str | None]]] = {}
        #: Step attempts (and compensations) in flight in this process.
        self.attempt_lock = AttemptLock()

    # -- entry points -----------------------------------------------------------------

    async def claim_and_drive(
        self, run_id: str, ctx: WispContext, *, claimed: Run | None = None
    ) -> Run | None:
        """Claim ``run_id`` and drive it to its end (or until its lease is lost).

        None when the run could not be claimed (terminal, or another owner's
        lease is live).  A run whose definition changed is refused: logged,
        released for a process that has its version, and returned unchanged.
        """
        run = claimed or await self.journal.claim(run_id, self.owner, self.config.lease_seconds)
        if run is None:
            return None
        try:
            check_definition(run, self.definitions)
        except DefinitionChanged as exc:
            self.counters.refused += 1
            ctx.logger.error("saga run refused: {}", exc)
            await self.journal.release(run.id, run.token or "")
            return run
        return await self.drive(run, ctx)

    async def drive(self, run: Run, ctx: WispContext) -> Run:
        """Drive a claimed run.  A lost lease stops it (logged, no compensation)."""
        token = run.token or ""
        lost = asyncio.Event()
        beat = asyncio.create_task(self._heartbeat(run, token, lost), name=f"saga-lease-{run.id}")
        self.active[run.id] = run
        try:
            await self._drive(run, token, ctx, lost)
        except asyncio.CancelledError:
            # Shutdown: hand the run over at once rather than when the lease lapses.
            with contextlib.suppress(Exception):
                await asyncio.shield(self.journal.release(run.id, token))
            ctx.logger.info("saga run {} ({}) released for another owner", run.id, run.saga)
            raise
        except LeaseLost:
            self.counters.lost += 1
            ctx.logger.warning(
                "saga run {} ({}): lease lost (another owner reclaimed it); this owner "
                "stops here without compensating",
                run.id,
                run.saga,
            )
        finally:
            self.active.pop(run.id, None)
            self._carry.pop(run.id, None)
            await cancel_and_wait(beat)
        return run

    # -- leases -----------------------------------------------------------------------

    async def _heartbeat(self, run: Run, token: str, lost: asyncio.Event) -> None:
        while True:
            await asyncio.sleep(self.config.heartbeat_seconds)
            try:
                kept = await self.journal.heartbeat(run.id, token, self.config.lease_seconds)
            except Exception as exc:
                logger.warning("saga run {}: heartbeat failed: {}", run.id, exc)
                continue
            if not kept:
                lost.set()
                return

    async def _save(self, run: Run, token: str, event: str, step: str | None = None) -> bool:
        """Journal ``run`` (and whatever was deferred); set and return its cancel
        flag.  LeaseLost when refused."""
        events = [*self._carry.pop(run.id, ()), (event, step)]
        cancel = await self.journal.save(run, token)
        if cancel is None:
            raise LeaseLost(run.id)
        run.cancel = cancel
        if self._notify is not None:
            for name, where in events:
                self._notify(run, where, name)
        return cancel

    def _defer(self, run: Run, event: str, step: str | None = None) -> None:
        """Let ``event``'s state ride on the run's next write, which comes before
        any other side effect: a step's completion and the next step's intent
        (or the run's completion) are one write, not two."""
        self._carry.setdefault(run.id, []).append((event, step))

    async def _sleep_until(self, when: float | None, lost: asyncio.Event) -> None:
        if when is None:
            return
        delay = when - time.time()
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await lost.wait()
        if lost.is_set():
            raise LeaseLost("lease lost while waiting")

    # -- driving ----------------------------------------------------------------------

    async def _drive(self, run: Run, token: str, ctx: WispContext, lost: asyncio.Event) -> None:
        definition = self.definitions[run.saga]
        log = ctx.logger.bind(saga=run.saga, run_id=run.id)
        if run.status is RunStatus.PENDING:  # claims start runs; this is for safety
            run.status = RunStatus.RUNNING
        fresh = run.intent_stored or all(s.attempts == 0 for s in run.steps)
        if fresh and run.status is RunStatus.RUNNING:
            self._defer(run, "started")
            log.info("saga {} run {} started", run.saga, run.id)
        else:
            log.info("saga {} run {} resumed ({})", run.saga, run.id, run.status.value)
        while run.status is RunStatus.RUNNING:
            if run.cancel:
                run.status = RunStatus.COMPENSATING
                run.error = run.error or "compensation was asked for"
                await self._save(run, token, "compensating")
                log.warning("saga {} run {}: compensating on request", run.saga, run.id)
                break
            index = next(
                (i for i, s in enumerate(run.steps) if s.status is not StepStatus.COMPLETED),
                None,
            )
            if index is None:
                run.status = RunStatus.COMPLETED
                await self._save(run, token, "completed")
                self.counters.completed += 1
                log.info("saga {} run {} completed", run.saga, run.id)
                return
            await self._forward(run, token, ctx, lost, definition.steps[index], index)
        if run.status is RunStatus.COMPENSATING:
            await self._compensate(run, token, ctx, lost, definition)

    def _context(
        self, run: Run, ctx: WispContext, index: int, attempt: int, *, compensation: bool
    ) -> StepContext:
        record = run.steps[index]
        return StepContext(
            ctx=ctx,
            run_id=run.id,
            saga=run.saga,
            step=record.name,
            index=index,
            key=step_key(run.id, index, record.name, compensation=compensation),
            attempt=attempt,
            input=run.input,
            outputs=run.outputs,
            output=record.output if compensation else None,
            compensating=compensation,
        )

    def _backoff(self, step: Step, attempt: int) -> float:
        base = step.backoff or self.config.backoff_seconds
        cap = step.max_backoff or self.config.max_backoff_seconds
        return float(random.random() * min(cap, base * 2 ** (attempt - 1)))

    async def _call(self, step: Step, fn: Any, sctx: StepContext, deadline: float | None) -> Any:
        """One attempt: through the step's resilience policy when there is one."""
        call: Any = fn
        if step.policy:
            if "resilience" in self.app.services:
                policy = self.app.services.get("resilience").policy(step.policy)
                call = policy(fn)
            elif step.policy not in self._warned_policies:
                self._warned_policies.add(step.policy)
                sctx.logger.warning(
                    "step {}: resilience policy {!r} ignored: the resilience plugin is not "
                    "loaded (the step's own attempts still apply)",
                    step.name,
                    step.policy,
                )
        if deadline is None:
            return await call(sctx)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.time())):
                return await call(sctx)
        except TimeoutError:
            raise TimeoutError(f"step {step.name!r} passed its {step.timeout}s deadline") from None

    def _blame(
        self,
        log: Any,
        run: Run,
        what: str,
        *,
        exclusive: bool,
        suspect: bool,
        interruptions: int,
    ) -> tuple[bool, int, bool]:
        """An attempt found running: its process died.  Returns the step's
        ``suspect`` flag, its counted interruptions, and whether it gives up.

        Counted: an attempt journaled ``exclusive`` (it ran alone, so nothing
        else explains the death), and any later one of a suspect step (it ran
        beside others only because its wait for exclusivity expired): so only
        one interruption of a step ever goes uncounted, and a step that kills
        its process every time runs at most 1 + max_interruptions times, even
        when it cannot get a moment alone.  Not counted: the first interruption
        of an attempt that ran beside others (any of them may have killed the
        process): the step becomes suspect, and its next attempts run alone.
        A new run's first intent, stored with the run, is a shared attempt.
        """
        limit = self.config.max_interruptions
        if not (exclusive or suspect):
            self.counters.suspects += 1
            log.warning(
                "saga {} run {}: {} was interrupted while other steps could run beside it "
                "in its process: not counted ({} of {} counted); it is suspect now, and "
                "runs again alone in its process",
                run.saga,
                run.id,
                what,
                interruptions,
                limit,
            )
            return True, interruptions, False
        self.counters.interruptions += 1
        interruptions += 1
        give_up = interruptions >= limit
        log.warning(
            "saga {} run {}: {} was interrupted {}: counted (interruption {} of {}); {}",
            run.saga,
            run.id,
            what,
            "while it ran alone in its process"
            if exclusive
            else "while it ran beside other steps after its wait to run alone expired",
            interruptions,
            limit,
            "giving up" if give_up else "running it again alone",
        )
        return True, interruptions, give_up

    @contextlib.asynccontextmanager
    async def _attempt(self, log: Any, what: str, *, exclusive: bool) -> AsyncIterator[bool]:
        """Hold the attempt lock (exclusive for a suspect step) while an attempt
        runs and its outcome is journaled; yields whether it runs alone."""
        wait = self.config.exclusive_wait
        got = await self.attempt_lock.acquire(exclusive, wait)
        if not got:
            self.counters.exclusive_waits_expired += 1
            if exclusive:
                log.warning(
                    "{} waited {}s to run alone in its process, in vain (attempts in flight "
                    "did not finish): it runs beside them, still suspect; an interruption "
                    "now counts against it",
                    what,
                    wait,
                )
            else:
                log.warning(
                    "{} waited {}s for suspect steps that run alone in this process: it "
                    "runs beside them",
                    what,
                    wait,
                )
        alone = exclusive and got
        try:
            yield alone
        finally:
            self.attempt_lock.release(alone)

    async def _forward(
        self,
        run: Run,
        token: str,
        ctx: WispContext,
        lost: asyncio.Event,
        step: Step,
        index: int,
    ) -> None:
        record = run.steps[index]
        log = ctx.logger.bind(saga=run.saga, run_id=run.id, step=step.name)
        # The run was stored with this step's first intent (start_intent): a
        # shared attempt (a new run's step is not suspect).
        written = run.intent_stored and index == 0 and record.attempts == 1
        run.intent_stored = False
        if record.status is StepStatus.RUNNING and not written:
            # The attempt died with its process.  Counted apart from failures,
            # and bounded, so a step that kills its process every time cannot
            # loop forever; counted only when the step is to blame (_blame).
            record.suspect, record.interruptions, give_up = self._blame(
                log,
                run,
                f"step {step.name}",
                exclusive=record.exclusive,
                suspect=record.suspect,
                interruptions=record.interruptions,
            )
            if give_up:
                record.error = (
                    f"interrupted {record.interruptions} time(s): the process running it "
                    "was lost each time"
                )
                await self._step_failed(run, token, log, step, record)
                return
        while True:
            if lost.is_set():
                raise LeaseLost(run.id)
            if not written:
                await self._sleep_until(record.wake_at, lost)
            exclusive = record.suspect and not written
            async with self._attempt(log, f"step {step.name}", exclusive=exclusive) as alone:
                if written:
                    written = False
                    self._defer(run, "step.started", step.name)
                else:
                    before = attrs.evolve(record)
                    start_intent(record, step)
                    record.exclusive = alone
                    if await self._save(run, token, "step.started", step.name):  # the intent
                        # Compensation was asked for: this step has not begun; it never will.
                        run.steps[index] = before
                        return
                if await self._attempt_forward(run, token, ctx, log, step, index):
                    return

    async def _attempt_forward(
        self, run: Run, token: str, ctx: WispContext, log: Any, step: Step, index: int
    ) -> bool:
        """Run the attempt whose intent is journaled and journal what follows;
        False when the step is to be tried again.  Called holding the attempt
        lock: an attempt's outcome is journaled before others may start."""
        record = run.steps[index]
        attempts = step.attempts or self.config.attempts
        sctx = self._context(run, ctx, index, record.attempts, compensation=False)
        try:
            output = await self._call(step, step.action, sctx, record.deadline)
            dumps_json(output, f"the output of step {step.name!r}")
        except Exception as exc:
            record.error = _error_text(exc)
            record.finished_at = time.time()
            record.failures += 1
            if record.failures >= attempts:
                await self._step_failed(run, token, log, step, record)
                return True
            delay = self._backoff(step, record.failures)
            record.status = StepStatus.RETRYING
            record.wake_at = time.time() + delay
            self.counters.step_retries += 1
            await self._save(run, token, "step.retrying", step.name)
            log.warning(
                "saga {} run {}: step {} attempt {} of {} failed, retrying in {:.2f}s: {}",
                run.saga,
                run.id,
                step.name,
                record.failures,
                attempts,
                delay,
                record.error,
            )
            return False
        record.status = StepStatus.COMPLETED
        record.output = output
        record.error = None
        record.finished_at = time.time()
        record.deadline = None
        if record.exclusive:
            # Journaled before other attempts may start: the process dying then
            # must not find this step running, alone, and blame it.
            await self._save(run, token, "step.completed", step.name)
        else:
            self._defer(run, "step.completed", step.name)
        return True

    async def _step_failed(
        self, run: Run, token: str, log: Any, step: Step, record: StepRecord
    ) -> None:
        """The step gave up: the run compensates."""
        record.status = StepStatus.FAILED
        run.status = RunStatus.COMPENSATING
        run.error = f"step {step.name!r} failed {record.failures} time(s): {record.error}"
        await self._save(run, token, "step.failed", step.name)
        log.error("saga {} run {}: {}; compensating", run.saga, run.id, run.error)

    def _needs_compensation(self, step: Step, record: StepRecord) -> bool:
        if step.compensate is None or record.comp in (CompStatus.DONE, CompStatus.FAILED):
            return False
        if record.status is StepStatus.COMPLETED:
            return True
        # The step that gave up (or was abandoned mid-way on request).
        return step.compensate_on_failure and record.attempts > 0

    async def _compensate(
        self,
        run: Run,
        token: str,
        ctx: WispContext,
        lost: asyncio.Event,
        definition: SagaDefinition,
    ) -> None:
        log = ctx.logger.bind(saga=run.saga, run_id=run.id)
        for index in reversed(range(len(run.steps))):
            step, record = definition.steps[index], run.steps[index]
            if not self._needs_compensation(step, record):
                continue
            await self._undo(run, token, ctx, lost, step, index)
        failed = [r.name for r in run.steps if r.comp is CompStatus.FAILED]
        if failed:
            run.status = RunStatus.NEEDS_ATTENTION
            run.error = f"{run.error}; compensation failed for: {', '.join(failed)}"
            await self._save(run, token, "needs_attention")
            self.counters.needs_attention += 1
            log.error("saga {} run {} needs attention: {}", run.saga, run.id, run.error)
        else:
            run.status = RunStatus.COMPENSATED
            await self._save(run, token, "compensated")
            self.counters.compensated += 1
            log.info("saga {} run {} compensated", run.saga, run.id)

    async def _undo(
        self,
        run: Run,
        token: str,
        ctx: WispContext,
        lost: asyncio.Event,
        step: Step,
        index: int,
    ) -> None:
        record = run.steps[index]
        log = ctx.logger.bind(saga=run.saga, run_id=run.id, step=step.name)
        assert step.compensate is not None
        if record.comp is CompStatus.RUNNING:
            # Interrupted with its process: blamed and bounded like a step's (_forward).
            record.comp_suspect, record.comp_interruptions, give_up = self._blame(
                log,
                run,
                f"compensation of {step.name}",
                exclusive=record.comp_exclusive,
                suspect=record.comp_suspect,
                interruptions=record.comp_interruptions,
            )
            if give_up:
                record.comp_error = (
                    f"interrupted {record.comp_interruptions} time(s): the process "
                    "running it was lost each time"
                )
                await self._compensation_failed(run, token, log, step, record)
                return
        while True:
            if lost.is_set():
                raise LeaseLost(run.id)
            await self._sleep_until(record.comp_wake_at, lost)
            what = f"compensation of {step.name}"
            async with self._attempt(log, what, exclusive=record.comp_suspect) as alone:
                record.comp = CompStatus.RUNNING
                record.comp_attempts += 1
                record.comp_started_at = time.time()
                record.comp_wake_at = None
                record.comp_exclusive = alone
                await self._save(run, token, "compensation.started", step.name)
                if await self._attempt_undo(run, token, ctx, log, step, index):
                    return

    async def _attempt_undo(
        self, run: Run, token: str, ctx: WispContext, log: Any, step: Step, index: int
    ) -> bool:
        """As :meth:`_attempt_forward`, for a compensation (its end is journaled
        at once: nothing else rides on it)."""
        assert step.compensate is not None
        record = run.steps[index]
        attempts = step.compensation_attempts or self.config.compensation_attempts
        sctx = self._context(run, ctx, index, record.comp_attempts, compensation=True)
        try:
            await self._call(step, step.compensate, sctx, None)
        except Exception as exc:
            record.comp_error = _error_text(exc)
            record.comp_finished_at = time.time()
            record.comp_failures += 1
            if record.comp_failures >= attempts:
                await self._compensation_failed(run, token, log, step, record)
                return True
            delay = self._backoff(step, record.comp_failures)
            record.comp = CompStatus.RETRYING
            record.comp_wake_at = time.time() + delay
            await self._save(run, token, "compensation.retrying", step.name)
            log.warning(
                "saga {} run {}: compensation of {} attempt {} of {} failed, "
                "retrying in {:.2f}s: {}",
                run.saga,
                run.id,
                step.name,
                record.comp_failures,
                attempts,
                delay,
                record.comp_error,
            )
            return False
        record.comp = CompStatus.DONE
        record.comp_error = None
        record.comp_finished_at = time.time()
        await self._save(run, token, "compensation.completed", step.name)
        return True

    async def _compensation_failed(
        self, run: Run, token: str, log: Any, step: Step, record: StepRecord
    ) -> None:
        record.comp = CompStatus.FAILED
        await self._save(run, token, "compensation.failed", step.name)
        log.error(
            "saga {} run {}: compensation of {} gave up after {} attempt(s): {}",
            run.saga,
            run.id,
            step.name,
            record.comp_attempts,
            record.comp_error,
        )
