"""The locks plugin: one conformance suite on memory, Redis and PostgreSQL, the
4 processes x 20 tasks counter, configuration and the CLI.

PostgreSQL needs ``WISP_TEST_DATABASE_URL`` and Redis ``WISP_TEST_REDIS_URL``;
each is skipped only when its variable is unset (named but unreachable fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

import wisp
from wisp.plugins.locks.api import Lock, LockLost, LockTimeout, StaleToken
from wisp.testing import WispProject

pytestmark = pytest.mark.needs_plugin("locks")

#: Which servers the tests have: auto-selection checks each one that is set.
REDIS_SET = bool(os.environ.get("WISP_TEST_REDIS_URL"))
PG_SET = bool(os.environ.get("WISP_TEST_DATABASE_URL"))

BACKENDS = ["memory", "redis", "postgresql"]
#: The conftest fixture giving a backend's server URL (memory has none).
URL_FIXTURE = {"redis": "redis_url", "postgresql": "pg_url"}


async def _pg_schema(stack: contextlib.AsyncExitStack, url: str) -> str:
    """A fresh schema, dropped at the end (after the apps using it stop)."""
    import asyncpg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    stack.push_async_callback(conn.close)
    stack.push_async_callback(conn.execute, f"DROP SCHEMA {schema} CASCADE")
    await conn.execute(f"CREATE SCHEMA {schema}")
    return schema


def _toml(
    kind: str, root: Path, *, url: str = "", schema: str = "", prefix: str = "", extra: str = ""
) -> str:
    """wisp.toml for a backend (``url``: its server's): memory and Redis keep a
    SQLite file (for SQL fences)."""
    plugins = ["storage", "locks"] + (["redis"] if kind == "redis" else [])
    out = f"[wisp]\nautoload = false\nplugins = {plugins!r}\n".replace("'", '"')
    if kind == "postgresql":
        out += f'[storage]\nurl = "{url}"\nschema = "{schema}"\nauto_migrate = true\n'
    else:
        out += f'[storage]\nurl = "sqlite+aiosqlite:///{root}/db.sqlite3"\nauto_migrate = true\n'
    if kind == "redis":
        out += f'[redis]\nurl = "{url}"\n'
    backend = {"memory": "memory", "redis": "redis", "postgresql": "sql"}[kind]
    out += f'[locks]\nbackend = "{backend}"\nprefix = "{prefix}"\n{extra}'
    return out


class Env:
    """A backend's project; ``app()`` opens another app (another "process") on it.

    Its server's URL comes from the conftest's ``redis_url`` or ``pg_url`` (via
    ``request``): skipped when the variable is unset, failed when unreachable."""

    def __init__(
        self,
        kind: str,
        project: WispProject,
        stack: contextlib.AsyncExitStack,
        request: pytest.FixtureRequest,
    ):
        self.kind = kind
        self.project = project
        self.stack = stack
        self.url = request.getfixturevalue(URL_FIXTURE[kind]) if kind in URL_FIXTURE else ""
        self.schema = ""
        self.prefix = f"test:locks:{uuid.uuid4().hex}:"
        self.stack_has_cleanup = False

    async def _drop_redis_keys(self) -> None:
        """Token counters never expire: delete this test's keys."""
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url)
        keys = [k async for k in client.scan_iter(match=self.prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    async def setup(self, extra: str = "") -> None:
        if self.kind == "redis" and not self.stack_has_cleanup:
            self.stack_has_cleanup = True
            self.stack.push_async_callback(self._drop_redis_keys)
        if self.kind == "postgresql" and not self.schema:
            self.schema = await _pg_schema(self.stack, self.url)
        self.project.write(
            "wisp.toml",
            _toml(
                self.kind,
                self.project.root,
                url=self.url,
                schema=self.schema,
                prefix=self.prefix,
                extra=extra,
            ),
        )

    async def app(self) -> wisp.Wisp:
        app = self.project.app()
        await self.stack.enter_async_context(app)
        return app

    async def locks(self) -> Any:
        return (await self.app()).services.get("locks")

    async def pair(self) -> tuple[Any, Any]:
        """Two views of the same locks: two apps (two processes, as far as the
        backend knows), or one app for memory, whose locks live in the app."""
        first = await self.locks()
        return first, first if self.kind == "memory" else await self.locks()


@pytest.fixture(params=BACKENDS)
async def env(request, project) -> AsyncIterator[Env]:
    async with contextlib.AsyncExitStack() as stack:
        made = Env(request.param, project, stack, request)
        await made.setup()
        yield made


@pytest.mark.needs_plugin("redis", "storage")
async def test_acquire_gives_a_lock_with_a_token_and_release_frees_it(env) -> None:
    locks = await env.locks()
    async with locks.acquire("report", ttl=10) as lock:
        assert isinstance(lock, Lock)
        assert lock.name == "report" and lock.token > 0
        info = await locks.info("report")
        assert (info.token, info.holder) == (lock.token, lock.holder)
        assert 0 < info.expires_in <= 10
        assert [i.name for i in await locks.held()] == ["report"]
        with pytest.raises(LockTimeout, match="lock 'report' was not acquired within 0s"):
            await locks.acquire("report", timeout=0)
    assert lock.released and not lock.lost
    assert await locks.info("report") is None
    again = await locks.acquire("report", timeout=0)
    assert again.token > lock.token
    await again.release()
    with pytest.raises(RuntimeError, match="already released"):
        await again.release()


@pytest.mark.needs_plugin("redis", "storage")
async def test_tokens_grow_per_name_across_holders_and_processes(env) -> None:
    one, two = await env.pair()
    tokens = []
    for i in range(30):
        async with (one if i % 2 else two).acquire("seq", ttl=5, timeout=5) as lock:
            tokens.append(lock.token)
    assert tokens == sorted(tokens) and len(set(tokens)) == 30
    async with one.acquire("other", ttl=5) as other:  # another name: its own lock
        async with two.acquire("seq", ttl=5, timeout=0) as lock:
            assert lock.token > tokens[-1]
        assert other.token > 0


@pytest.mark.needs_plugin("redis", "storage")
async def test_tasks_in_two_apps_never_overlap(env) -> None:
    apps = list(await env.pair())
    inside = 0
    most = 0
    count = 0

    async def work(locks: Any) -> None:
        nonlocal inside, most, count
        for _ in range(5):
            async with locks.acquire("shared", ttl=10, timeout=30):
                inside += 1
                most = max(most, inside)
                value = count
                await asyncio.sleep(0)
                count = value + 1
                inside -= 1

    await asyncio.gather(*(work(apps[i % 2]) for i in range(20)))
    assert (count, most) == (100, 1)
    stats = [apps[0].stats] if apps[0] is apps[1] else [apps[0].stats, apps[1].stats]
    assert sum(s.acquires for s in stats) == 100
    assert sum(s.waits for s in stats) > 0


@pytest.mark.needs_plugin("redis", "storage")
async def test_a_release_wakes_a_waiter_without_polling(env) -> None:
    # Re-checks every 60 s and a lease of 60 s: a waiter that gets in within
    # 15 s was woken by the release.
    await env.setup("recheck_seconds = 60.0\ndefault_ttl = 60.0\n")
    holder_side, waiter_side = await env.pair()
    held = await holder_side.acquire("door")

    async def take() -> Any:
        return await waiter_side.acquire("door")  # no timeout: no last try at one

    waiter = asyncio.create_task(take())
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await held.release()
    got = await asyncio.wait_for(waiter, 15)
    assert got.token > held.token
    await got.release()
    assert waiter_side.stats.waits == 1 and waiter_side.stats.max_wait_seconds > 0.1


@pytest.mark.needs_plugin("redis", "storage")
async def test_timeout_names_the_lock(env) -> None:
    locks = await env.locks()
    async with locks.acquire("busy", ttl=30):
        with pytest.raises(LockTimeout) as caught:
            async with locks.acquire("busy", timeout=0.3):
                pytest.fail("acquired a held lock")
    assert caught.value.name == "busy"
    assert str(caught.value) == "lock 'busy' was not acquired within 0.3s"
    assert isinstance(caught.value, TimeoutError)
    assert locks.stats.timeouts == 1


async def _fenced_write(env: Env, app: wisp.Wisp, lock: Any, value: str) -> None:
    """Write ``value`` into the ``fenced`` table through the lock's SQL fence."""
    db = app.services.get("db")
    async with db.transaction() as session:
        await lock.fence(session)
        await session.execute(text("UPDATE fenced SET value = :v"), {"v": value})


@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_a_paused_holder_past_its_ttl_is_fenced_off_and_its_release_fails(env) -> None:
    app_a = await env.app()
    app_b = app_a if env.kind == "memory" else await env.app()
    a_locks, b_locks = app_a.services.get("locks"), app_b.services.get("locks")
    async with app_a.services.get("db").transaction() as s:
        await s.execute(text("CREATE TABLE fenced (value VARCHAR(20))"))
        await s.execute(text("INSERT INTO fenced VALUES ('none')"))

    first = await a_locks.acquire("job", ttl=0.3)
    await _fenced_write(env, app_a, first, "first")
    await asyncio.sleep(0.6)  # paused past the lease
    second = await b_locks.acquire("job", ttl=30, timeout=10)
    assert second.token > first.token
    await _fenced_write(env, app_b, second, "second")

    with pytest.raises(StaleToken) as stale:
        await _fenced_write(env, app_a, first, "stale")
    assert (stale.value.token, stale.value.current) == (first.token, second.token)
    async with app_a.services.get("db").transaction() as s:
        assert (await s.execute(text("SELECT value FROM fenced"))).scalar() == "second"
    if env.kind == "redis":
        client = app_a.services.get("redis").client
        key = env.prefix + "data"
        await second.fenced_set(key, "second")
        with pytest.raises(StaleToken):
            await first.fenced_set(key, "stale")
        assert await client.get(key) == b"second"
        await client.delete(key, env.prefix + "fence:job")

    with pytest.raises(LockLost, match=r"lock 'job' .* was lost before release"):
        await first.release()
    assert first.lost and a_locks.stats.lost == 1
    with pytest.raises(LockLost):
        await first.extend()
    # The stale release deleted nothing: the second holder still holds it.
    assert (await b_locks.info("job")).token == second.token
    with pytest.raises(LockTimeout):
        await a_locks.acquire("job", timeout=0)
    await second.release()


@pytest.mark.needs_plugin("redis", "storage")
async def test_a_lease_that_ran_out_with_nobody_waiting_is_still_lost(env) -> None:
    locks = await env.locks()
    lock = await locks.acquire("brief", ttl=0.2)
    await asyncio.sleep(0.4)
    with pytest.raises(LockLost):
        await lock.release()


@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_extend_keeps_the_lock_past_its_first_ttl(env) -> None:
    locks, other = await env.pair()
    lock = await locks.acquire("long", ttl=1.0)
    await lock.extend(30)
    assert lock.remaining > 20
    await asyncio.sleep(1.3)
    with pytest.raises(LockTimeout):
        await other.acquire("long", timeout=0)
    await lock.release()
    assert locks.stats.extends == 1


@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_auto_extend_renews_while_held(env) -> None:
    locks, other = await env.pair()
    async with locks.acquire("renewed", ttl=1.0, auto_extend=True) as lock:
        await asyncio.sleep(2.5)  # two and a half leases long
        with pytest.raises(LockTimeout):
            await other.acquire("renewed", timeout=0)
        assert not lock.lost
    assert locks.stats.extends >= 2
    assert await other.info("renewed") is None


@pytest.mark.needs_plugin("redis", "storage")
async def test_a_lost_lock_under_a_failing_body_keeps_the_bodys_error(env) -> None:
    locks = await env.locks()

    async def fails_while_held() -> None:
        async with locks.acquire("fragile", ttl=0.2):
            await asyncio.sleep(0.4)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError) as caught:
        await fails_while_held()
    assert any("was lost before release" in note for note in caught.value.__notes__)
    with pytest.raises(LockLost):
        async with locks.acquire("fragile", ttl=0.2):
            await asyncio.sleep(0.4)


@pytest.mark.needs_plugin("redis", "storage")
async def test_health_shows_the_backend_and_counters(env) -> None:
    app = await env.app()
    locks = app.services.get("locks")
    async with locks.acquire("h", ttl=5):
        health = (await app.services.health_all())["locks"]
    assert health.ok
    kind = {"memory": "memory", "redis": "redis", "postgresql": "sql"}[env.kind]
    assert health.detail.startswith(f"{kind} (")
    assert "1 acquired, 0 waited" in health.detail and "1 held here" in health.detail


@pytest.mark.needs_plugin("redis", "storage")
async def test_bad_arguments_name_the_culprit(env) -> None:
    locks = await env.locks()
    with pytest.raises(ValueError, match=r"lock ttl must be .* not -1"):
        locks.acquire("x", ttl=-1)
    with pytest.raises(ValueError, match="lock timeout must be None or seconds >= 0, not -2"):
        locks.acquire("x", timeout=-2)
    with pytest.raises(ValueError, match="lock name must be a non-empty string"):
        locks.acquire("")


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_a_waiter_nobody_wakes_still_gets_in_when_the_lock_frees(
    kind, project, request
) -> None:
    # The lock is freed behind the plugin's back (no release message, no
    # advisory unlock): a lost wake-up.  The waiter looks again on its own.
    async with contextlib.AsyncExitStack() as stack:
        env = Env(kind, project, stack, request)
        await env.setup("recheck_seconds = 0.3\n")
        app = await env.app()
        locks = app.services.get("locks")
        held = await locks.acquire("quiet", ttl=60)

        async def take() -> Any:
            return await locks.acquire("quiet", timeout=10)

        waiter = asyncio.create_task(take())
        await asyncio.sleep(0.5)
        assert not waiter.done()
        if kind == "redis":
            await app.services.get("redis").client.delete(env.prefix + "lock:quiet")
        else:
            async with app.services.get("db").transaction() as s:
                await s.execute(text("UPDATE locks SET expires_at = now() WHERE name = 'quiet'"))
        got = await waiter
        assert got.token > held.token
        with pytest.raises(LockLost):
            await held.release()
        await got.release()


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
@pytest.mark.needs_plugin("redis", "storage")
async def test_stopping_an_app_gives_its_held_locks_back(kind, project, request) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env = Env(kind, project, stack, request)
        await env.setup()
        other = await env.locks()
        async with project.app() as app:
            held = await app.services.get("locks").acquire("kept", ttl=60)
        assert held.released
        got = await other.acquire("kept", timeout=0)
        assert got.token > held.token
        await got.release()


STALLED = """
import asyncio, sys
import wisp
from sqlalchemy import text
from wisp.plugins.locks.api import LockLost, StaleToken

async def fenced_write(app, lock, value):
    async with app.services.get("db").transaction() as s:
        await lock.fence(s)
        await s.execute(text("UPDATE fenced SET value = :v"), {"v": value})

async def main():
    async with wisp.Wisp(rootdir=sys.argv[1], autoload=False, env={}) as app:
        lock = await app.services.get("locks").acquire("stall", ttl=1, auto_extend=True)
        await fenced_write(app, lock, "stalled-first")
        print("held", lock.token, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        try:
            await fenced_write(app, lock, "stalled-late")
            print("wrote", flush=True)
        except StaleToken:
            print("refused", flush=True)
        try:
            await lock.release()
            print("released", flush=True)
        except LockLost:
            print("lost", flush=True)

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_a_process_stopped_past_its_lease_is_refused_and_loses_the_lock(
    kind, project, request
) -> None:
    # SIGSTOP freezes the holder's whole event loop, its auto-extension too:
    # the lease runs out while its connections (and, on PostgreSQL, its
    # advisory lock) stay open.
    import signal

    async with contextlib.AsyncExitStack() as stack:
        env = Env(kind, project, stack, request)
        await env.setup()
        app = await env.app()
        async with app.services.get("db").transaction() as s:
            await s.execute(text("CREATE TABLE fenced (value VARCHAR(20))"))
            await s.execute(text("INSERT INTO fenced VALUES ('none')"))
        script = project.root / "stalled.py"
        script.write_text(textwrap.dedent(STALLED))
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(script),
            str(project.root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stack.callback(lambda: proc.returncode is None and proc.kill())
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        assert line.startswith(b"held "), line + await proc.stderr.read()
        stalled_token = int(line.split()[1])
        proc.send_signal(signal.SIGSTOP)
        try:
            lock = await app.services.get("locks").acquire("stall", ttl=30, timeout=20)
            assert lock.token > stalled_token
            await _fenced_write(env, app, lock, "second")
        finally:
            proc.send_signal(signal.SIGCONT)
        proc.stdin.write(b"go\n")
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err.decode()[-3000:]
        assert out.decode().split() == ["refused", "lost"]
        async with app.services.get("db").transaction() as s:
            assert (await s.execute(text("SELECT value FROM fenced"))).scalar() == "second"
        assert (await app.services.get("locks").info("stall")).token == lock.token
        await lock.release()


@pytest.mark.needs_plugin("redis", "storage")
async def test_redis_wakes_past_dead_and_idle_processes_in_its_queue(project, request) -> None:
    # Waiters re-check only every 60 s: getting in within 15 s means the
    # release's wake-up found them.
    async with contextlib.AsyncExitStack() as stack:
        env = Env("redis", project, stack, request)
        await env.setup("recheck_seconds = 60.0\n")
        holder, idle, waiter = [await env.locks() for _ in range(3)]
        client = (await env.app()).services.get("redis").client
        queue = env.prefix + "queue:turns"

        async def take() -> Any:
            return await waiter.acquire("turns")  # no timeout: no last try at one

        held = await holder.acquire("turns", ttl=60)
        task = asyncio.create_task(take())
        while not await client.zscore(queue, waiter.backend.process_id):
            await asyncio.sleep(0.01)
        # Ahead of the waiter's process: one that died (nobody hears its
        # message) and one that listens but has no waiter left (it passes on).
        await client.zadd(queue, {"dead-host:1:gone": -2, idle.backend.process_id: -1})
        await held.release()
        got = await asyncio.wait_for(task, 15)
        assert got.token > held.token
        assert await client.zcard(queue) == 0
        await got.release()


@pytest.mark.needs_plugin("storage")
async def test_postgresql_survives_dropped_connections(project, request) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env = Env("postgresql", project, stack, request)
        await env.setup()
        app = await env.app()
        locks, other = app.services.get("locks"), await env.locks()
        db = app.services.get("db")

        async def terminate(conn: Any) -> None:
            async with db.transaction() as s:
                pid = conn.get_server_pid()
                await s.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid})

        # An idle pooled connection the server closed: the next acquire retries.
        await (await locks.acquire("drop", ttl=30)).release()
        for conn in list(locks.backend._pool.idle):
            await terminate(conn)
        lock = await locks.acquire("drop", ttl=10, timeout=5)
        # The holder's own connection dies: its advisory lock goes, its lease stays.
        await terminate(lock._handle.conn)
        with pytest.raises(LockTimeout):
            await other.acquire("drop", timeout=0.5)
        await lock.release()  # on another connection: the lease was still ours
        again = await other.acquire("drop", timeout=5)
        assert again.token > lock.token
        await again.release()


# -- 4 processes x 20 tasks ------------------------------------------------------

HAMMER = """
import asyncio, sys
import wisp
from sqlalchemy import text


KIND, ROOT, KEY = sys.argv[1], sys.argv[2], sys.argv[3]

async def main():
    async with wisp.Wisp(rootdir=ROOT, autoload=False, env={}) as app:
        locks = app.services.get("locks")
        if KIND == "redis":
            client = app.services.get("redis").client
            async def read():
                return int(await client.get(KEY) or 0)
            async def write(value):
                await client.set(KEY, value)
        else:
            db = app.services.get("db")
            async def read():
                async with db.transaction() as s:
                    return (await s.execute(text("SELECT value FROM counter"))).scalar()
            async def write(value):
                async with db.transaction() as s:
                    await s.execute(text("UPDATE counter SET value = :v"), {"v": value})

        async def task(times):
            for _ in range(times):
                async with locks.acquire("counter", ttl=30, timeout=120):
                    value = await read()
                    await asyncio.sleep(0)  # another task may run here
                    await write(value + 1)

        # 20 tasks: 10 increment 13 times, 10 twelve times: 250 per process.
        await asyncio.gather(*(task(13 if i < 10 else 12) for i in range(20)))
        print(locks.stats.acquires)

asyncio.run(main())
"""


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
@pytest.mark.needs_plugin("redis", "storage")
@pytest.mark.slow
async def test_four_processes_of_twenty_tasks_count_to_exactly_1000(kind, project, request) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env = Env(kind, project, stack, request)
        await env.setup()
        app = await env.app()  # runs the migrations once
        key = env.prefix + "counter"
        if kind == "postgresql":
            async with app.services.get("db").transaction() as s:
                await s.execute(text("CREATE TABLE counter (value INTEGER)"))
                await s.execute(text("INSERT INTO counter VALUES (0)"))
        script = project.root / "hammer.py"
        script.write_text(textwrap.dedent(HAMMER))
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                str(script),
                kind,
                str(project.root),
                key,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for _ in range(4)
        ]
        outs = [await asyncio.wait_for(p.communicate(), 300) for p in procs]
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err.decode()[-3000:]
        assert [int(out) for out, _ in outs] == [250] * 4
        if kind == "redis":
            client = app.services.get("redis").client
            assert int(await client.get(key)) == 1000
            await client.delete(key)
        else:
            async with app.services.get("db").transaction() as s:
                assert (await s.execute(text("SELECT value FROM counter"))).scalar() == 1000


@pytest.mark.needs_plugin("storage")
async def test_memory_eighty_tasks_count_to_exactly_1000(project, request) -> None:
    async with contextlib.AsyncExitStack() as stack:
        env = Env("memory", project, stack, request)
        await env.setup()
        locks = await env.locks()
        count = 0

        async def task(times: int) -> None:
            nonlocal count
            for _ in range(times):
                async with locks.acquire("counter", ttl=30, timeout=60):
                    value = count
                    await asyncio.sleep(0)
                    count = value + 1

        await asyncio.gather(*(task(13 if i < 40 else 12) for i in range(80)))
        assert count == 1000


# -- configuration, blocking, CLI -----------------------------------------------


@pytest.mark.needs_plugin("redis", "storage")
async def test_auto_picks_redis_then_postgresql_then_memory(project, request) -> None:
    project.write("wisp.toml", '[wisp]\nautoload = false\nplugins = ["storage", "locks"]\n')
    async with project.app() as app:  # SQLite: memory
        assert app.services.get("locks").backend.kind == "memory"
    if REDIS_SET:  # the fixture fails the test when that Redis is unreachable
        redis_url = request.getfixturevalue("redis_url")
        project.write(
            "wisp.toml",
            '[wisp]\nautoload = false\nplugins = ["storage", "redis", "locks"]\n'
            f'[redis]\nurl = "{redis_url}"\n',
        )
        async with project.app() as app:
            assert app.services.get("locks").backend.kind == "redis"
    if PG_SET:
        pg_url = request.getfixturevalue("pg_url")
        async with contextlib.AsyncExitStack() as stack:
            schema = await _pg_schema(stack, pg_url)
            project.write(
                "wisp.toml",
                '[wisp]\nautoload = false\nplugins = ["storage", "locks"]\n'
                f'[storage]\nurl = "{pg_url}"\nschema = "{schema}"\nauto_migrate = true\n',
            )
            async with project.app() as app:
                assert app.services.get("locks").backend.kind == "sql"


@pytest.mark.needs_plugin("storage")
async def test_sql_backend_on_sqlite_is_refused_by_name(project) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["storage", "locks"]\n[locks]\nbackend = "sql"\n',
    )
    with pytest.raises(wisp.PluginError, match=r"backend = 'sql' needs PostgreSQL.*sqlite"):
        async with project.app():
            pass


def test_a_bad_backend_is_a_config_error_naming_the_key(project) -> None:
    project.write(
        "wisp.toml", '[wisp]\nautoload = false\nplugins = ["locks"]\n[locks]\nbackend = "etcd"\n'
    )
    with pytest.raises(wisp.ConfigError, match=r"locks\.backend|\[locks\] backend"):
        project.app().configure()


@pytest.mark.needs_plugin("basics")
async def test_blocking_storage_turns_sql_locks_off_and_the_bot_still_starts(
    project, log_lines
) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["locks", "basics"]\n[locks]\nbackend = "sql"\n',
    )
    async with project.app() as app:
        assert "locks" not in app.services
        assert (await app.call("ping")).response is not None
    assert any("locks are off" in r["message"] for r in log_lines)


@pytest.mark.slow
def test_cli_lists_and_shows_locks(project, wisp_exe, redis_url) -> None:
    prefix = f"test:locks:{uuid.uuid4().hex}:"
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["redis", "locks"]\n'
        f'[redis]\nurl = "{redis_url}"\n[locks]\nprefix = "{prefix}"\n',
    )
    import redis

    client = redis.Redis.from_url(redis_url)
    client.set(f"{prefix}lock:nightly", "host:1:1", px=60_000)
    client.set(f"{prefix}token:nightly", 7)
    try:

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [wisp_exe, "locks", *args], cwd=project.root, capture_output=True, text=True,
                timeout=60, env={k: v for k, v in os.environ.items() if not k.startswith("WISP_")},
            )  # fmt: skip

        done = run("list")
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("nightly  token 7  held by host:1:1  ")
        done = run("status", "nightly")
        assert "token 7" in done.stdout
        done = run("status", "free-one")
        assert done.stdout.strip() == "free-one: free (redis)"
    finally:
        client.delete(f"{prefix}lock:nightly", f"{prefix}token:nightly")
        client.close()


@pytest.mark.needs_plugin("metrics")
async def test_acquires_waits_and_timeouts_are_counted_in_metrics(project) -> None:
    project.write(
        "wisp.toml",
        '[wisp]\nautoload = false\nplugins = ["locks", "metrics"]\n[locks]\nbackend = "memory"\n',
    )
    from wisp.plugins.metrics.api import metrics_of

    async with project.app() as app:
        locks = app.services.get("locks")
        async with locks.acquire("guild:1", ttl=30), locks.acquire("guild:2", ttl=30):
            with pytest.raises(LockTimeout):
                await locks.acquire("guild:2", timeout=0.05)
        registry = metrics_of(app)
        assert registry is not None
        values = {m.name: getattr(m, "value", None) for m in registry}
    # One metric per kind of lock (``guild``), not one per guild.
    assert values["wisp.locks.guild.acquired"] == 2
    assert values["wisp.locks.guild.timeout"] == 1


@pytest.mark.needs_plugin("redis", "storage")
async def test_a_lost_wake_up_subscription_is_made_again(project, request, log_lines) -> None:
    """Redis: kill a process's wake-up subscription; it is marked lost (health
    reads that mark), then it is back, and a release in another process wakes
    its waiter without polling."""
    async with contextlib.AsyncExitStack() as stack:
        env = Env("redis", project, stack, request)
        await env.setup("recheck_seconds = 60.0\ndefault_ttl = 60.0\n")
        holder_app = await env.app()
        admin = holder_app.services.get("redis").client
        before = {c["id"] for c in await admin.client_list(_type="pubsub")}
        waiter_app = await env.app()
        ours = [c["id"] for c in await admin.client_list(_type="pubsub") if c["id"] not in before]
        assert ours
        for client_id in ours:
            await admin.client_kill_filter(_id=client_id)
        backend = waiter_app.services.get("locks").backend
        async with asyncio.timeout(10):
            while backend._subscribed.is_set():
                await asyncio.sleep(0.005)
            while not backend._subscribed.is_set():
                await asyncio.sleep(0.02)
        messages = [r["message"] for r in log_lines]
        assert any("lost the subscription for lock wake-ups" in m for m in messages)
        assert any("lock wake-ups subscribed again" in m for m in messages)
        held = await holder_app.services.get("locks").acquire("door")

        async def take() -> Any:
            return await waiter_app.services.get("locks").acquire("door")

        waiter = asyncio.create_task(take())
        await asyncio.sleep(0.2)
        assert not waiter.done()
        await held.release()
        got = await asyncio.wait_for(waiter, 15)  # re-checks are 60 s apart: woken
        await got.release()
