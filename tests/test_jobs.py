"""Durable jobs as a bot author meets them: handlers, enqueue, workers,
retries, dead letters, the CLI, graceful shutdown and crashes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import attrs
import pytest

import wisp
from wisp.plugins.jobs.api import JobStatus

pytestmark = pytest.mark.needs_plugin("jobs")

REDIS_URL = os.environ.get("WISP_TEST_REDIS_URL")

TASKS = """
import asyncio, os
import attrs
import wisp


LOG = os.environ.get("JOB_LOG")

def record(what, ctx):
    if LOG:
        with open(LOG, "a") as f:
            f.write(f"{what} {ctx.job_id} {os.getpid()}\\n")

@attrs.frozen
class Greeting:
    name: str
    loud: bool = False

@wisp.job("greet", max_attempts=3)
async def greet(ctx, payload: Greeting):
    record("start", ctx)
    text = f"hello {payload.name}" + ("!" if payload.loud else "")
    record("done", ctx)
    return {"said": text, "attempt": ctx.attempt, "type": ctx.invocation_type.value}

@wisp.job("flaky", max_attempts=3)
async def flaky(ctx, payload):
    record("start", ctx)
    if ctx.attempt < payload["succeed_on"]:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    record("done", ctx)
    return ctx.attempt

@wisp.job("slow")
async def slow(ctx, payload):
    record("start", ctx)
    await asyncio.sleep(payload["seconds"])
    record("done", ctx)
    return "slept"
"""


def setup_project(project, database, extra: str = "") -> None:
    """A bot whose jobs live in ``database`` ((url, schema)), or in Redis when
    ``database`` is ("redis", prefix)."""
    url, schema = database
    project.write("bot/tasks.py", TASKS)
    if url == "redis":
        store = (
            '[wisp]\nautoload = false\nplugins = ["redis", "jobs"]\ncommand_paths = ["bot"]\n'
            f'[redis]\nurl = "{REDIS_URL}"\n'
            f'[jobs]\nbackend = "redis"\nredis_prefix = "{schema}"\n'
        )
    else:
        store = (
            '[wisp]\nautoload = false\nplugins = ["storage", "jobs"]\ncommand_paths = ["bot"]\n'
            f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n[jobs]\n'
        )
    project.write(
        "wisp.toml",
        store + f"backoff_seconds = 0.05\nmax_backoff_seconds = 0.1\npoll_seconds = 0.1\n{extra}",
    )


@pytest.fixture
async def redis_store(redis_url):
    """("redis", a fresh key prefix); the keys are deleted afterwards."""
    import redis.asyncio as aioredis

    prefix = f"test:jobs:{uuid.uuid4().hex[:10]}:"
    yield "redis", prefix
    client = aioredis.Redis.from_url(redis_url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def cli(project, *args: str, env: dict[str, str] | None = None, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "wisp", "--rootdir", str(project.root), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        **kw,
    )


def run_cli(project, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = cli(project, *args, env=env)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


# -- the kernel's side: job handlers are targets ------------------------------------


@attrs.frozen
class Point:
    x: int
    y: int


async def test_job_handlers_run_through_the_pipeline_with_a_job_context(project) -> None:
    seen = []

    @wisp.middleware(wisp.Order.OBSERVE)
    async def watch(ctx, call_next):
        seen.append((ctx.invocation_type, ctx.name, ctx.job_id, ctx.attempt))
        return await call_next(ctx)

    @wisp.job("plot")
    async def plot(ctx, payload: Point) -> int:
        return payload.x * payload.y

    class Plugin:
        @wisp.hookimpl
        def wisp_middleware(self, target):
            return watch

        @wisp.hookimpl
        def wisp_job_handlers(self):
            return {"plot": plot}

    project.write("wisp.toml", "")
    app = project.app(plugins=[])
    app.register(Plugin(), "plugin")
    async with app:
        outcome = await app.run_job("plot", {"x": 6, "y": 7}, job_id="j1", attempt=2)
        assert outcome.ok and outcome.value == 42
        assert seen == [(wisp.InvocationType.JOB, "plot", "j1", 2)]
        bad = await app.run_job("plot", {"x": 6})
        assert isinstance(bad.error, ValueError) and "does not fit Point" in str(bad.error)
        with pytest.raises(KeyError, match="no handler for job type 'nope'; known: plot"):
            await app.run_job("nope", None)


def test_two_handlers_for_one_job_type_name_both_plugins(project) -> None:
    async def one(ctx, payload) -> None:
        pass

    class A:
        @wisp.hookimpl
        def wisp_job_handlers(self):
            return {"x": one}

    class B:
        @wisp.hookimpl
        def wisp_job_handlers(self):
            return {"x": one}

    project.write("wisp.toml", "")
    app = project.app(plugins=[])
    app.register(A(), "a")
    app.register(B(), "b")
    with pytest.raises(
        wisp.PluginError,
        match=r"job type 'x' has two handlers: from plugin 'b' .* and from plugin 'a'",
    ):
        app.configure()
    with pytest.raises(TypeError, match="must be an async function"):
        wisp.job("sync")(lambda ctx, payload: None)


# -- enqueue ---------------------------------------------------------------------------


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
async def test_enqueue_checks_its_input_and_keys_make_one_job(project, database) -> None:
    setup_project(project, database)
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        with pytest.raises(TypeError, match="job payload is not JSON"):
            await jobs.enqueue("greet", {"when": object()})
        from datetime import datetime

        with pytest.raises(ValueError, match="time zone"):
            await jobs.enqueue("greet", {}, run_at=datetime(2030, 1, 1))
        results = await asyncio.gather(
            *(jobs.enqueue("greet", {"name": str(i)}, idempotency_key="once") for i in range(200))
        )
        assert len({j.id for j in results}) == 1
        assert len(await jobs.list(type="greet")) == 1
        job = await jobs.enqueue("greet", {"name": "ann"})  # no key: a new one
        assert job.max_attempts == 3 and job.queue == "default"  # from @wisp.job


# -- workers -----------------------------------------------------------------------------


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
async def test_worker_runs_retries_and_dead_letters(project, database) -> None:
    setup_project(project, database)
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        ok = await jobs.enqueue("greet", {"name": "ann", "loud": True})
        recovers = await jobs.enqueue("flaky", {"succeed_on": 2})
        hopeless = await jobs.enqueue("flaky", {"succeed_on": 99})
    code, _, err = await asyncio.to_thread(run_cli, project, "worker", "--burst")
    assert code == 0, err
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        done = await jobs.get(ok.id)
        assert done.status is JobStatus.COMPLETED
        assert done.result == {"said": "hello ann!", "attempt": 1, "type": "job"}
        again = await jobs.get(recovers.id)
        assert (again.status, again.attempts, again.result) == (JobStatus.COMPLETED, 2, 2)
        dead = await jobs.get(hopeless.id)
        assert (dead.status, dead.attempts) == (JobStatus.DEAD_LETTER, 3)
        assert dead.error == "ConnectionError: attempt 3 failed"
    assert "dead-lettered after 3 attempts" in err
    code, out, _ = await asyncio.to_thread(
        run_cli, project, "jobs", "list", "--status", "dead_letter"
    )
    assert code == 0 and out.split()[0] == hopeless.id and "dead_letter" in out
    code, out, _ = await asyncio.to_thread(run_cli, project, "jobs", "show", hopeless.id)
    assert json.loads(out)["error"] == "ConnectionError: attempt 3 failed"
    code, out, _ = await asyncio.to_thread(run_cli, project, "jobs", "retry", hopeless.id)
    assert (code, out) == (0, f"job {hopeless.id} is pending again\n")
    code, _, err = await asyncio.to_thread(run_cli, project, "jobs", "retry", ok.id)
    assert code == 1 and "is completed; only dead_letter or failed jobs are retried" in err
    code, out, _ = await asyncio.to_thread(
        run_cli, project, "jobs", "purge", "--status", "completed"
    )
    assert (code, out) == (0, "purged 2 completed job(s)\n")
    code, _, err = await asyncio.to_thread(run_cli, project, "jobs", "show", "nope")
    assert code == 1 and "no job 'nope'" in err
    code, _, err = await asyncio.to_thread(run_cli, project, "worker", "--concurrency", "0")
    assert code == 2 and "0 must be at least 1" in err


def _lines(path: Path) -> list[tuple[str, str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
async def test_sigterm_lets_running_jobs_finish_or_releases_them(project, database, tmp_path):
    setup_project(project, database, "shutdown_seconds = 1.0\n")
    log = tmp_path / "log.txt"
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        quick = await jobs.enqueue("slow", {"seconds": 0.3})
        stuck = await jobs.enqueue("slow", {"seconds": 30})
    worker = cli(project, "worker", env={"JOB_LOG": str(log)})
    # Both jobs running, so the worker's signal handlers are in place (a loaded
    # machine can take seconds to start a worker).
    for _ in range(1200):
        if len([x for x in _lines(log) if x[0] == "start"]) == 2:
            break
        await asyncio.sleep(0.05)
    else:
        worker.kill()
        pytest.fail(f"the worker did not start both jobs: {worker.communicate()[1]}")
    worker.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(worker.communicate, timeout=30)
    assert worker.returncode == 0, err
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        assert (await jobs.get(quick.id)).status is JobStatus.COMPLETED
        released = await jobs.get(stuck.id)
        assert (released.status, released.attempts) == (JobStatus.PENDING, 0)
        assert released.lease_owner is None
    assert f"job {stuck.id} (slow) released for another worker" in err


@pytest.mark.needs_plugin("redis")
@pytest.mark.slow
async def test_sigkill_mid_run_loses_no_job_on_redis(project, redis_store, tmp_path) -> None:
    await test_sigkill_mid_run_loses_no_job(project, redis_store, tmp_path)


@pytest.mark.needs_plugin("redis")
@pytest.mark.slow
async def test_two_workers_never_run_a_job_twice_on_redis(project, redis_store, tmp_path) -> None:
    await test_two_workers_never_run_a_job_twice(project, redis_store, tmp_path)


@pytest.mark.needs_plugin("redis")
@pytest.mark.slow
async def test_worker_runs_retries_and_dead_letters_on_redis(project, redis_store) -> None:
    await test_worker_runs_retries_and_dead_letters(project, redis_store)


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
async def test_sigkill_mid_run_loses_no_job(project, database, tmp_path) -> None:
    """100 jobs, a worker SIGKILLed part way, a second worker after the leases lapse:
    every job completes; only the jobs in flight at the kill run twice."""
    setup_project(project, database, "lease_seconds = 2.0\nheartbeat_seconds = 0.5\n")
    log = tmp_path / "log.txt"
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        ids = [(await jobs.enqueue("slow", {"seconds": 0.02})).id for _ in range(100)]
    env = {"JOB_LOG": str(log)}
    first = cli(project, "worker", "--concurrency", "5", env=env)
    for _ in range(3000):  # kill it after 30 jobs, with some running
        kinds = Counter(x[0] for x in _lines(log))
        if kinds["done"] >= 30 and kinds["start"] > kinds["done"]:
            break
        await asyncio.sleep(0.005)
    first.send_signal(signal.SIGKILL)
    await asyncio.to_thread(first.communicate, timeout=30)
    started = {x[1] for x in _lines(log) if x[0] == "start"}
    app = project.app()
    async with app:
        recorded = {
            j.id
            for j in await app.services.get("jobs").list(status=JobStatus.COMPLETED, limit=1000)
        }
    # In flight: started, and not recorded complete when the worker died (a job
    # that finished but whose completion was not yet written runs again too).
    in_flight = started - recorded
    assert 0 < len(recorded) < 100 and in_flight
    code, _, err = await asyncio.to_thread(
        run_cli, project, "worker", "--burst", "--concurrency", "5", env=env
    )
    assert code == 0, err
    app = project.app()
    async with app:
        stored = {j.id: j for j in await app.services.get("jobs").list(limit=1000)}
    assert all(stored[i].status is JobStatus.COMPLETED for i in ids)
    runs = Counter(x[1] for x in _lines(log) if x[0] == "start")
    twice = {i for i, n in runs.items() if n > 1}
    assert set(runs) == set(ids)
    assert twice <= in_flight  # duplicates only for what was running at the kill
    assert all(n <= 2 for n in runs.values())
    print(f"in flight at the kill: {len(in_flight)}, run again: {len(twice)}")


@pytest.mark.needs_plugin("storage")
@pytest.mark.slow
async def test_two_workers_never_run_a_job_twice(project, database, tmp_path) -> None:
    jobs_count = 1000 if database[0].startswith("sqlite") else 5000
    setup_project(project, database)
    log = tmp_path / "log.txt"
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        await asyncio.gather(*(jobs.enqueue("slow", {"seconds": 0}) for _ in range(jobs_count)))
    env = {"JOB_LOG": str(log)}
    started = time.monotonic()
    workers = [cli(project, "worker", "--burst", "--concurrency", "20", env=env) for _ in range(2)]
    for w in workers:
        _, err = await asyncio.to_thread(w.communicate, timeout=600)
        assert w.returncode == 0, err
    runs = Counter(x[1] for x in _lines(log) if x[0] == "start")
    pids = {x[2] for x in _lines(log)}
    assert len(runs) == jobs_count and max(runs.values()) == 1
    assert len(pids) == 2  # both took part
    print(f"{jobs_count} jobs by 2 workers in {time.monotonic() - started:.1f}s")


@pytest.mark.needs_plugin("storage")
async def test_enqueue_survives_a_dropped_connection(project, database) -> None:
    if not database[0].startswith("postgresql"):
        pytest.skip("the separate enqueue pool is PostgreSQL's")
    import asyncpg
    from sqlalchemy import text

    setup_project(project, database)
    app = project.app()
    async with app:
        jobs = app.services.get("jobs")
        await jobs.enqueue("greet", {"name": "ann"})
        pool = jobs.backend._fast
        async with pool.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = await asyncpg.connect(database[0].replace("postgresql+asyncpg", "postgresql"))
        try:
            assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await admin.close()
        job = await jobs.enqueue("greet", {"name": "bob"})  # on a fresh connection
        assert (await jobs.get(job.id)).payload == {"name": "bob"}
        assert len(await jobs.list(type="greet")) == 2


@pytest.mark.needs_plugin("redis")
async def test_an_enqueue_repeated_after_a_lost_reply_finds_its_own_row_on_redis(
    project, redis_store
) -> None:
    await test_an_enqueue_repeated_after_a_lost_reply_finds_its_own_row(project, redis_store)


@pytest.mark.needs_plugin("storage")
async def test_an_enqueue_repeated_after_a_lost_reply_finds_its_own_row(project, database) -> None:
    from wisp.plugins.jobs.api import NewJob

    setup_project(project, database)
    app = project.app()
    async with app:
        backend = app.services.get("jobs").backend
        job = NewJob(id="0" * 32, type="greet", payload={"name": "ann"}, max_attempts=3)
        first, created = await backend.enqueue(job)
        again, created_again = await backend.enqueue(job)  # as a retry would send it
        assert created and created_again and again.id == first.id
        assert len(await backend.list(type="greet")) == 1


@pytest.mark.slow
async def test_the_jobs_cli_refuses_bad_input_and_writes_nothing(project) -> None:
    setup_project(project, (f"sqlite+aiosqlite:///{project.root / 'jobs.sqlite3'}", ""))
    for args, message in [
        (("jobs", "enqueue", "nope"), "no handler for job type 'nope' (known: flaky, greet, slow)"),
        (("jobs", "enqueue", "greet", "--payload", "{bad"), "--payload is not JSON"),
        (("jobs", "enqueue", "greet", "--delay", "-5"), "-5 must be 0 or more"),
        (("jobs", "purge", "--status", "completed", "--older-than", "-1"), "must be 0 or more"),
        (("jobs", "purge", "--status", "pending"), "invalid choice: 'pending'"),
    ]:
        code, _, err = await asyncio.to_thread(run_cli, project, *args)
        assert code == 2 and message in err, (args, err)
    code, out, err = await asyncio.to_thread(run_cli, project, "jobs", "list")
    assert (code, out) == (0, "") and "no jobs" in err
