"""Distributed locks: the cost of one acquire and release, and a contended counter.

Part 1, Redis round trips (one task, one after another, on the client the
redis plugin makes: a ``BlockingConnectionPool`` of 50):

* ``ping``               - ``await client.ping()``: one bare round trip, the baseline.
* ``wisp lock``          - ``lock = await locks.acquire("bench", ttl=10)`` then
  ``await lock.release()`` on a real app (``plugins = ["redis", "locks"]``):
  two scripts, two round trips, a fencing token included.
* ``redis-py Lock``      - ``lock = client.lock("bench-rp", timeout=10)``,
  ``await lock.acquire()``, ``await lock.release()``: redis-py's own lock (SET NX
  PX, then a release script; no fencing token), one object per acquisition.

Each case runs ``--rounds`` rounds of ``--n`` calls, round-robin; the best and
median round are shown in ns per call, with the ratio to ``ping`` and how
many times slower redis-py's Lock is.  Aim: ``wisp lock`` at most 2.3x
``ping``, ahead of redis-py's Lock.

Part 2, contention: 4 processes x 20 tasks (``memory``: one process x 80
tasks, its locks being in-process) take the lock ``counter`` 1,000 times in
all (half the tasks 13 times, half 12), each time reading a shared counter,
yielding to the event loop, and writing it back plus one: in Redis
(``GET``/``SET`` on the redis plugin's client) or PostgreSQL (``SELECT``/
``UPDATE``, autocommit, on one asyncpg connection per process, used only by
the holder), in a Python int for memory.
Every process starts its app, says it is ready, and starts its tasks when
all are (a line on stdin); the run is timed from the first start to the last
end (wall clock, one machine).  Printed: increments/s, the worst and median
wait of one acquire (from the call to holding the lock), and the final
counter, which must be 1,000.  ``bare`` is the same 1,000 read-yield-write
increments by one task with no lock on the same store: the ratio shows what
the lock and the waiting cost.  Peers, same tasks, same counter:

* ``redis-py Lock``      - ``async with client.lock(name, timeout=30,
  blocking_timeout=120)``, a new Lock per acquisition; a waiter polls every
  0.1 s (its default ``sleep``).
* ``pg_advisory_lock``   - each task on its own asyncpg connection (80 in
  all): ``SELECT pg_advisory_lock(k)``, the counter on that connection,
  ``SELECT pg_advisory_unlock(k)``: PostgreSQL's blocking lock, no lease
  and no token.

Aim: at least 800 increments/s on each backend, worst wait under 300 ms.

Run::

    python benchmarks/locks.py [--redis-url URL] [--database-url URL] [--quick]
                               [--part all|roundtrip|contention] [--repeats N]
                               [--backends memory,redis,sql]

PostgreSQL uses a fresh schema, dropped at the end; Redis keys sit under a
fresh prefix, deleted at the end.  This script only reports; it never fails
on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from _report import Results, table, versus
from loguru import logger

import wisp

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
PROCESSES, TASKS, TOTAL = 4, 20, 1000


def toml(kind: str, root: Path, args: argparse.Namespace, schema: str, prefix: str) -> str:
    plugins = {"memory": ["locks"], "redis": ["redis", "locks"], "sql": ["storage", "locks"]}
    out = "[wisp]\nautoload = false\nplugins = " + json.dumps(plugins[kind]) + "\n"
    if kind == "redis":
        out += f'[redis]\nurl = "{args.redis_url}"\n'
    if kind == "sql":
        out += f'[storage]\nurl = "{args.database_url}"\nschema = "{schema}"\nauto_migrate = true\n'
    return out + f'[locks]\nbackend = "{kind}"\nprefix = "{prefix}"\n'


# -- part 1 ---------------------------------------------------------------------


async def round_trips(args: argparse.Namespace) -> None:
    print(f"\nRedis: one acquire + release, {args.n} calls x {args.rounds} rounds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prefix = f"bench:locks:{uuid.uuid4().hex}:"
        (root / "wisp.toml").write_text(toml("redis", root, args, "", prefix))
        async with wisp.Wisp(rootdir=root, autoload=False, env={}) as app:
            client = app.services.get("redis").client
            locks = app.services.get("locks")

            async def ping() -> None:
                await client.ping()

            async def ours() -> None:
                lock = await locks.acquire("bench", ttl=10)
                await lock.release()

            async def redis_py() -> None:
                lock = client.lock(prefix + "bench-rp", timeout=10)
                await lock.acquire()
                await lock.release()

            cases = {"ping": ping, "wisp lock": ours, "redis-py Lock": redis_py}
            samples: dict[str, list[float]] = {name: [] for name in cases}
            for fn in cases.values():  # warm-up: connections, scripts loaded
                for _ in range(50):
                    await fn()
            for _ in range(args.rounds):
                for name, fn in cases.items():
                    start = time.perf_counter_ns()
                    for _ in range(args.n):
                        await fn()
                    samples[name].append((time.perf_counter_ns() - start) / args.n)
            results: Results = {
                name: (min(s), statistics.median(s), args.n * args.rounds)
                for name, s in samples.items()
            }
            table(results, "ping")
            versus(results, "wisp lock", ["redis-py Lock"])
            keys = [k async for k in client.scan_iter(match=prefix + "*")]
            if keys:
                await client.delete(*keys)


# -- part 2 ---------------------------------------------------------------------


async def child(kind: str, root: str, key: str, tasks: int, mode: str) -> None:
    """One contending process: ready, wait for go, run, print a JSON summary."""
    logger.remove()
    async with wisp.Wisp(rootdir=root, autoload=False, env={}) as app:
        locks = app.services.get("locks")
        read, write = counter_ops(kind, app, key)
        waits: list[float] = []
        box = {"value": 0}

        async def ours(times: int) -> None:
            for _ in range(times):
                called = time.perf_counter()
                async with locks.acquire("counter", ttl=30, timeout=120):
                    waits.append(time.perf_counter() - called)
                    value = await read(box)
                    await asyncio.sleep(0)
                    await write(box, value + 1)

        async def redis_py(times: int) -> None:
            client = app.services.get("redis").client
            for _ in range(times):
                called = time.perf_counter()
                # One Lock object per acquisition: its token is thread-local.
                lock = client.lock(key + ":peer-lock", timeout=30, blocking_timeout=120)
                async with lock:
                    waits.append(time.perf_counter() - called)
                    value = await read(box)
                    await asyncio.sleep(0)
                    await write(box, value + 1)

        async def advisory(times: int) -> None:
            import asyncpg

            db = app.services.get("db")
            conn = await asyncpg.connect(
                db.url.replace("+asyncpg", ""), server_settings={"search_path": db.config.schema}
            )
            try:
                for _ in range(times):
                    called = time.perf_counter()
                    await conn.execute("SELECT pg_advisory_lock(4242)")
                    waits.append(time.perf_counter() - called)
                    value = await conn.fetchval("SELECT value FROM counter")
                    await asyncio.sleep(0)
                    await conn.execute("UPDATE counter SET value = $1", value + 1)
                    await conn.execute("SELECT pg_advisory_unlock(4242)")
            finally:
                await conn.close()

        task = {"wisp": ours, "redis-py": redis_py, "advisory": advisory}[mode]
        per_task = TOTAL // (PROCESSES * TASKS) if kind != "memory" else TOTAL // tasks
        extra = TOTAL // PROCESSES - per_task * tasks if kind != "memory" else TOTAL % tasks
        counts = [per_task + (1 if i < extra else 0) for i in range(tasks)]
        print("ready", flush=True)
        if kind != "memory":
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        start = time.time()
        await asyncio.gather(*(task(c) for c in counts))
        end = time.time()
        final = box["value"] if kind == "memory" else None
        print(json.dumps({"start": start, "end": end, "waits": waits, "final": final}))


def counter_ops(kind: str, app: wisp.Wisp, key: str) -> tuple[Any, Any]:
    if kind == "redis":
        client = app.services.get("redis").client

        async def read(box: dict[str, int]) -> int:
            return int(await client.get(key) or 0)

        async def write(box: dict[str, int], value: int) -> None:
            await client.set(key, value)

    elif kind == "sql":
        db = app.services.get("db")
        conn: list[Any] = []  # one asyncpg connection: only the holder uses it

        async def connection() -> Any:
            if not conn:
                import asyncpg

                dsn = db.url.replace("+asyncpg", "")
                made = await asyncpg.connect(dsn, server_settings={"search_path": db.config.schema})
                conn.append(made)
            return conn[0]

        async def read(box: dict[str, int]) -> int:
            return int(await (await connection()).fetchval("SELECT value FROM counter"))

        async def write(box: dict[str, int], value: int) -> None:
            await (await connection()).execute("UPDATE counter SET value = $1", value)

    else:

        async def read(box: dict[str, int]) -> int:
            return box["value"]

        async def write(box: dict[str, int], value: int) -> None:
            box["value"] = value

    return read, write


async def bare(kind: str, root: Path, key: str) -> float:
    """1,000 read-yield-write increments by one task, no lock: seconds."""
    async with wisp.Wisp(rootdir=root, autoload=False, env={}) as app:
        read, write = counter_ops(kind, app, key)
        box = {"value": 0}
        start = time.perf_counter()
        for _ in range(TOTAL):
            value = await read(box)
            await asyncio.sleep(0)
            await write(box, value + 1)
        return time.perf_counter() - start


LABELS = {
    "wisp": "wisp",
    "redis-py": "redis-py Lock",
    "advisory": "pg_advisory_lock",
}


async def contention(kind: str, args: argparse.Namespace, mode: str = "wisp") -> None:
    import asyncpg

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prefix = f"bench:locks:{uuid.uuid4().hex}:"
        key = prefix + "counter"
        schema = f"bench_{uuid.uuid4().hex[:12]}" if kind == "sql" else ""
        pg = None
        if kind == "sql":
            pg = await asyncpg.connect(args.database_url.replace("+asyncpg", ""))
            await pg.execute(f"CREATE SCHEMA {schema}")
            await pg.execute(f"CREATE TABLE {schema}.counter (value INTEGER)")
            await pg.execute(f"INSERT INTO {schema}.counter VALUES (0)")
        (root / "wisp.toml").write_text(toml(kind, root, args, schema, prefix))
        try:
            async with wisp.Wisp(rootdir=root, autoload=False, env={}):
                pass  # migrations applied once, before the children start
            bare_s = await bare(kind, root, key)
            n = 1 if kind == "memory" else PROCESSES
            tasks = PROCESSES * TASKS if kind == "memory" else TASKS
            runs: list[tuple[float, float, float, Any]] = []
            for _ in range(args.repeats):
                if kind in ("redis", "sql"):
                    await reset_counter(kind, args, key, schema, pg)
                outs = await run_children(n, [kind, str(root), key, str(tasks), mode])
                final = (
                    outs[0]["final"]
                    if kind == "memory"
                    else await read_counter(kind, args, key, schema, pg)
                )
                waits = [w for o in outs for w in o["waits"]]
                elapsed = max(o["end"] for o in outs) - min(o["start"] for o in outs)
                runs.append((TOTAL / elapsed, max(waits), statistics.median(waits), final))
            rate, worst, median, final = max(runs, key=lambda r: r[0])
            others = ", ".join(f"{r[0]:,.0f}/{r[1] * 1000:,.0f}" for r in runs)
            wrong = [r[3] for r in runs if r[3] != TOTAL]
            print(
                f"  {kind:<7} {LABELS[mode]:<17} {n} x {tasks:<4} {rate:>7,.0f}/s  worst "
                f"{worst * 1000:>5,.0f} ms  median {median * 1000:>5.1f} ms  "
                f"bare {TOTAL / bare_s:,.0f}/s ({(TOTAL / bare_s) / rate:.1f}x)  "
                f"runs /s / worst ms: {others}" + (f"  COUNTER WRONG: {wrong}" if wrong else "")
            )
        finally:
            if kind == "redis":
                import redis.asyncio as aioredis

                client = aioredis.Redis.from_url(args.redis_url)
                keys = [k async for k in client.scan_iter(match=prefix + "*")]
                if keys:
                    await client.delete(*keys)
                await client.aclose()
            if pg is not None:
                await pg.execute(f"DROP SCHEMA {schema} CASCADE")
                await pg.close()


async def run_children(n: int, argv: list[str]) -> list[dict[str, Any]]:
    """Start ``n`` children, let them all go at once, return their summaries."""
    procs = []
    try:
        for _ in range(n):
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--child",
                    *argv,
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for p in procs:
            assert p.stdout is not None
            line = await p.stdout.readline()
            if line.strip() != b"ready":
                raise RuntimeError(f"a child failed to start: {line!r}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        done = [await p.communicate() for p in procs]
        if any(p.returncode for p in procs):
            raise RuntimeError("a child failed (its error is above)")
        return [json.loads(out) for out, _ in done]
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


async def reset_counter(
    kind: str, args: argparse.Namespace, key: str, schema: str, pg: Any
) -> None:
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(args.redis_url)
        await client.delete(key)
        await client.aclose()
    else:
        await pg.execute(f"UPDATE {schema}.counter SET value = 0")


async def read_counter(kind: str, args: argparse.Namespace, key: str, schema: str, pg: Any) -> int:
    if kind == "redis":
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(args.redis_url)
        value = int(await client.get(key) or 0)
        await client.aclose()
        return value
    return int(await pg.fetchval(f"SELECT value FROM {schema}.counter"))


async def main(args: argparse.Namespace) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    if args.part in ("all", "roundtrip"):
        await round_trips(args)
    if args.part == "roundtrip":
        return
    print(f"\nContention: {TOTAL:,} increments of one counter under one lock")
    print(
        f"  (processes x tasks; best of {args.repeats} run(s); bare: the same increments by"
        " one task, no lock)"
    )
    runs = [("memory", "wisp"), ("redis", "wisp"), ("redis", "redis-py")]
    runs += [("sql", "wisp"), ("sql", "advisory")]
    for kind, mode in runs:
        if kind not in args.backends.split(","):
            continue
        try:
            await contention(kind, args, mode)
        except Exception as exc:
            print(f"  {kind:<7} {LABELS[mode]:<17} n/a: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("WISP_TEST_REDIS_URL", DEFAULT_REDIS),
        help=f"default: $WISP_TEST_REDIS_URL or {DEFAULT_REDIS}",
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WISP_TEST_DATABASE_URL", DEFAULT_DB),
        help=f"default: $WISP_TEST_DATABASE_URL or {DEFAULT_DB}",
    )
    parser.add_argument("--quick", action="store_true", help="fewer iterations, noisier")
    parser.add_argument("--part", choices=["all", "roundtrip", "contention"], default="all")
    parser.add_argument(
        "--backends", default="memory,redis,sql", help="contention runs on these (comma-separated)"
    )
    parser.add_argument("--n", type=int, default=0, help="calls per round (default 2000)")
    parser.add_argument("--rounds", type=int, default=0, help="rounds (default 7)")
    parser.add_argument(
        "--repeats", type=int, default=0, help="contention runs per case (default 3)"
    )
    ns = parser.parse_args()
    ns.n = ns.n or (300 if ns.quick else 2000)
    ns.rounds = ns.rounds or (3 if ns.quick else 7)
    ns.repeats = ns.repeats or (1 if ns.quick else 3)
    asyncio.run(main(ns))
