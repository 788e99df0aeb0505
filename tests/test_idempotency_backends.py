"""One conformance suite for every idempotency backend: SQLite, PostgreSQL, Redis.

Each test runs three times through the ``idem`` fixture (the started
``idempotency`` service of an app on that backend).  PostgreSQL needs
``WISP_TEST_DATABASE_URL`` and Redis ``WISP_TEST_REDIS_URL``; each is skipped
only when its variable is unset (one that is named but unreachable fails).
Expiry tests use leases and TTLs of a fraction of a second and wait past
them: they assert what happens after, never how long anything took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import textwrap
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from wisp.plugins.idempotency.api import (
    ClaimLost,
    ClaimOutcome,
    InProgress,
    State,
    idempotent,
)
from wisp.plugins.idempotency.service import IdempotencyService

pytestmark = [
    pytest.mark.needs_plugin("storage", "idempotency", "redis"),
    pytest.mark.parametrize(
        ("backend", "database"),
        [("sqlite", "sqlite"), ("postgresql", "postgresql"), ("redis", "sqlite")],
        indirect=True,
        ids=["sqlite", "postgresql", "redis"],
    ),
]


def wisp_toml(
    kind: str, database: tuple[str, str], redis_store: tuple[str, str], extra: str = ""
) -> str:
    """The project configuration of one backend (Redis: ``redis_store``'s URL and prefix)."""
    if kind == "redis":
        url, prefix = redis_store
        return (
            '[wisp]\nautoload = false\nplugins = ["redis", "idempotency"]\n'
            f'[redis]\nurl = "{url}"\n'
            f'[idempotency]\nbackend = "redis"\nredis_prefix = "{prefix}"\n{extra}'
        )
    url, schema = database
    return (
        '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
        f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n'
        # Few connections per process: the server is shared (4 processes race).
        "pool_size = 3\nmax_overflow = 2\n"
        f"[idempotency]\n{extra}"
    )


@pytest.fixture
def backend(request: Any) -> str:
    return str(request.param)


@pytest.fixture
async def redis_store(backend: str, request: Any) -> AsyncIterator[tuple[str, str]]:
    """The Redis case's URL (``redis_url``: skipped when unset, failed when
    unreachable) and a key prefix of the test's own, whose keys go after it;
    ``("", "")`` for the SQL cases."""
    if backend != "redis":
        yield "", ""
        return
    url = request.getfixturevalue("redis_url")
    prefix = f"test:idem:{uuid.uuid4().hex}:"
    yield url, prefix
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        async for name in client.scan_iter(match=prefix + "*", count=1000):
            await client.delete(name)
    finally:
        await client.aclose()


@pytest.fixture
async def idem(
    backend: str, project: Any, database: tuple[str, str], redis_store: tuple[str, str]
) -> Any:
    project.write("wisp.toml", wisp_toml(backend, database, redis_store))
    app = project.app()
    await app.start()
    try:
        yield app.services.get("idempotency")
    finally:
        await app.stop()


async def test_a_repeat_of_a_completed_operation_returns_its_result_without_running(
    idem: IdempotencyService,
) -> None:
    runs = 0

    async def charge() -> Any:
        nonlocal runs
        async with idem.idempotent("order-1") as claim:
            if claim.replayed:
                return claim.result
            runs += 1
            claim.result = {"receipt": runs, "items": ["a", "b"]}
            return claim.result

    assert await charge() == {"receipt": 1, "items": ["a", "b"]}
    assert await charge() == {"receipt": 1, "items": ["a", "b"]}
    assert runs == 1
    record = await idem.get("order-1")
    assert record is not None
    assert record.state is State.COMPLETED and record.attempts == 1
    assert record.result == {"receipt": 1, "items": ["a", "b"]}
    assert idem.counters.claims == 1 and idem.counters.hits == 1


async def test_a_repeat_during_progress_gets_in_progress(idem: IdempotencyService) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def first() -> str:
        async with idem.idempotent("slow") as claim:
            started.set()
            await release.wait()
            claim.result = "done"
        return "ran"

    task = asyncio.create_task(first())
    await started.wait()
    with pytest.raises(InProgress) as info:
        async with idem.idempotent("slow"):
            pytest.fail("the body of a repeat ran while the first was in progress")
    assert info.value.key == "slow" and info.value.owner is not None
    assert info.value.expires_at is not None
    assert "Still working on it" in info.value.safe_message
    release.set()
    assert await task == "ran"
    async with idem.idempotent("slow") as claim:
        assert claim.replayed and claim.result == "done"
    assert idem.counters.in_progress == 1


async def test_a_failed_operation_may_run_again(idem: IdempotencyService) -> None:
    with pytest.raises(ZeroDivisionError):
        async with idem.idempotent("flaky"):
            1 / 0  # noqa: B018
    record = await idem.get("flaky")
    assert record is not None and record.state is State.FAILED
    assert record.error is not None and "ZeroDivisionError" in record.error
    async with idem.idempotent("flaky") as claim:
        assert not claim.replayed
        claim.result = 42
    record = await idem.get("flaky")
    assert record is not None
    assert (record.state, record.result, record.attempts, record.error) == (
        State.COMPLETED,
        42,
        2,
        None,
    )
    assert idem.counters.failures == 1


async def test_a_crashed_winner_blocks_only_until_its_claim_expires(
    idem: IdempotencyService,
) -> None:
    # A winner that died holding the key: claimed with a short lease, never finished.
    found = await idem.backend.claim("crash", "dead-owner", 0.3)
    assert found.outcome is ClaimOutcome.WON
    with pytest.raises(InProgress) as info:
        async with idem.idempotent("crash"):
            pass
    assert info.value.owner == "dead-owner"
    await asyncio.sleep(0.5)
    async with idem.idempotent("crash") as claim:
        assert not claim.replayed
        claim.result = "recovered"
    record = await idem.get("crash")
    assert record is not None and record.result == "recovered"
    # SQL took the row over; Redis had already deleted the expired hash itself.
    assert record.attempts == (1 if idem.config.backend == "redis" else 2)
    # The dead owner, come back, cannot overwrite what the new owner stored.
    assert not await idem.backend.complete("crash", "dead-owner", "stale", 60)
    assert not await idem.backend.fail("crash", "dead-owner", "stale", 60)
    record = await idem.get("crash")
    assert record is not None and record.result == "recovered"


async def test_a_claim_taken_over_cannot_store_its_result(idem: IdempotencyService) -> None:
    claim = await idem.idempotent("lost", lease=0.2).__aenter__()
    claim.pause_heartbeat()  # a stalled owner
    await asyncio.sleep(0.4)
    found = await idem.backend.claim("lost", "other-owner", 60)
    assert found.outcome is ClaimOutcome.WON
    claim.result = "late"
    with pytest.raises(ClaimLost, match="another caller owns the key now"):
        await claim.__aexit__(None, None, None)
    record = await idem.get("lost")
    assert record is not None
    assert record.state is State.IN_PROGRESS and record.owner == "other-owner"
    assert idem.counters.lost == 1


@pytest.mark.slow
async def test_the_heartbeat_keeps_a_long_operation_claimed(idem: IdempotencyService) -> None:
    async def long_one() -> None:
        async with idem.idempotent("long", lease=0.5) as claim:
            await asyncio.sleep(1.6)  # three leases: only the heartbeat keeps it
            claim.result = "long done"

    task = asyncio.create_task(long_one())
    await asyncio.sleep(1.1)
    with pytest.raises(InProgress):
        async with idem.idempotent("long"):
            pass
    await task
    record = await idem.get("long")
    assert record is not None and record.result == "long done" and record.attempts == 1


async def test_concurrent_attempts_in_one_process_run_once(idem: IdempotencyService) -> None:
    ran = 0

    async def attempt() -> str:
        nonlocal ran
        try:
            async with idem.idempotent("hot") as claim:
                if claim.replayed:
                    return "hit"
                ran += 1
                await asyncio.sleep(0.2)
                claim.result = "ok"
                return "ran"
        except InProgress:
            return "busy"

    results = await asyncio.gather(*(attempt() for _ in range(100)))
    assert ran == 1 and results.count("ran") == 1
    assert set(results) <= {"ran", "hit", "busy"}


async def test_cleanup_removes_only_expired_keys(idem: IdempotencyService) -> None:
    async with idem.idempotent("short", ttl=0.2) as claim:
        claim.result = 1
    with contextlib.suppress(RuntimeError):
        async with idem.idempotent("short-failed", ttl=0.2):
            raise RuntimeError("boom")
    async with idem.idempotent("long-lived", ttl=3600) as claim:
        claim.result = 2
    running = await idem.backend.claim("running", "someone", 3600)
    assert running.outcome is ClaimOutcome.WON
    await asyncio.sleep(0.4)
    deleted = await idem.cleanup()
    assert await idem.get("short") is None
    assert await idem.get("short-failed") is None
    live = await idem.get("long-lived")
    assert live is not None and live.result == 2
    held = await idem.get("running")
    assert held is not None and held.state is State.IN_PROGRESS
    # SQL deletes the two expired rows; Redis expired them itself (nothing left to do).
    assert deleted == (0 if idem.config.backend == "redis" else 2)
    assert await idem.cleanup() == 0
    # An expired key is as good as absent: the operation runs again.
    async with idem.idempotent("short") as claim:
        assert not claim.replayed


async def test_a_result_that_is_not_json_fails_the_key(idem: IdempotencyService) -> None:
    with pytest.raises(TypeError, match="must be JSON"):
        async with idem.idempotent("bad-result") as claim:
            claim.result = {1, 2}
    record = await idem.get("bad-result")
    assert record is not None and record.state is State.FAILED


@attrs.frozen
class Receipt:
    order: str
    cents: int
    lines: list[str]


async def test_the_decorator_stores_attrs_results_and_keys_by_arguments(
    idem: IdempotencyService,
) -> None:
    calls: list[tuple[str, int]] = []

    @idempotent("shop.charge", service=idem)
    async def charge(order: str, cents: int = 100) -> Receipt:
        calls.append((order, cents))
        return Receipt(order, cents, [f"line {len(calls)}"])

    first = await charge("A", 250)
    again = await charge(order="A", cents=250)
    other = await charge("A")
    assert first == again == Receipt("A", 250, ["line 1"])
    assert isinstance(again, Receipt)
    assert other == Receipt("A", 100, ["line 2"])
    assert calls == [("A", 250), ("A", 100)]


async def test_show_and_forget(idem: IdempotencyService) -> None:
    async with idem.idempotent("shown") as claim:
        claim.result = {"x": 1}
    record = await idem.get("shown")
    assert record is not None
    as_dict = record.as_dict()
    assert as_dict["state"] == "completed" and as_dict["result"] == {"x": 1}
    json.dumps(as_dict)
    assert await idem.forget("shown")
    assert not await idem.forget("shown")
    assert await idem.get("shown") is None
    health = await idem.health()
    assert health.ok and "since start: 1 claims" in health.detail


async def test_bad_keys_and_durations_are_refused(idem: IdempotencyService) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        idem.idempotent("")
    with pytest.raises(ValueError, match="at most 200"):
        idem.idempotent("x" * 201)
    with pytest.raises(ValueError, match="ttl must be greater than 0"):
        idem.idempotent("k", ttl=0)


async def test_a_row_committed_while_the_claim_waits_is_read_again(
    idem: IdempotencyService, backend: str, database: tuple[str, str]
) -> None:
    """The case the single-statement form gets wrong: the claim's insert waits on
    another transaction's insert of the key, which then commits; the claim's
    snapshot predates that row, so the separate read must find it."""
    if backend != "postgresql":
        pytest.skip("a PostgreSQL snapshot race")
    import asyncpg

    url, schema = database
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(f"SET search_path = {schema}")
        tx = conn.transaction()
        await tx.start()
        await conn.execute(
            "INSERT INTO idempotency_keys (key, state, owner, attempts, result, created_at, "
            "updated_at, expires_at) VALUES ('race', 'completed', 'other', 1, "
            "'\"theirs\"'::jsonb, now(), now(), now() + interval '1 hour')"
        )
        claim = asyncio.create_task(idem.backend.claim("race", "me", 60))
        await asyncio.sleep(0.5)
        assert not claim.done()  # waiting for the other transaction
        await tx.commit()
        found = await claim
    finally:
        await conn.close()
    assert found.outcome is ClaimOutcome.COMPLETED
    assert found.record is not None and found.record.result == "theirs"


# -- many processes --------------------------------------------------------------------

HAMMER = """
import asyncio, json, sys, time
from pathlib import Path
import wisp
from wisp.plugins.idempotency.api import InProgress

async def main(root, start_at, tasks):
    async with wisp.Wisp(rootdir=Path(root), autoload=False, env={}) as app:
        svc = app.services.get("idempotency")
        counts = {"ran": 0, "hit": 0, "busy": 0}

        async def attempt():
            try:
                async with svc.idempotent("the-one-key") as claim:
                    if claim.replayed:
                        counts["hit"] += 1
                        return
                    counts["ran"] += 1
                    await asyncio.sleep(0.5)
                    claim.result = "done"
            except InProgress:
                counts["busy"] += 1

        await asyncio.sleep(max(0.0, start_at - time.time()))
        await asyncio.gather(*(attempt() for _ in range(tasks)))
        print(json.dumps(counts))

asyncio.run(main(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
"""


@pytest.mark.slow
async def test_a_thousand_attempts_from_four_processes_run_once(
    backend: str,
    project: Any,
    database: tuple[str, str],
    redis_store: tuple[str, str],
    tmp_path: Path,
) -> None:
    project.write("wisp.toml", wisp_toml(backend, database, redis_store))
    app = project.app()
    await app.start()  # migrate once, before the processes race
    await app.stop()
    script = tmp_path / "hammer.py"
    script.write_text(textwrap.dedent(HAMMER))
    start_at = str(time.time() + 4.0)  # every process imported and started by then
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(project.root),
            start_at,
            "250",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(4)
    ]
    outputs = []
    for p in procs:
        async with asyncio.timeout(180):
            out, err = await p.communicate()
        assert p.returncode == 0, err.decode()[-3000:]
        outputs.append(out.decode())
    counts = [json.loads(out.strip().splitlines()[-1]) for out in outputs]
    assert sum(c["ran"] for c in counts) == 1, counts
    assert sum(c["ran"] + c["hit"] + c["busy"] for c in counts) == 1000, counts
