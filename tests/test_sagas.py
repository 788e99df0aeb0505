"""Sagas as a plugin author meets them, on SQLite, PostgreSQL and Redis: steps,
retries, compensation, keys, leases, recovery, versions, the CLI, jobs."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from typing import Any

import pytest

import wisp
from wisp.plugins.sagas.api import (
    CompStatus,
    LeaseLost,
    RunStatus,
    Saga,
    SagaDefinition,
    Step,
    StepStatus,
)

pytestmark = [
    pytest.mark.needs_plugin("sagas", "storage"),
    pytest.mark.parametrize(
        ("store", "database"),
        [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("redis", "sqlite")],
        indirect=True,
        ids=["sqlite", "postgresql", "redis"],
    ),
]

FAST = (
    "lease_seconds = 1.0\nheartbeat_seconds = 0.25\nbackoff_seconds = 0.01\n"
    "max_backoff_seconds = 0.02\nrecovery_seconds = 0.2\n"
)

NO_SCAN = FAST.replace("recovery_seconds = 0.2", "recovery_seconds = 600")


@pytest.fixture
async def store(request, project, database):
    """Writes wisp.toml for the store; returns a function to rewrite it with
    more plugins or ``[sagas]`` lines."""
    kind = request.param
    prefix = f"test:sagas:{uuid.uuid4().hex[:10]}:"
    client = None
    redis_url = ""
    if kind == "redis":
        redis_url = request.getfixturevalue("redis_url")
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(redis_url)

    def write(plugins: tuple[str, ...] = (), extra: str = FAST) -> None:
        if kind == "redis":
            names = ["redis", "sagas", *plugins]
            if plugins:
                names.insert(0, "storage")  # jobs and policy keep to SQL
            text = f'[redis]\nurl = "{redis_url}"\n'
            sagas = f'[sagas]\nbackend = "redis"\nredis_prefix = "{prefix}"\n'
        else:
            names = ["storage", "sagas", *plugins]
            text = ""
            sagas = "[sagas]\n"
        url, schema = database
        if kind == "redis":
            url, schema = f"sqlite+aiosqlite:///{project.root / 'jobs.sqlite3'}", ""
        text += f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n'
        project.write(
            "wisp.toml",
            f"[wisp]\nautoload = false\nplugins = {names!r}\n".replace("'", '"')
            + text
            + sagas
            + extra
            + ("\n[jobs]\npoll_seconds = 0.05\n" if "jobs" in plugins else ""),
        )

    write()
    yield write
    if client is not None:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


# -- a saga whose steps do what a test tells them ----------------------------------------


class Recorder:
    """Steps and compensations record here; ``plan`` says how each call ends."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int, str]] = []
        self.contexts: list[tuple[Any, str]] = []
        # (kind, step) -> list of outcomes per call: "ok", "fail", "hang"
        self.plan: dict[tuple[str, str], list[str]] = {}
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def act(self, kind: str, step: Any) -> Any:
        self.calls.append((kind, step.step, step.attempt, step.key))
        self.contexts.append((step.ctx.invocation_type, step.ctx.request_id))
        step.logger.info("{} {}", kind, step.step)
        outcomes = self.plan.get((kind, step.step), [])
        outcome = outcomes.pop(0) if outcomes else "ok"
        if outcome == "fail":
            raise RuntimeError(f"{kind} {step.step} failed on purpose")
        if outcome == "hang":
            await asyncio.sleep(3600)
        if outcome == "wait":
            self.waiting.set()
            await self.gate.wait()
        if kind == "do":
            return {"step": step.step, "saw": sorted(step.outputs), "input": step.input}
        return None

    def done(self, kind: str) -> list[str]:
        return [name for k, name, _, _ in self.calls if k == kind]


def make_saga(rec: Recorder, name: str = "order", version: int = 1, **options: Any) -> Saga:
    saga = Saga(name, version=version)
    for step in ("reserve", "charge", "ship"):

        async def action(s: Any) -> Any:
            return await rec.act("do", s)

        async def undo(s: Any) -> Any:
            return await rec.act("undo", s)

        saga.step(step, **options.get(step, {}))(action)
        saga.compensation(step)(undo)
    return saga


class SagaPlugin:
    def __init__(self, *sagas: Any) -> None:
        self.sagas = list(sagas)

    @wisp.hookimpl
    def wisp_sagas(self, app: Any) -> list[Any]:
        return self.sagas


def make_app(project: Any, *sagas: Any, **kwargs: Any) -> wisp.Wisp:
    app = project.app(**kwargs)
    app.register(SagaPlugin(*sagas), "test-sagas")
    return app


# -- forward ---------------------------------------------------------------------------


@pytest.mark.needs_plugin("redis")
async def test_a_run_completes_passing_input_and_outputs_in_a_saga_context(
    project, store, log_lines
) -> None:
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        run_id = await sagas.start("order", {"sku": "A1"})
        run = await sagas.wait(run_id)
    assert run.status is RunStatus.COMPLETED and run.terminal
    assert rec.done("do") == ["reserve", "charge", "ship"] and rec.done("undo") == []
    assert run.outputs["ship"] == {
        "step": "ship",
        "saw": ["charge", "reserve"],
        "input": {"sku": "A1"},
    }
    assert [s.attempts for s in run.steps] == [1, 1, 1]
    assert rec.contexts == [(wisp.InvocationType.SAGA, run_id)] * 3
    # Every step's log line carries the run's request id (the run id).
    lines = [r for r in log_lines if r["message"].startswith("do ")]
    assert [r["extra"].get("request_id") for r in lines] == [run_id] * 3
    # Stable keys per run and step.
    assert [k for *_, k in rec.calls] == [
        f"{run_id}:0:reserve",
        f"{run_id}:1:charge",
        f"{run_id}:2:ship",
    ]


@pytest.mark.needs_plugin("redis")
async def test_the_same_key_returns_the_same_run(project, store) -> None:
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        first = await sagas.start("order", {"sku": "A"}, key="order-42")
        again = await sagas.start("order", {"sku": "B"}, key="order-42")
        other = await sagas.start("order", {"sku": "C"}, key="order-43")
        await sagas.wait(first)
        await sagas.wait(other)
        await sagas.drain()
        assert first == again != other
        assert sagas.counters.started == 2
        assert len(await sagas.list()) == 2
    assert rec.done("do").count("reserve") == 2


@pytest.mark.needs_plugin("redis")
async def test_start_refuses_bad_input_naming_it(project, store) -> None:
    app = make_app(project, make_saga(Recorder()))
    async with app:
        sagas = app.services.get("sagas")
        with pytest.raises(KeyError, match=r"no saga 'nope' \(known: order\)"):
            await sagas.start("nope", {})
        with pytest.raises(TypeError, match="the input of saga 'order' is not JSON"):
            await sagas.start("order", {"when": object()})
        assert await sagas.list() == []


@pytest.mark.needs_plugin("redis")
async def test_a_failing_step_retries_with_its_attempts_journaled(project, store) -> None:
    rec = Recorder()
    rec.plan[("do", "charge")] = ["fail", "fail"]
    app = make_app(project, make_saga(rec, charge={"attempts": 3}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {"sku": "A"}))
    assert run.status is RunStatus.COMPLETED
    charge = run.steps[1]
    assert (charge.attempts, charge.failures, charge.error) == (3, 2, None)
    assert [a for k, n, a, _ in rec.calls if n == "charge"] == [1, 2, 3]


@pytest.mark.needs_plugin("redis", "resilience", "retry")
async def test_a_step_runs_through_its_resilience_policy(project, store) -> None:
    policy = '[[resilience.policies.twice]]\npattern = "retry"\nattempts = 2\nbackoff = 0\n'
    store(plugins=("resilience", "retry"), extra=FAST + policy)
    rec = Recorder()
    rec.plan[("do", "charge")] = ["fail"]
    app = make_app(project, make_saga(rec, charge={"policy": "twice", "attempts": 1}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
    assert run.status is RunStatus.COMPLETED
    # The policy retried inside one journaled attempt.
    assert (run.steps[1].attempts, run.steps[1].failures) == (1, 0)
    assert [a for _, n, a, _ in rec.calls if n == "charge"] == [1, 1]


@pytest.mark.needs_plugin("redis")
async def test_a_step_past_its_timeout_fails(project, store) -> None:
    rec = Recorder()
    rec.plan[("do", "ship")] = ["hang"]
    app = make_app(project, make_saga(rec, ship={"attempts": 1, "timeout": 0.2}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
    assert run.status is RunStatus.COMPENSATED
    assert "passed its 0.2s deadline" in (run.steps[2].error or "")


# -- compensation ------------------------------------------------------------------------


@pytest.mark.needs_plugin("redis")
async def test_a_step_that_gives_up_compensates_the_completed_ones_in_reverse(
    project, store
) -> None:
    """The failed step itself is not compensated (as in the source): it must
    leave nothing behind, or opt in with ``compensate_on_failure``."""
    rec = Recorder()
    rec.plan[("do", "ship")] = ["fail", "fail"]
    app = make_app(project, make_saga(rec, ship={"attempts": 2}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
        await sagas.drain()  # the counters move just after the journal
        assert sagas.counters.compensated == 1
    assert run.status is RunStatus.COMPENSATED
    assert rec.done("undo") == ["charge", "reserve"]
    assert [s.status for s in run.steps] == [
        StepStatus.COMPLETED,
        StepStatus.COMPLETED,
        StepStatus.FAILED,
    ]
    assert [s.comp for s in run.steps] == [CompStatus.DONE, CompStatus.DONE, None]
    assert "step 'ship' failed 2 time(s)" in (run.error or "")
    # A compensation gets its own step's stored output, and its own key.
    undo_charge = next(c for c in rec.calls if c[:2] == ("undo", "charge"))
    assert undo_charge[3] == f"{run.id}:1:charge:undo"


@pytest.mark.needs_plugin("redis")
async def test_compensate_on_failure_also_undoes_the_step_that_gave_up(project, store) -> None:
    rec = Recorder()
    rec.plan[("do", "ship")] = ["fail"]
    app = make_app(project, make_saga(rec, ship={"attempts": 1, "compensate_on_failure": True}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
    assert run.status is RunStatus.COMPENSATED
    assert rec.done("undo") == ["ship", "charge", "reserve"]


@pytest.mark.needs_plugin("redis")
async def test_a_failing_compensation_is_retried_and_does_not_stop_the_others(
    project, store
) -> None:
    rec = Recorder()
    rec.plan[("do", "ship")] = ["fail"]
    rec.plan[("undo", "charge")] = ["fail"] * 10
    rec.plan[("undo", "reserve")] = ["fail"]  # fails once, then works
    app = make_app(project, make_saga(rec, ship={"attempts": 1}))
    async with app:
        sagas = app.services.get("sagas")
        run = await sagas.wait(await sagas.start("order", {}))
        await sagas.drain()
        assert sagas.counters.needs_attention == 1
        health = await sagas.health()
        assert health.ok and "1 needs_attention" in health.detail
        assert "wisp sagas list --status needs_attention" in health.detail
        # Terminal states never change: nothing takes it over again.
        assert await sagas.journal.claim(run.id, "someone", 5) is None
        assert await sagas.compensate(run.id) == run
    assert run.status is RunStatus.NEEDS_ATTENTION
    # [sagas] compensation_attempts = 5 by default.
    assert rec.done("undo") == ["charge"] * 5 + ["reserve"] * 2
    assert run.steps[1].comp is CompStatus.FAILED and run.steps[0].comp is CompStatus.DONE
    assert "compensation failed for: charge" in (run.error or "")


# -- leases, recovery, versions -------------------------------------------------------------


@pytest.mark.needs_plugin("redis")
async def test_a_stale_owner_cannot_write_after_another_reclaimed(project, store) -> None:
    store(extra=NO_SCAN)  # this test plays both owners itself
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        journal = sagas.journal
        definition = make_saga(rec).definition()
        from wisp.plugins.sagas.api import new_run

        run, _ = await journal.create(new_run(definition, uuid.uuid4().hex, {}, None), 0.3)
        first = await journal.claim(run.id, "first", 0.3)
        assert first is not None and first.token
        assert await journal.claim(run.id, "second", 0.3) is None  # the lease is live
        await asyncio.sleep(0.5)  # the first owner pauses past its lease
        second = await journal.claim(run.id, "second", 5)
        assert second is not None and second.token != first.token
        first.status = RunStatus.COMPENSATING
        assert await journal.save(first, first.token) is None
        assert not await journal.heartbeat(run.id, first.token, 5)
        assert not await journal.release(run.id, first.token)
        assert await journal.save(second, second.token) is False
        stored = await journal.get(run.id)
        assert (stored.status, stored.owner) == (RunStatus.RUNNING, "second")
        # The engine of a stale owner stops at its next write, without compensating.
        ctx = await app.make_context(wisp.InvocationType.SAGA, "t")
        with contextlib.suppress(LeaseLost):
            await sagas.engine.drive(first, ctx)
        assert rec.calls == [] and sagas.counters.lost == 1
        assert (await journal.get(run.id)).status is RunStatus.RUNNING


async def _interrupted_run(
    app: wisp.Wisp, rec: Recorder, lease: float = 0.3, saga: str = "order", **step2: Any
) -> str:
    """A run whose owner died in step 2 (``charge``), an attempt beside others
    unless ``step2`` says (``exclusive=True, suspect=True``): its lease lapses
    in ``lease`` s."""
    sagas = app.services.get("sagas")
    from wisp.plugins.sagas.api import new_run

    definition = sagas.definitions[saga]
    run, _ = await sagas.journal.create(new_run(definition, uuid.uuid4().hex, {"n": 1}, None), 0.1)
    run = await sagas.journal.claim(run.id, "dead-owner", lease)
    run.status = RunStatus.RUNNING
    run.steps[0].status = StepStatus.COMPLETED
    run.steps[0].attempts = 1
    run.steps[0].output = {"from": "the dead owner"}
    run.steps[1].status = StepStatus.RUNNING
    run.steps[1].attempts = 1
    for name, value in step2.items():
        setattr(run.steps[1], name, value)
    assert await sagas.journal.save(run, run.token) is False
    return run.id


@pytest.mark.needs_plugin("redis")
async def test_recovery_replays_completed_steps_and_reruns_the_interrupted_one(
    project, store, log_lines
) -> None:
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        run_id = await _interrupted_run(app, rec)
        run = await sagas.wait(run_id, timeout=30)  # the inline recovery scan takes it
    assert run.status is RunStatus.COMPLETED
    assert rec.done("do") == ["charge", "ship"]  # reserve is not run again
    assert run.steps[1].attempts == 2 and rec.calls[0][2] == 2
    assert run.outputs["reserve"] == {"from": "the dead owner"}
    # Other steps could have run beside it: not counted; suspect, it ran again
    # alone in its process (journaled), and ship after it as usual.
    charge, ship = run.steps[1], run.steps[2]
    assert (charge.interruptions, charge.suspect, charge.exclusive) == (0, True, True)
    assert (ship.suspect, ship.exclusive) == (False, False)
    assert any(
        "step charge was interrupted while other steps could run beside it in its process: "
        "not counted (0 of 5 counted); it is suspect now" in r["message"]
        for r in log_lines
    )
    assert (sagas.counters.suspects, sagas.counters.interruptions) == (1, 0)


@pytest.mark.needs_plugin("redis")
async def test_interruptions_are_bounded_so_a_crashing_step_cannot_loop_forever(
    project, store, log_lines, monkeypatch
) -> None:
    monkeypatch.setenv("WISP_SAGAS__MAX_INTERRUPTIONS", "1")
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        # A suspect step whose process died while it ran alone in it.
        run_id = await _interrupted_run(app, rec, exclusive=True, suspect=True)
        run = await sagas.wait(run_id, timeout=30)
    # Its process died once, the limit: it is not run again; reserve is undone.
    assert run.status is RunStatus.COMPENSATED
    assert rec.done("do") == [] and rec.done("undo") == ["reserve"]
    assert run.steps[1].interruptions == 1 and run.steps[1].failures == 0
    assert "interrupted 1 time(s)" in (run.steps[1].error or "")
    assert any(
        "step charge was interrupted while it ran alone in its process: counted "
        "(interruption 1 of 1); giving up" in r["message"]
        for r in log_lines
    )


@pytest.mark.needs_plugin("redis")
async def test_interruptions_of_a_compensation_are_bounded(project, store, monkeypatch) -> None:
    monkeypatch.setenv("WISP_SAGAS__MAX_INTERRUPTIONS", "1")
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        from wisp.plugins.sagas.api import new_run

        async def interrupted(**comp: Any) -> str:
            """A run whose owner died compensating reserve."""
            definition = sagas.definitions["order"]
            run, _ = await sagas.journal.create(
                new_run(definition, uuid.uuid4().hex, {"n": 1}, None), 0.1
            )
            run = await sagas.journal.claim(run.id, "dead-owner", 0.3)
            run.status = RunStatus.COMPENSATING
            run.steps[0].status = StepStatus.COMPLETED
            run.steps[0].attempts = 1
            run.steps[0].comp = CompStatus.RUNNING
            run.steps[0].comp_attempts = 1
            for name, value in comp.items():
                setattr(run.steps[0], name, value)
            run.steps[1].status = StepStatus.FAILED
            run.steps[1].attempts = run.steps[1].failures = 1
            assert await sagas.journal.save(run, run.token) is False
            return run.id

        # Interrupted running alone: counted, the limit.
        alone = await sagas.wait(
            await interrupted(comp_exclusive=True, comp_suspect=True), timeout=30
        )
        assert rec.done("undo") == []
        # Interrupted beside others: not counted; run again, alone.
        beside = await sagas.wait(await interrupted(), timeout=30)
    assert alone.status is RunStatus.NEEDS_ATTENTION
    reserve = alone.steps[0]
    assert reserve.comp is CompStatus.FAILED and reserve.comp_interruptions == 1
    assert beside.status is RunStatus.COMPENSATED and rec.done("undo") == ["reserve"]
    reserve = beside.steps[0]
    assert (reserve.comp, reserve.comp_attempts, reserve.comp_interruptions) == (
        CompStatus.DONE,
        2,
        0,
    )
    assert reserve.comp_suspect and reserve.comp_exclusive


def _poisoned(state: dict[str, asyncio.Event], calls: list[tuple[str, str, int]]) -> list[Saga]:
    """``poison``: its step kills its process on every attempt (sets
    ``state["dying"]`` and hangs; the test then stops the app), once a
    ``healthy`` run's slow ``charge`` is in flight (its first attempt waits for
    that, later ones 0.3 s at most).  ``healthy``: reserve, charge, ship."""
    poison = Saga("poison")

    @poison.step("explode")
    async def explode(step: Any) -> Any:
        calls.append(("poison", step.step, step.attempt))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10 if step.attempt == 1 else 0.3):
                await state["charging"].wait()
        state["dying"].set()
        await asyncio.sleep(3600)

    healthy = Saga("healthy")
    for name in ("reserve", "charge", "ship"):

        async def act(step: Any) -> Any:
            calls.append(("do", step.step, step.attempt))
            if step.step == "charge":
                state["charging"].set()
                await asyncio.sleep(0.5)
            return {"done": step.step}

        async def undo(step: Any) -> None:
            calls.append(("undo", step.step, step.attempt))

        healthy.step(name)(act)
        healthy.compensation(name)(undo)
    return [poison, healthy]


@pytest.mark.needs_plugin("redis")
async def test_a_step_that_kills_its_process_every_time_takes_no_healthy_run_with_it(
    project, store
) -> None:
    """Each "process" (an app) dies when the poison step runs: leaving the app
    cancels every run's task at once, journaling nothing but the release of its
    lease, as a kill would (the next process need not wait for the lease).  The
    healthy run's step was journaled running beside it when the first died."""
    store(extra=NO_SCAN)
    state: dict[str, asyncio.Event] = {}
    calls: list[tuple[str, str, int]] = []
    sagas_declared = _poisoned(state, calls)
    run_ids: list[str] = []
    found_running: list[list[str]] = []  # each recovery: the runs' steps journaled running
    kills = 0
    for _ in range(12):
        state.update(charging=asyncio.Event(), dying=asyncio.Event())
        app = make_app(project, *sagas_declared)
        async with app:
            sagas = app.services.get("sagas")
            if run_ids:
                runs = [await sagas.get(r) for r in run_ids]
                found_running.append(
                    [f"{r.saga}.{s.name}" for r in runs for s in r.steps if s.status == "running"]
                )
                await sagas.recover()
            else:
                run_ids = [await sagas.start("healthy", {}), await sagas.start("poison", {})]
            async with asyncio.timeout(30):
                while not state["dying"].is_set():
                    runs = [await sagas.get(r) for r in run_ids]
                    if all(r.terminal for r in runs):
                        break
                    await asyncio.sleep(0.02)
        if not state["dying"].is_set():
            break
        kills += 1
    else:
        pytest.fail("the runs never finished")
    healthy, poison = runs
    limit = 5  # [sagas] max_interruptions, the default
    # More deaths than the limit, the first with both runs' steps in flight.
    assert kills == 1 + limit
    assert found_running[0] == ["healthy.charge", "poison.explode"]
    # The poison step alone is blamed: once not counted (it ran beside the
    # healthy step), then once per attempt it ran alone.
    assert poison.status is RunStatus.COMPENSATED
    explode = poison.steps[0]
    assert [a for kind, _, a in calls if kind == "poison"] == list(range(1, limit + 2))
    assert (explode.attempts, explode.interruptions, explode.suspect) == (limit + 1, limit, True)
    assert f"interrupted {limit} time(s)" in (poison.error or "")
    # The healthy run completed, uncompensated, never counted against.
    assert healthy.status is RunStatus.COMPLETED
    assert [s.interruptions for s in healthy.steps] == [0, 0, 0]
    assert [c for c in calls if c[0] == "undo"] == []
    assert healthy.steps[1].suspect  # its charge ran beside the poison once


def _spans_saga(
    spans: list[tuple[str, str, float, float]],
    seen: dict[tuple[str, str], tuple[bool, int]],
    gate: asyncio.Event,
) -> Saga:
    """``work``: steps a, b, c, each 0.05 s, recording when it ran and what the
    attempt lock held as it began; a waits for ``gate`` first."""
    saga = Saga("work")
    for name in ("a", "b", "c"):

        async def act(step: Any) -> Any:
            lock = step.service("sagas").engine.attempt_lock
            seen[step.run_id, step.step] = (lock.exclusive, lock.shared)
            if step.step == "a":
                await gate.wait()
            start = time.monotonic()
            await asyncio.sleep(0.05)
            spans.append((step.run_id, step.step, start, time.monotonic()))
            return None

        saga.step(name)(act)
    return saga


async def _until(check: Any, what: str, timeout: float = 10) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        pytest.fail(f"waited {timeout}s for {what}")


@pytest.mark.needs_plugin("redis")
async def test_a_suspect_step_runs_alone_in_its_process_and_the_others_wait(project, store) -> None:
    store(extra=NO_SCAN)
    spans: list[tuple[str, str, float, float]] = []
    seen: dict[tuple[str, str], tuple[bool, int]] = {}
    gate = asyncio.Event()
    app = make_app(project, _spans_saga(spans, seen, gate))
    async with app:
        sagas = app.services.get("sagas")
        lock = sagas.engine.attempt_lock
        suspect_id = await _interrupted_run(app, Recorder(), lease=0.05, saga="work")
        busy = [await sagas.start("work", {}) for _ in range(4)]
        await _until(lambda: lock.shared == 4, "the busy runs' step a in flight side by side")
        await asyncio.sleep(0.1)  # the interrupted run's lease lapses
        assert await sagas.recover() == 1
        await _until(lambda: lock.queued == 1, "the suspect step waiting to run alone")
        gate.set()
        runs = [await sagas.wait(r, timeout=30) for r in (suspect_id, *busy)]
    assert all(r.status is RunStatus.COMPLETED for r in runs)
    ((start, end),) = [(s, e) for r, n, s, e in spans if (r, n) == (suspect_id, "b")]
    others = [(r, n, s, e) for r, n, s, e in spans if r != suspect_id]
    # Nothing ran beside it: it waited for the attempts in flight (every busy
    # run's a), and the attempts after them waited for it (every busy b).
    assert all(e <= start or s >= end for _, _, s, e in others)
    assert all(e <= start for _, n, s, e in others if n == "a")
    assert all(s >= end for _, n, s, e in others if n == "b")
    assert seen[suspect_id, "b"] == (True, 0)
    # The busy runs' attempts ran side by side (they hold the lock shared).
    a_spans = [(s, e) for _, n, s, e in others if n == "a"]
    assert max(s for s, _ in a_spans) < min(e for _, e in a_spans)
    assert all(not exclusive for (r, _), (exclusive, _) in seen.items() if r != suspect_id)
    # Journaled: it ran alone; its interruption was not counted.
    b = runs[0].steps[1]
    assert (b.attempts, b.interruptions, b.suspect, b.exclusive) == (2, 0, True, True)
    assert not any(s.exclusive or s.suspect for r in runs[1:] for s in r.steps)


@pytest.mark.needs_plugin("redis")
async def test_a_suspect_step_that_cannot_run_alone_runs_beside_the_others_and_counts(
    project, store, monkeypatch, log_lines
) -> None:
    """A step in flight that waits for what never comes (another run's step,
    say) cannot keep a suspect step from running: after ``exclusive_wait`` it
    runs beside it, still suspect, and an interruption then counts."""
    monkeypatch.setenv("WISP_SAGAS__MAX_INTERRUPTIONS", "1")
    store(extra=NO_SCAN + "exclusive_wait = 0.3\n")
    rec = Recorder()
    rec.plan[("do", "reserve")] = ["hang"]  # the blocker's first reserve
    rec.plan[("do", "charge")] = ["hang"]  # the suspect's charge: its process dies
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        blocker_id = await sagas.start("order", {})
        await _until(lambda: rec.done("do") == ["reserve"], "the blocker's reserve in flight")
        suspect_id = await _interrupted_run(app, rec, lease=0.05)
        await asyncio.sleep(0.1)
        assert await sagas.recover() == 1
        await _until(lambda: rec.done("do") == ["reserve", "charge"], "the suspect's charge")
        lock = sagas.engine.attempt_lock
        assert (lock.exclusive, lock.shared) == (False, 2)
        charge = (await sagas.get(suspect_id)).steps[1]
        assert (charge.attempts, charge.suspect, charge.exclusive) == (2, True, False)
        assert sagas.counters.exclusive_waits_expired == 1
    # That process died; the next one blames the suspect step, not the blocker.
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        # Each run is recoverable once its lease lapses (a loaded machine may see
        # one lapse before the other).
        recovered = 0
        deadline = time.monotonic() + 10
        while recovered < 2 and time.monotonic() < deadline:
            recovered += await sagas.recover()
            if recovered < 2:
                await asyncio.sleep(0.05)
        assert recovered == 2
        suspect = await sagas.wait(suspect_id, timeout=30)
        blocker = await sagas.wait(blocker_id, timeout=30)
    assert suspect.status is RunStatus.COMPENSATED
    assert suspect.steps[1].interruptions == 1
    assert "interrupted 1 time(s)" in (suspect.steps[1].error or "")
    assert blocker.status is RunStatus.COMPLETED
    reserve = blocker.steps[0]
    assert (reserve.interruptions, reserve.suspect, reserve.exclusive) == (0, True, True)
    messages = [r["message"] for r in log_lines]
    assert any("waited 0.3s to run alone in its process, in vain" in m for m in messages)
    assert any(
        "step charge was interrupted while it ran beside other steps after its wait to run "
        "alone expired: counted (interruption 1 of 1); giving up" in m
        for m in messages
    )


@pytest.mark.needs_plugin("redis")
async def test_recovery_refuses_a_run_whose_definition_changed(project, store, log_lines) -> None:
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        run_id = await _interrupted_run(app, rec)
    app = make_app(project, make_saga(rec, version=2))
    # Bounded: it hung once in CI (where, unknown yet); a timeout says where.
    async with asyncio.timeout(60), app:
        sagas = app.services.get("sagas")
        await asyncio.sleep(0.6)
        await sagas.recover()
        await sagas.drain()
        run = await sagas.get(run_id)
        assert sagas.counters.refused >= 1
    assert run.status is RunStatus.RUNNING and rec.calls == []
    assert any(
        "saga 'order' is version 2 here but the run was started at version 1" in r["message"]
        for r in log_lines
    )


@pytest.mark.needs_plugin("redis")
async def test_compensation_on_request_undoes_completed_steps(project, store) -> None:
    store(extra=NO_SCAN)
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        run_id = await _interrupted_run(app, rec)
        await asyncio.sleep(0.4)  # the dead owner's lease lapses
        run = await sagas.compensate(run_id)
    assert run is not None and run.status is RunStatus.COMPENSATED
    assert rec.done("undo") == ["reserve"] and rec.done("do") == []


@pytest.mark.needs_plugin("redis")
async def test_a_live_owner_compensates_at_its_next_step_boundary_when_asked(
    project, store
) -> None:
    rec = Recorder()
    rec.plan[("do", "charge")] = ["wait"]
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        run_id = await sagas.start("order", {})
        await asyncio.wait_for(rec.waiting.wait(), 10)
        asked = await sagas.journal.request_compensation(run_id)
        assert asked.cancel and not asked.terminal
        rec.gate.set()
        run = await sagas.wait(run_id)
    assert run.status is RunStatus.COMPENSATED
    assert rec.done("do") == ["reserve", "charge"]  # ship never began
    assert rec.done("undo") == ["charge", "reserve"]
    assert (run.steps[2].status, run.steps[2].attempts) == (StepStatus.PENDING, 0)
    assert run.error == "compensation was asked for"


# -- declaring -------------------------------------------------------------------------


@pytest.mark.needs_plugin("redis")
async def test_declarations_are_checked_naming_the_culprit(project, store) -> None:
    saga = Saga("bad")
    with pytest.raises(ValueError, match="no step 'x' to compensate"):
        saga.compensation("x")(make_saga(Recorder()).definition().steps[0].action)
    with pytest.raises(ValueError, match="attempts must be greater than 0"):
        saga.step("s", attempts=0)(make_saga(Recorder()).definition().steps[0].action)
    with pytest.raises(ValueError, match="saga 'empty' has no steps"):
        SagaDefinition("empty", 1, ())
    step = make_saga(Recorder()).definition().steps[0]
    with pytest.raises(ValueError, match="step names used twice: reserve"):
        SagaDefinition("twice", 1, (step, Step("reserve", step.action)))
    app = make_app(project, make_saga(Recorder()), make_saga(Recorder()))
    with pytest.raises(wisp.PluginError, match="saga 'order' is declared twice"):
        await app.start()


# -- jobs, CLI, health -------------------------------------------------------------------


@pytest.mark.needs_plugin("jobs", "redis")
async def test_runs_go_to_job_workers_when_jobs_is_loaded(project, store, log_lines) -> None:
    store(plugins=("jobs",))
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        assert sagas.on_jobs
        run_id = await sagas.start("order", {"sku": "J"})
        assert rec.calls == []  # nothing runs until a worker takes the job
        jobs = app.services.get("jobs")
        (job,) = await jobs.list(type="sagas.run")
        assert job.payload == {"run_id": run_id}
        from wisp.plugins.jobs.worker import Worker

        worker = Worker(app, jobs.backend, jobs.config, concurrency=2)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        try:
            run = await sagas.wait(run_id, timeout=30)
        finally:
            stop.set()
            await task
    assert run.status is RunStatus.COMPLETED
    # The step ran as a saga invocation re-entered from the job.
    assert rec.contexts[0] == (wisp.InvocationType.SAGA, run_id)
    # Recovery and cleanup are schedules of the job workers.
    from wisp.plugins.jobs.schedule import collect_schedules

    schedules = {s.name: s for s in collect_schedules(app)}
    assert schedules["sagas.recover"].job_type == "sagas.recover"
    assert schedules["sagas.recover"].every == 0.2  # [sagas] recovery_seconds
    assert schedules["sagas.cleanup"].job_type == "sagas.cleanup"


@pytest.mark.needs_plugin("redis")
async def test_cleanup_removes_only_finished_runs_past_the_retention(project, store) -> None:
    from datetime import UTC, datetime, timedelta

    store(extra=NO_SCAN)
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        done_id = await sagas.start("order", {}, key="k1")
        await sagas.wait(done_id)
        live_id = await _interrupted_run(app, rec)
        assert await sagas.purge(datetime.now(UTC) - timedelta(hours=1)) == 0
        assert await sagas.purge(datetime.now(UTC) + timedelta(seconds=5)) == 1
        assert await sagas.get(done_id) is None
        assert (await sagas.get(live_id)).status is RunStatus.RUNNING
        # Its key is free again: a new start makes a new run.
        assert await sagas.start("order", {}, key="k1") != done_id


@pytest.mark.needs_plugin("redis")
@pytest.mark.slow
async def test_cli_list_show_resume_compensate_retry(project, store, wisp_exe) -> None:
    import subprocess

    rec = Recorder()
    rec.plan[("do", "ship")] = ["fail"] * 3
    # The CLI process declares the same saga through a wispconf.py.
    project.write("wispconf.py", CLI_WISPCONF)
    store(extra=NO_SCAN)
    app = make_app(project)  # the wispconf declares "order"
    async with app:
        sagas = app.services.get("sagas")
        failed = await sagas.wait(await sagas.start("order", {"fail": True}))
        health = await sagas.health()
        lost_id = await _interrupted_run(app, rec)
        held_id = await _interrupted_run(app, rec, lease=120)
    assert failed.status is RunStatus.COMPENSATED
    assert "1 compensated" in health.detail

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [wisp_exe, "--rootdir", str(project.root), "sagas", *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    assert failed.id in listed.stdout and "compensated" in listed.stdout
    shown = cli("show", failed.id)
    assert shown.returncode == 0, shown.stderr
    assert "2. ship: failed" in shown.stdout and "compensation done" in shown.stdout
    import json

    as_json = json.loads(cli("show", failed.id, "--json").stdout)
    assert as_json["status"] == "compensated" and "token" not in as_json
    assert [s["name"] for s in as_json["steps"]] == ["reserve", "ship"]
    for action in ("resume", "compensate"):
        done = cli(action, failed.id)
        assert done.returncode == 1 and "a finished run never changes" in done.stderr
    held = cli("resume", held_id)
    assert held.returncode == 1 and "is held by dead-owner until" in held.stderr
    resumed = cli("resume", lost_id)
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == f"run {lost_id}: completed"
    missing = cli("show", "nope")
    assert missing.returncode == 1 and "no run 'nope'" in missing.stderr
    retried = cli("retry", failed.id)
    assert retried.returncode == 0, retried.stderr
    new_id = retried.stdout.strip()
    app = make_app(project)
    async with app:
        again = await app.services.get("sagas").wait(new_id)
    assert again.input == {"fail": True} and again.id != failed.id
    bad = cli("list", "--status", "weird")
    assert bad.returncode == 2 and "invalid choice: 'weird'" in bad.stderr


CLI_WISPCONF = """
import wisp
from wisp.plugins.sagas.api import Saga

order = Saga("order", version=1)

@order.step("reserve")
async def reserve(step):
    return {"ok": 1}

@order.compensation("reserve")
async def unreserve(step):
    return None

@order.step("ship", attempts=2)
async def ship(step):
    if step.input.get("fail"):
        raise RuntimeError("no truck")
    return {"shipped": True}

@wisp.hookimpl
def wisp_sagas(app):
    return [order]
"""


@pytest.mark.needs_plugin("policy", "redis")
async def test_sagas_show_is_for_holders_of_sagas_view(project, store) -> None:
    store(plugins=("policy",))
    rec = Recorder()
    app = make_app(project, make_saga(rec))
    async with app:
        sagas = app.services.get("sagas")
        run_id = await sagas.start("order", {})
        await sagas.wait(run_id)
        denied = await app.call("sagas show", {"run_id": run_id}, guild_id=1, user_id=2)
        assert isinstance(denied.error, wisp.PermissionDenied)
        assert "sagas.view" in (denied.response.content or "")
        from wisp.plugins.policy.engine import Action, Rule, Scope

        await app.services.get("policy").add(Rule("sagas.view", Action.ALLOW, Scope.USER, 2, 0, 1))
        shown = await app.call("sagas show", {"run_id": run_id}, guild_id=1, user_id=2)
        assert shown.ok, shown.error
        assert f"run {run_id}: saga order v1, completed" in shown.response.content
        missing = await app.call("sagas show", {"run_id": "nope"}, guild_id=1, user_id=2)
        assert isinstance(missing.error, wisp.UserError)


async def test_blocking_the_store_turns_sagas_off_and_the_bot_still_starts(
    project, store, log_lines
) -> None:
    app = make_app(project, make_saga(Recorder()), block=["storage", "redis"])
    async with app:
        assert "sagas" not in app.services
    assert any("sagas are off" in r["message"] for r in log_lines)


# -- crashes: SIGKILL at every step boundary, mid-step and mid-compensation ---------------

CRASH_WISPCONF = """
import asyncio, os, signal, sqlite3
import wisp
from wisp.plugins.sagas.api import Saga

EFFECTS = os.environ["SAGA_EFFECTS"]
POINTS = set(os.environ.get("SAGA_KILL_POINTS", "").split())


def db():
    conn = sqlite3.connect(EFFECTS, timeout=30, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def log(run, step, kind, what):
    with db() as conn:
        conn.execute(
            "INSERT INTO log(run, step, kind, what, pid) VALUES (?, ?, ?, ?, ?)",
            (run, step, kind, what, os.getpid()),
        )


def maybe_kill(point):
    if point not in POINTS:
        return
    conn = db()
    fired = conn.execute("INSERT OR IGNORE INTO fired(point) VALUES (?)", (point,)).rowcount
    conn.close()
    if fired:
        os.kill(os.getpid(), signal.SIGKILL)


crashy = Saga("crashy", version=1)


def declare(name):
    async def action(step):
        log(step.run_id, name, "do", "start")
        if name == "s5" and step.input["fail"]:
            raise RuntimeError("s5 refuses")
        if name == "s3" and step.input.get("slow"):
            await asyncio.sleep(step.input["slow"])
        with db() as conn:  # the side effect, idempotent through the step's key
            conn.execute(
                "INSERT OR IGNORE INTO effects(key, run, step, kind) VALUES (?, ?, ?, 'do')",
                (step.key, step.run_id, name),
            )
        maybe_kill(f"do:{name}:mid")
        return {"done": name}

    async def undo(step):
        log(step.run_id, name, "undo", "start")
        assert step.output == {"done": name}, step.output
        with db() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO effects(key, run, step, kind) VALUES (?, ?, ?, 'undo')",
                (step.key, step.run_id, name),
            )
        maybe_kill(f"undo:{name}:mid")

    crashy.step(name, attempts=1 if name == "s5" else 3)(action)
    crashy.compensation(name)(undo)


for n in ("s1", "s2", "s3", "s4", "s5"):
    declare(n)


@wisp.hookimpl
def wisp_sagas(app):
    return [crashy]


@wisp.hookimpl
def wisp_saga_transition(app, run, step, event):
    if event == "step.completed":
        log(run.id, step, "do", "journaled")
        maybe_kill(f"boundary:do:{step}")
    elif event == "compensation.completed":
        log(run.id, step, "undo", "journaled")
        maybe_kill(f"boundary:undo:{step}")
"""

KILL_POINTS = [
    *(f"boundary:do:s{i}" for i in (1, 2, 3, 4)),
    *(f"do:s{i}:mid" for i in (1, 2, 3, 4, 5)),
    *(f"undo:s{i}:mid" for i in (4, 3, 2, 1)),
    *(f"boundary:undo:s{i}" for i in (3, 1)),
]


def _effects_db(path: Any) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE effects(key TEXT PRIMARY KEY, run TEXT, step TEXT, kind TEXT);"
        "CREATE TABLE log(seq INTEGER PRIMARY KEY AUTOINCREMENT, run TEXT, step TEXT, "
        "kind TEXT, what TEXT, pid INTEGER);"
        "CREATE TABLE fired(point TEXT PRIMARY KEY);"
    )
    conn.commit()
    conn.close()


def _rows(path: Any, sql: str) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        return list(conn.execute(sql))
    finally:
        conn.close()


async def _start_runs(project: Any, inputs: list[dict[str, Any]]) -> list[str]:
    """Store runs without driving them: this app sends them to job workers,
    and the crashing processes run them inline (``[sagas] use_jobs = false``)."""
    app = project.app()
    async with app:
        sagas = app.services.get("sagas")
        return [await sagas.start("crashy", data) for data in inputs]


def _recover(project: Any, wisp_exe: str, env: dict[str, str]) -> Any:
    import subprocess

    return subprocess.Popen(
        [wisp_exe, "--rootdir", str(project.root), "sagas", "recover", "--until-done"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env, "WISP_SAGAS__USE_JOBS": "false"},
    )


@pytest.mark.needs_plugin("jobs", "redis")
@pytest.mark.slow
async def test_sigkill_at_every_boundary_mid_step_and_mid_compensation(
    project, store, wisp_exe, tmp_path
) -> None:
    # The default max_interruptions (5), below the 15 kills: the runs are
    # driven side by side, so a kill finds steps of several runs in flight,
    # and a boundary kill the next step (its intent rides on the previous
    # step's completion).  Only the interruptions of attempts that ran alone
    # count, so none of these steps, killed at most at its own kill points,
    # gives up (blame by isolation; the in-process tests above check the rule).
    store(plugins=("jobs",))
    project.write("wispconf.py", CRASH_WISPCONF)
    effects = tmp_path / "effects.sqlite3"
    _effects_db(effects)
    env = {"SAGA_EFFECTS": str(effects), "SAGA_KILL_POINTS": " ".join(KILL_POINTS)}
    os.environ["SAGA_EFFECTS"] = str(effects)  # the test's own app imports the wispconf
    try:
        inputs = [{"fail": False}, {"fail": True}, {"fail": False}, {"fail": True}]
        run_ids = await _start_runs(project, inputs)
    finally:
        del os.environ["SAGA_EFFECTS"]
    killed: list[int] = []
    for _ in range(len(KILL_POINTS) + 3):
        proc = _recover(project, wisp_exe, env)
        _, err = await asyncio.to_thread(proc.communicate, timeout=120)
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, err  # only our SIGKILLs end a process early
        killed.append(proc.pid)
    else:
        pytest.fail("the runs never finished")
    fired = {p for (p,) in _rows(effects, "SELECT point FROM fired")}
    assert fired == set(KILL_POINTS) and len(killed) == len(KILL_POINTS)

    os.environ["SAGA_EFFECTS"] = str(effects)
    try:
        app = project.app()
        async with app:
            runs = {r: await app.services.get("sagas").get(r) for r in run_ids}
    finally:
        del os.environ["SAGA_EFFECTS"]
    done = set(_rows(effects, "SELECT run, step, kind FROM effects"))
    log = _rows(effects, "SELECT run, step, kind, what, pid FROM log ORDER BY seq")
    reruns = 0
    for run_id, data in zip(run_ids, inputs, strict=True):
        run = runs[run_id]
        if data["fail"]:
            assert run.status is RunStatus.COMPENSATED, run
            assert "s5 refuses" in (run.error or ""), run  # compensated for its failure
            want = {(run_id, f"s{i}", k) for i in (1, 2, 3, 4) for k in ("do", "undo")}
        else:
            assert run.status is RunStatus.COMPLETED, run
            want = {(run_id, f"s{i}", "do") for i in (1, 2, 3, 4, 5)}
        # Every completed step's effect once, every compensation's once, nothing else.
        assert {d for d in done if d[0] == run_id} == want
        for step in run.steps:
            for kind in ("do", "undo"):
                entries = [e for e in log if e[:3] == (run_id, step.name, kind)]
                starts = [e[4] for e in entries if e[3] == "start"]
                journaled = [i for i, e in enumerate(entries) if e[3] == "journaled"]
                # Once its completion was journaled, a step (or compensation)
                # never started again: no completed step ran twice.
                assert len(journaled) <= 1
                if journaled:
                    assert all(e[3] != "start" for e in entries[journaled[0] + 1 :])
                # A re-run happens only after the process running it was killed.
                assert all(pid in killed for pid in starts[:-1]), (step.name, kind, starts)
                assert len(set(starts)) == len(starts)
                reruns += max(0, len(starts) - 1)
                # Each re-run followed an interruption, counted or the one that
                # made the step suspect, at most one a kill.
                counted = step.interruptions if kind == "do" else step.comp_interruptions
                suspect = step.suspect if kind == "do" else step.comp_suspect
                assert len(starts) - 1 <= counted + suspect <= len(killed), (step, kind, starts)
                if kind == "do":
                    assert step.attempts >= len(starts)  # each run journaled its intent first
    mid = [p for p in KILL_POINTS if p.endswith(":mid")]
    assert reruns >= len(mid)  # each mid-step kill made its step run again
    print(f"{len(killed)} kills, {reruns} re-runs of interrupted steps and compensations")


@pytest.mark.needs_plugin("jobs", "redis")
@pytest.mark.slow
async def test_a_paused_owner_cannot_write_after_another_process_reclaimed(
    project, store, wisp_exe, tmp_path
) -> None:
    import signal

    store(plugins=("jobs",))
    project.write("wispconf.py", CRASH_WISPCONF)
    effects = tmp_path / "effects.sqlite3"
    _effects_db(effects)
    env = {"SAGA_EFFECTS": str(effects)}
    os.environ["SAGA_EFFECTS"] = str(effects)
    try:
        (run_id,) = await _start_runs(project, [{"fail": False, "slow": 0.6}])
    finally:
        del os.environ["SAGA_EFFECTS"]
    first = _recover(project, wisp_exe, env)
    try:
        for _ in range(600):
            if ("s3", "start") in {
                (e[0], e[1]) for e in _rows(effects, "SELECT step, what FROM log")
            }:
                break
            await asyncio.sleep(0.02)
        first.send_signal(signal.SIGSTOP)  # paused mid-step, past its lease
        await asyncio.sleep(1.3)
        second = _recover(project, wisp_exe, env)
        _, err2 = await asyncio.to_thread(second.communicate, timeout=120)
        assert second.returncode == 0, err2
    finally:
        first.send_signal(signal.SIGCONT)
    _, err1 = await asyncio.to_thread(first.communicate, timeout=120)
    assert first.returncode == 0, err1
    assert "lease lost" in err1
    log = _rows(effects, "SELECT step, kind, what, pid FROM log ORDER BY seq")
    by_first = [(s, k, w) for s, k, w, pid in log if pid == first.pid]
    # The paused owner wrote nothing after waking: no later step, no compensation.
    assert by_first == [
        ("s1", "do", "start"),
        ("s1", "do", "journaled"),
        ("s2", "do", "start"),
        ("s2", "do", "journaled"),
        ("s3", "do", "start"),
    ]
    os.environ["SAGA_EFFECTS"] = str(effects)
    try:
        app = project.app()
        async with app:
            run = await app.services.get("sagas").get(run_id)
    finally:
        del os.environ["SAGA_EFFECTS"]
    assert run.status is RunStatus.COMPLETED
    assert run.steps[2].attempts == 2  # the paused attempt, and the reclaimer's


@pytest.mark.needs_plugin("jobs", "redis")
@pytest.mark.slow
async def test_a_worker_killed_mid_saga_is_recovered_by_another_worker(
    project, store, tmp_path
) -> None:
    """The deployment default: runs on job workers.  SIGKILL the worker mid-step;
    another worker's scheduled recovery (or the job's own retry) finishes it."""
    import signal
    import subprocess
    import sys

    store(plugins=("jobs",), extra=FAST.replace("recovery_seconds = 0.2", "recovery_seconds = 1"))
    project.write("wispconf.py", CRASH_WISPCONF)
    effects = tmp_path / "effects.sqlite3"
    _effects_db(effects)
    env = {**os.environ, "SAGA_EFFECTS": str(effects)}
    os.environ["SAGA_EFFECTS"] = str(effects)
    try:
        (run_id,) = await _start_runs(project, [{"fail": False, "slow": 5}])
    finally:
        del os.environ["SAGA_EFFECTS"]

    def worker() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "wisp", "--rootdir", str(project.root), "worker"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

    first = worker()
    for _ in range(1500):
        if ("s3", "start") in {(e[0], e[1]) for e in _rows(effects, "SELECT step, what FROM log")}:
            break
        await asyncio.sleep(0.02)
    first.send_signal(signal.SIGKILL)
    await asyncio.to_thread(first.communicate, timeout=30)
    second = worker()
    try:
        os.environ["SAGA_EFFECTS"] = str(effects)
        app = project.app()
        async with app:
            run = await app.services.get("sagas").wait(run_id, poll=0.2, timeout=90)
    finally:
        del os.environ["SAGA_EFFECTS"]
        second.send_signal(signal.SIGTERM)
        _, err = await asyncio.to_thread(second.communicate, timeout=60)
    assert run.status is RunStatus.COMPLETED, err
    starts = [
        (s, pid) for s, w, pid in _rows(effects, "SELECT step, what, pid FROM log") if w == "start"
    ]
    assert [s for s, _ in starts] == ["s1", "s2", "s3", "s3", "s4", "s5"]
    assert {pid for s, pid in starts[:3]} == {first.pid}
    assert {pid for s, pid in starts[3:]} == {second.pid}
    assert run.steps[2].attempts == 2
