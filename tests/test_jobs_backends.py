"""One conformance suite for every jobs backend: SQLite, PostgreSQL, Redis.

Each test runs three times through the ``backend`` fixture.  PostgreSQL needs
``WISP_TEST_DATABASE_URL`` and Redis ``WISP_TEST_REDIS_URL``; each is skipped
only when its variable is unset (one that is named but unreachable fails).
Times come from the backend's clock; the tests run on the same machine as the
servers, so the test's clock is close enough for "in the past" and "in 1.5 s".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from wisp.plugins.jobs.api import Job, JobStatus, NewJob
from wisp.testing import WispProject

# What the backend fixture leaves on the test item: its kind, and how to open
# another backend: on the same store (another process's view of it), or with
# ``elsewhere=True`` on a store of its own (another schema, file or prefix).
KIND = pytest.StashKey[str]()
OPEN = pytest.StashKey[Callable[..., Awaitable[Any]]]()

# The conftest's ``database`` fixture knows sqlite and postgresql; the Redis
# case takes its SQLite path (a file name, nothing is opened) and ignores it.
pytestmark = [
    pytest.mark.needs_plugin("storage", "jobs"),
    pytest.mark.parametrize(
        ("backend", "database"),
        [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("redis", "sqlite")],
        indirect=True,
        ids=["sqlite", "postgresql", "redis"],
    ),
]


@pytest.fixture
async def backend(request, project, database):
    kind = request.param
    async with contextlib.AsyncExitStack() as stack:
        if kind == "redis":
            opener = await _redis_opener(stack, request.getfixturevalue("redis_url"))
        else:
            opener = _sql_opener(stack, project, database)
        request.node.stash[KIND] = kind
        request.node.stash[OPEN] = opener
        yield await opener()


def _wisp_toml(url: str, schema: str) -> str:
    return (
        '[wisp]\nautoload = false\nplugins = ["storage", "jobs"]\n'
        f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n'
    )


def _sql_opener(
    stack: contextlib.AsyncExitStack, project: Any, database: tuple[str, str]
) -> Callable[..., Awaitable[Any]]:
    url, schema = database
    project.write("wisp.toml", _wisp_toml(url, schema))

    async def opener(*, elsewhere: bool = False) -> Any:
        where = project
        if elsewhere:
            where = WispProject(project.root.parent / f"elsewhere-{uuid.uuid4().hex[:8]}")
            where.root.mkdir()
            if url.startswith("sqlite"):
                where.write("wisp.toml", _wisp_toml(f"sqlite+aiosqlite:///{where.root}/db", ""))
            else:
                where.write("wisp.toml", _wisp_toml(url, await _pg_schema(stack, url)))
        app = where.app()
        await stack.enter_async_context(app)
        return app.services.get("jobs").backend

    return opener


async def _pg_schema(stack: contextlib.AsyncExitStack, url: str) -> str:
    """A fresh schema, dropped at the end (after the apps using it stop)."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    stack.push_async_callback(conn.close)
    stack.push_async_callback(conn.execute, f"DROP SCHEMA {schema} CASCADE")
    await conn.execute(f"CREATE SCHEMA {schema}")
    return schema


async def _redis_opener(
    stack: contextlib.AsyncExitStack, url: str
) -> Callable[..., Awaitable[Any]]:
    from wisp.plugins.jobs.redisbackend import RedisBackend
    from wisp.plugins.redis import RedisService

    base = f"test:jobs:{uuid.uuid4().hex}:"

    async def service() -> Any:
        made = RedisService(url)  # as the redis plugin makes it (a bounded pool)
        await made.start()
        stack.push_async_callback(made.stop)
        return made

    admin = (await service()).client

    async def cleanup() -> None:
        keys = [key async for key in admin.scan_iter(match=base + "*", count=1000)]
        if keys:
            await admin.delete(*keys)

    stack.push_async_callback(cleanup)

    async def opener(*, elsewhere: bool = False) -> Any:
        prefix = base + ("elsewhere:" if elsewhere else "main:")
        made = RedisBackend(await service(), prefix=prefix)
        stack.push_async_callback(made.close)
        return made

    return opener


@pytest.fixture
async def other(request, backend):
    """A second backend on the same store, as another process would have."""
    return await request.node.stash[OPEN]()


@pytest.fixture
async def elsewhere(request, backend):
    """A backend on a store of its own (another schema, SQLite file or prefix)."""
    return await request.node.stash[OPEN](elsewhere=True)


@pytest.fixture
def kind(request, backend) -> str:
    return request.node.stash[KIND]


# -- helpers --------------------------------------------------------------------------


def new(job_type: str = "t", payload: Any = None, **kw: Any) -> NewJob:
    return NewJob(id=uuid.uuid4().hex, type=job_type, payload=payload, **kw)


async def add(backend, job_type: str = "t", payload: Any = None, **kw: Any) -> Job:
    job, created = await backend.enqueue(new(job_type, payload, **kw))
    assert created
    return job


async def claim(
    backend,
    worker: str = "w1",
    queues=("default",),
    types=("t",),
    limit: int = 100,
    lease: float = 30.0,
) -> list[Job]:
    return await backend.claim(worker, list(queues), list(types), limit, lease)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def is_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


# -- enqueue and get ----------------------------------------------------------------


async def test_enqueue_and_get_round_trip(backend) -> None:
    run_at = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    before = datetime.now(UTC)
    job, created = await backend.enqueue(
        NewJob(
            id="a" * 32,
            type="mail.send",
            payload={"to": "x@example.com"},
            queue="mail",
            priority=3,
            max_attempts=7,
            run_at=run_at,
            idempotency_key="mail-1",
        )
    )
    assert created
    assert (job.id, job.type, job.payload, job.queue) == (
        "a" * 32,
        "mail.send",
        {"to": "x@example.com"},
        "mail",
    )
    assert (job.priority, job.max_attempts, job.attempts) == (3, 7, 0)
    assert job.status is JobStatus.PENDING
    assert job.run_at == run_at  # stored as given, to the microsecond
    assert job.idempotency_key == "mail-1"
    assert job.lease_owner is job.lease_token is job.lease_expires_at is None
    assert job.error is job.result is job.finished_at is None
    assert all(is_utc(t) for t in (job.run_at, job.created_at, job.updated_at))
    assert abs(job.created_at - before) < timedelta(seconds=30)
    assert await backend.get(job.id) == job
    assert await backend.get("b" * 32) is None

    now_job = await add(backend)  # no run_at: now, by the backend's clock
    assert is_utc(now_job.run_at)
    assert abs(now_job.run_at - now_job.created_at) < timedelta(seconds=1)


PAYLOADS = [
    None,
    0,
    -17,
    2**53 + 1,
    3.25,
    0.1,
    -1.5e-7,
    True,
    False,
    "",
    "plain",
    'quotes " \\ backslash\nnewline\ttab',
    "héllo wörld ✓ 日本語 🚀 عربى",
    [],
    {},
    [1, "two", 3.5, None, True, [], {}],
    {
        "nested": {"deeper": {"list": [{"a": 1}, {"b": [2, [3, [4]]]}], "none": None}},
        "unicode key ✓": "välue 🚀",
        "empty": {"list": [], "dict": {}},
        "numbers": [0, -1, 1.5, 1e-3, 12345678901234],
    },
]


async def test_payloads_and_results_round_trip_as_json(backend) -> None:
    jobs = [await add(backend, payload=payload) for payload in PAYLOADS]
    for job, payload in zip(jobs, PAYLOADS, strict=True):
        stored = await backend.get(job.id)
        assert stored.payload == payload
        assert type(stored.payload) is type(payload)
    claimed = {job.id: job for job in await claim(backend)}
    assert [claimed[job.id].payload for job in jobs] == PAYLOADS
    for job, payload in zip(jobs, PAYLOADS, strict=True):
        assert await backend.complete(job.id, claimed[job.id].lease_token, payload)
        assert (await backend.get(job.id)).result == payload


async def test_complete_many_writes_each_held_job_and_refuses_lost_leases(backend) -> None:
    jobs = [await add(backend) for _ in range(5)]
    claimed = {job.id: job for job in await claim(backend)}
    results = [None, 1, {"a": [1, "b"]}, "text", [True, None]]
    batch = [(job.id, claimed[job.id].lease_token, r) for job, r in zip(jobs, results, strict=True)]
    lost = jobs[2].id
    batch[2] = (lost, "not-its-token", "stale")
    batch.append(("no-such-job", "x", None))
    assert await backend.complete_many(batch) == {j.id for j in jobs} - {lost}
    for job, result in zip(jobs, results, strict=True):
        stored = await backend.get(job.id)
        if job.id == lost:
            assert stored.status is JobStatus.RUNNING and stored.result is None
        else:
            assert stored.status is JobStatus.COMPLETED and stored.result == result
            assert stored.lease_token is None and is_utc(stored.finished_at)
    assert await backend.complete_many([]) == set()
    # A batch sent again changes nothing: each lease was released by the first.
    assert await backend.complete_many(batch) == set()


# -- idempotency ------------------------------------------------------------------


async def test_an_idempotency_key_returns_the_job_it_made(backend) -> None:
    first, created = await backend.enqueue(new(payload={"n": 1}, idempotency_key="k1"))
    assert created
    again, created = await backend.enqueue(
        new("other", payload={"n": 2}, idempotency_key="k1", queue="q2", priority=9)
    )
    assert not created
    assert again.id == first.id and again.payload == {"n": 1} and again.type == "t"
    assert again.queue == "default" and again.priority == 0
    different, created = await backend.enqueue(new(idempotency_key="k2"))
    assert created and different.id != first.id
    assert (await backend.counts())["pending"] == 2


@pytest.mark.slow
async def test_a_thousand_concurrent_enqueues_with_one_key_make_one_job(backend) -> None:
    results = await asyncio.gather(
        *(backend.enqueue(new(payload={"i": i}, idempotency_key="once")) for i in range(1000))
    )
    assert sum(created for _, created in results) == 1
    (winner,) = {job.id for job, _ in results}
    maker = next(job for job, created in results if created)
    assert all(job.payload == maker.payload for job, _ in results)
    assert [job.id for job in await backend.list(limit=2000)] == [winner]
    assert (await backend.counts())["pending"] == 1


# -- claiming ------------------------------------------------------------------------


async def test_claim_takes_highest_priority_then_oldest_run_at(backend) -> None:
    now = datetime.now(UTC)
    spec = [  # (name, queue, priority, seconds ago)
        ("low-old", "a", -1, 40),
        ("mid-old", "b", 0, 30),
        ("mid-new", "a", 0, 5),
        ("high-new", "b", 5, 10),
        ("high-old", "a", 5, 20),
        ("tie-2", "b", 1, 15),
        ("tie-1", "a", 1, 15),
    ]
    ids = {}
    for name, queue, priority, seconds in spec:
        job_id = f"{name:_<32}"
        await backend.enqueue(
            NewJob(
                id=job_id,
                type="t",
                payload=name,
                queue=queue,
                priority=priority,
                run_at=now - timedelta(seconds=seconds),
            )
        )
        ids[job_id] = name
    first = await claim(backend, queues=["a", "b"], limit=3)
    rest = await claim(backend, queues=["b", "a"], limit=10)
    order = [job.payload for job in first + rest]
    assert order == ["high-old", "high-new", "tie-1", "tie-2", "mid-old", "mid-new", "low-old"]
    assert all(job.status is JobStatus.RUNNING and job.attempts == 1 for job in first + rest)


async def test_claim_merges_queues_and_types_by_run_at(backend) -> None:
    now = datetime.now(UTC)
    made = []
    for i in range(14):  # most in queue a: a claim reads several of its jobs in a row
        queue = "b" if i in (9, 10) else "a"
        made.append(
            await add(
                backend,
                "x" if i % 2 else "y",
                payload=i,
                queue=queue,
                run_at=now - timedelta(seconds=100 - i),
            )
        )
    first = await claim(backend, queues=["b", "a"], types=["x", "y"], limit=12)
    assert [job.payload for job in first] == list(range(12))
    rest = await claim(backend, queues=["a", "b"], types=["y", "x"], limit=12)
    assert [job.payload for job in rest] == [12, 13]


@pytest.mark.slow
async def test_claim_keeps_to_its_queues_types_and_limit(backend) -> None:
    old = ago(60)
    # Many due jobs of a type nobody asks for, ahead of everything else: a claim
    # must look past them, and must neither take nor lose them.
    unknown = [
        await add(backend, "unknown", priority=10, run_at=old, queue=q)
        for q in ("a", "b")
        for _ in range(120)
    ]
    xs = [await add(backend, "x", queue="a", payload=i) for i in range(3)]
    ys = [await add(backend, "y", queue="a", payload=i) for i in range(2)]
    other_queue = await add(backend, "x", queue="b")

    got = await claim(backend, queues=["a"], types=["x", "y"], limit=2)
    assert len(got) == 2
    assert all(job.queue == "a" and job.type in ("x", "y") for job in got)
    got += await claim(backend, queues=["a"], types=["x", "y"], limit=10)
    assert sorted(job.id for job in got) == sorted(job.id for job in xs + ys)
    assert await claim(backend, queues=["a"], types=["x", "y"]) == []
    assert await claim(backend, queues=["a"], types=["y"]) == []
    assert (await backend.get(other_queue.id)).status is JobStatus.PENDING

    for job in unknown:
        stored = await backend.get(job.id)
        assert stored.status is JobStatus.PENDING and stored.attempts == 0
    assert (await backend.counts())["pending"] == len(unknown) + 1
    late = await claim(backend, queues=["a", "b"], types=["unknown", "x"], limit=1000)
    assert {job.id for job in late} == {job.id for job in unknown} | {other_queue.id}
    assert await claim(backend, queues=[], types=["x"]) == []
    assert await claim(backend, types=[]) == []
    assert await claim(backend, limit=0) == []


@pytest.mark.slow
async def test_a_job_is_not_claimed_before_its_run_at(backend) -> None:
    due = await add(backend, run_at=ago(1))
    later = await add(backend, run_at=datetime.now(UTC) + timedelta(seconds=1.5))
    assert [job.id for job in await claim(backend)] == [due.id]
    assert await claim(backend) == []
    await asyncio.sleep(1.8)
    assert [job.id for job in await claim(backend)] == [later.id]


async def test_concurrent_claimers_never_take_the_same_job(backend) -> None:
    jobs = [await add(backend, payload=i) for i in range(200)]
    batches = await asyncio.gather(
        *(claim(backend, worker=f"w{i}", limit=30, lease=60) for i in range(10))
    )
    taken = [job.id for batch in batches for job in batch]
    assert len(taken) == len(set(taken))
    assert all(len(batch) <= 30 for batch in batches)
    tokens = [job.lease_token for batch in batches for job in batch]
    assert None not in tokens and len(set(tokens)) == len(tokens)
    # Under contention a claimer may skip rows another holds; the rest are still there.
    taken += [job.id for job in await claim(backend, limit=500)]
    assert sorted(taken) == sorted(job.id for job in jobs)
    assert (await backend.counts())["running"] == 200


# -- leases ------------------------------------------------------------------------


async def test_an_expired_lease_is_claimed_again_and_fences_the_first_worker(
    backend,
) -> None:
    job = await add(backend, max_attempts=3)
    (first,) = await claim(backend, worker="w1", lease=0.5)
    assert first.attempts == 1 and first.lease_owner == "w1" and first.lease_token
    assert is_utc(first.lease_expires_at)
    assert await claim(backend, worker="w2") == []  # the lease is live
    await asyncio.sleep(0.8)
    (second,) = await claim(backend, worker="w2", lease=30)
    assert second.id == job.id and second.attempts == 2 and second.lease_owner == "w2"
    assert second.lease_token != first.lease_token
    # The stalled first worker's writes are refused.
    assert await backend.heartbeat("w1", {job.id: first.lease_token}, 30) == set()
    assert not await backend.complete(job.id, first.lease_token, "stale")
    assert not await backend.fail(job.id, first.lease_token, "stale", None)
    assert not await backend.release(job.id, first.lease_token)
    assert (await backend.get(job.id)).status is JobStatus.RUNNING
    assert await backend.complete(job.id, second.lease_token, "fresh")
    done = await backend.get(job.id)
    assert done.status is JobStatus.COMPLETED and done.result == "fresh"
    assert done.lease_token is done.lease_owner is done.lease_expires_at is None
    assert is_utc(done.finished_at)
    assert not await backend.complete(job.id, second.lease_token, "twice")


@pytest.mark.slow
async def test_heartbeats_keep_a_lease(backend) -> None:
    job = await add(backend)
    (held,) = await claim(backend, worker="w1", lease=1.0)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        assert await backend.heartbeat("w1", {job.id: held.lease_token}, 1.0) == {job.id}
        assert await claim(backend, worker="w2", lease=1.0) == []
    stored = await backend.get(job.id)
    assert stored.lease_token == held.lease_token and stored.attempts == 1
    assert stored.lease_expires_at > held.lease_expires_at
    assert await backend.complete(job.id, held.lease_token, None)


async def test_a_heartbeat_keeps_only_leases_whose_token_matches(backend) -> None:
    a, b, c = [await add(backend, payload=i) for i in range(3)]
    claimed = {job.id: job.lease_token for job in await claim(backend)}
    assert set(claimed) == {a.id, b.id, c.id}
    kept = await backend.heartbeat(
        "w1",
        {a.id: claimed[a.id], b.id: "0" * 32, c.id: claimed[c.id], "f" * 32: "0" * 32},
        30,
    )
    assert kept == {a.id, c.id}
    assert await backend.complete(c.id, claimed[c.id], None)
    assert await backend.heartbeat("w1", {a.id: claimed[a.id], c.id: claimed[c.id]}, 30) == {a.id}
    assert await backend.heartbeat("w1", {}, 30) == set()


async def test_a_lapsed_last_attempt_is_dead_lettered_by_the_next_claim(backend) -> None:
    last = await add(backend, "t", max_attempts=1)
    spare = await add(backend, "s", max_attempts=2)
    held = await claim(backend, types=["t", "s"], lease=0.3)
    assert {job.id for job in held} == {last.id, spare.id}
    await asyncio.sleep(0.6)
    # Any claim buries it, whatever queues and types it asks for.
    assert await claim(backend, worker="w2", queues=["elsewhere"], types=["t"]) == []
    buried = await backend.get(last.id)
    assert buried.status is JobStatus.DEAD_LETTER
    assert "lost" in buried.error
    assert buried.lease_token is buried.lease_owner is buried.lease_expires_at is None
    assert is_utc(buried.finished_at) and buried.attempts == 1
    (again,) = await claim(backend, worker="w2", types=["t", "s"])
    assert again.id == spare.id and again.attempts == 2
    counts = await backend.counts()
    assert (counts["dead_letter"], counts["running"]) == (1, 1)


# -- outcomes ----------------------------------------------------------------------


@pytest.mark.slow
async def test_fail_with_retry_at_waits_and_counts_the_attempt(backend) -> None:
    job = await add(backend)
    (held,) = await claim(backend)
    retry_at = datetime.now(UTC) + timedelta(seconds=1)
    assert await backend.fail(job.id, held.lease_token, "boom", retry_at)
    failed = await backend.get(job.id)
    assert failed.status is JobStatus.FAILED and failed.error == "boom"
    assert failed.run_at == retry_at and failed.attempts == 1
    assert failed.lease_token is failed.lease_owner is failed.lease_expires_at is None
    assert failed.finished_at is None
    assert not await backend.fail(job.id, held.lease_token, "again", retry_at)
    assert await claim(backend) == []
    await asyncio.sleep(1.3)
    (again,) = await claim(backend)
    assert again.id == job.id and again.attempts == 2 and again.status is JobStatus.RUNNING


async def test_fail_without_retry_at_dead_letters(backend) -> None:
    job = await add(backend)
    (held,) = await claim(backend)
    assert await backend.fail(job.id, held.lease_token, "hopeless", None)
    dead = await backend.get(job.id)
    assert dead.status is JobStatus.DEAD_LETTER and dead.error == "hopeless"
    assert dead.lease_token is None and is_utc(dead.finished_at)
    assert await claim(backend) == []


async def test_release_gives_a_job_back_unrun(backend) -> None:
    job = await add(backend, run_at=ago(30))
    (held,) = await claim(backend)
    assert await backend.release(job.id, held.lease_token)
    back = await backend.get(job.id)
    assert back.status is JobStatus.PENDING and back.attempts == 0
    assert back.lease_token is back.lease_owner is back.lease_expires_at is None
    assert back.run_at > job.run_at  # due now
    assert not await backend.release(job.id, held.lease_token)
    (again,) = await claim(backend, worker="w2")
    assert again.id == job.id and again.attempts == 1
    assert again.lease_token != held.lease_token


async def test_retry_puts_failed_and_dead_jobs_back(backend) -> None:
    dead = await add(backend, max_attempts=2)
    for _ in range(2):
        (held,) = await claim(backend)
        assert await backend.fail(dead.id, held.lease_token, "x", ago(1))
    (held,) = await claim(backend)
    assert held.attempts == 3
    assert await backend.fail(dead.id, held.lease_token, "gone", None)
    retried = await backend.retry(dead.id)
    assert retried.status is JobStatus.PENDING and retried.attempts == 0
    assert retried.finished_at is None and retried.lease_token is None
    assert await backend.get(dead.id) == retried
    (again,) = await claim(backend)
    assert again.id == dead.id and again.attempts == 1

    waiting = await add(backend)
    (held,) = await claim(backend)
    future = datetime.now(UTC) + timedelta(hours=1)
    assert await backend.fail(waiting.id, held.lease_token, "later", future)
    assert (await backend.retry(waiting.id)).status is JobStatus.PENDING
    assert [job.id for job in await claim(backend)] == [waiting.id]  # due now

    # A running or completed job comes back as it is; an unknown one is None.
    running = await backend.get(waiting.id)
    assert await backend.retry(waiting.id) == running
    assert await backend.complete(waiting.id, running.lease_token, 1)
    completed = await backend.get(waiting.id)
    assert await backend.retry(waiting.id) == completed
    assert await backend.retry("9" * 32) is None


# -- operating ---------------------------------------------------------------------


async def _finish(backend, job: Job, *, dead: bool = False) -> Job:
    (held,) = await claim(backend, types=[job.type], queues=[job.queue])
    assert held.id == job.id
    if dead:
        assert await backend.fail(job.id, held.lease_token, "dead", None)
    else:
        assert await backend.complete(job.id, held.lease_token, "ok")
    return await backend.get(job.id)


async def test_purge_deletes_only_finished_jobs_of_the_status(backend) -> None:
    old = await _finish(backend, await add(backend, "old", idempotency_key="again"))
    await asyncio.sleep(0.05)
    new_done = await _finish(backend, await add(backend, "new"))
    dead = await _finish(backend, await add(backend, "dead"), dead=True)
    pending = await add(backend, "pending")
    for status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.FAILED):
        with pytest.raises(ValueError, match="only finished jobs"):
            await backend.purge(status=status)

    assert await backend.purge(status=JobStatus.COMPLETED, older_than=old.updated_at) == 0
    assert await backend.purge(status=JobStatus.COMPLETED, older_than=new_done.updated_at) == 1
    assert await backend.get(old.id) is None
    assert await backend.get(new_done.id) is not None
    assert await backend.purge(status=JobStatus.COMPLETED) == 1
    assert await backend.get(new_done.id) is None
    assert await backend.get(dead.id) is not None and await backend.get(pending.id) is not None
    assert await backend.purge(status=JobStatus.DEAD_LETTER) == 1
    assert await backend.get(dead.id) is None
    assert await backend.purge(status=JobStatus.DEAD_LETTER) == 0
    assert [job.id for job in await backend.list()] == [pending.id]
    # A purged job's idempotency key is free again.
    _, created = await backend.enqueue(new(idempotency_key="again"))
    assert created


async def test_counts_per_status(backend) -> None:
    zero = await backend.counts()
    assert zero == {status.value: 0 for status in JobStatus}
    await _finish(backend, await add(backend, "c"))
    await _finish(backend, await add(backend, "c"))
    await _finish(backend, await add(backend, "d"), dead=True)
    failing = await add(backend, "f")
    (held,) = await claim(backend, types=["f"])
    assert await backend.fail(failing.id, held.lease_token, "x", ago(-60))
    await add(backend, "r")
    await claim(backend, types=["r"])
    for _ in range(3):
        await add(backend, "p")
    assert await backend.counts() == {
        "pending": 3,
        "running": 1,
        "completed": 2,
        "failed": 1,
        "dead_letter": 1,
    }


async def test_list_filters_newest_first(backend) -> None:
    made = []
    for i, (queue, job_type) in enumerate(
        [("a", "x"), ("b", "x"), ("a", "y"), ("b", "y"), ("a", "x"), ("a", "x")]
    ):
        made.append(await add(backend, job_type, payload=i, queue=queue))
        await asyncio.sleep(0.002)
    ids = [job.id for job in made]
    (held,) = await claim(backend, queues=["a"], types=["y"])
    assert held.id == ids[2]

    def listed(jobs: list[Job]) -> list[str]:
        return [job.id for job in jobs]

    assert listed(await backend.list()) == ids[::-1]
    assert listed(await backend.list(limit=2)) == [ids[5], ids[4]]
    assert listed(await backend.list(queue="a")) == [ids[5], ids[4], ids[2], ids[0]]
    assert listed(await backend.list(type="y")) == [ids[3], ids[2]]
    assert listed(await backend.list(queue="a", type="x")) == [ids[5], ids[4], ids[0]]
    assert listed(await backend.list(queue="a", type="x", limit=1)) == [ids[5]]
    assert listed(await backend.list(status=JobStatus.RUNNING)) == [ids[2]]
    assert listed(await backend.list(status=JobStatus.PENDING, type="y")) == [ids[3]]
    assert listed(await backend.list(status=JobStatus.PENDING, queue="b", type="x")) == [ids[1]]
    assert await backend.list(status=JobStatus.COMPLETED) == []
    assert await backend.list(queue="nowhere") == []
    assert await backend.list(type="nothing") == []
    assert (await backend.list(status=JobStatus.RUNNING))[0] == await backend.get(ids[2])


# -- waking ------------------------------------------------------------------------


@pytest.mark.slow
async def test_wait_for_work_wakes_on_an_enqueue_or_times_out(backend, other, kind) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await backend.wait_for_work(0.5)
    assert 0.45 <= loop.time() - start < 1.5

    # SQLite has no notifications between processes (its workers poll): there
    # the enqueue comes through the same backend; elsewhere through another.
    source = backend if kind == "sqlite" else other
    waiter = asyncio.create_task(backend.wait_for_work(5.0))
    await asyncio.sleep(0.3)
    assert not waiter.done()
    enqueued = loop.time()
    await source.enqueue(new())
    await asyncio.wait_for(waiter, 5.0)
    assert loop.time() - enqueued < 1.0


async def test_a_lost_wake_up_subscription_wakes_the_worker_and_comes_back(
    backend, other, kind, log_lines
) -> None:
    """Redis: a killed subscription wakes the waiting worker (notifications may
    have been missed), and the next enqueue wakes it again through the new one."""
    if kind != "redis":
        pytest.skip("only Redis wakes workers through a subscription")
    admin = other.client
    before = {c["id"] for c in await admin.client_list(_type="pubsub")}
    await backend.wait_for_work(0.2)  # subscribes, then times out
    ours = [c["id"] for c in await admin.client_list(_type="pubsub") if c["id"] not in before]
    assert ours
    waiter = asyncio.create_task(backend.wait_for_work(10.0))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    for client_id in ours:
        await admin.client_kill_filter(_id=client_id)
    await asyncio.wait_for(waiter, 5.0)  # woken by the gap, not the 10 s timeout
    assert any("jobs wake-up channel subscribed again" in r["message"] for r in log_lines)
    waiter = asyncio.create_task(backend.wait_for_work(10.0))
    await asyncio.sleep(0.2)
    await other.enqueue(new())
    await asyncio.wait_for(waiter, 5.0)


async def test_times_given_in_another_time_zone_are_the_same_instant(backend) -> None:
    east = timezone(timedelta(hours=5, minutes=30))
    west = timezone(timedelta(hours=-7))
    past = (datetime.now(UTC) - timedelta(minutes=10)).astimezone(east)
    future = (datetime.now(UTC) + timedelta(hours=1)).astimezone(west)
    due = await add(backend, run_at=past)
    later = await add(backend, run_at=future)
    assert due.run_at == past and is_utc(due.run_at)
    assert (await backend.get(later.id)).run_at == future
    (held,) = await claim(backend)
    assert held.id == due.id
    # retry_at: two hours ahead (written in a zone seven hours behind UTC).
    retry_at = (datetime.now(UTC) + timedelta(hours=2)).astimezone(west)
    assert await backend.fail(due.id, held.lease_token, "x", retry_at)
    assert (await backend.get(due.id)).run_at == retry_at
    assert await claim(backend) == []
    done = await _finish(backend, await add(backend, "done"))
    before = (done.updated_at - timedelta(hours=1)).astimezone(east)
    assert await backend.purge(status=JobStatus.COMPLETED, older_than=before) == 0
    after = (done.updated_at + timedelta(hours=1)).astimezone(west)
    assert await backend.purge(status=JobStatus.COMPLETED, older_than=after) == 1


@pytest.mark.slow
async def test_work_in_another_store_does_not_wake_a_waiting_worker(backend, elsewhere) -> None:
    waiter = asyncio.create_task(backend.wait_for_work(1.0))
    await asyncio.sleep(0.3)
    await elsewhere.enqueue(new())
    await asyncio.sleep(0.4)
    assert not waiter.done(), "woken by a job enqueued in another store"
    await waiter
    assert await claim(backend) == []
    assert len(await claim(elsewhere)) == 1
