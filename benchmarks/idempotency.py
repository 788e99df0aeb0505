"""What do an idempotent claim-and-complete and a repeat cost, per store?

Each store runs a real app (``wisp.Wisp(rootdir=...)`` on a temporary
project, ``plugins = ["storage", "idempotency"]`` or ``["redis",
"idempotency"]``, defaults otherwise: heartbeat on) and these cases, one
after another in one asyncio loop:

* ``round trip``       - the bare round trip the backend pays per statement,
  through the same machinery: SQLite, ``SELECT 1`` in a transaction of the
  ``db`` service (what each statement of the backend runs in); PostgreSQL,
  ``SELECT 1`` alone in autocommit on the backend's own pool (its path for
  every statement); Redis, ``PING`` on the redis plugin's client.
* ``write``            - one durable write the same way: an ``UPDATE`` of one
  row of the plugin's table (SQL: a commit, which PostgreSQL flushes to its
  WAL before answering), a ``SET`` (Redis).  A claim-and-complete is two
  writes, so this is its floor divided by two.
* ``claim+complete``   - ``async with service.idempotent(new_key) as claim:
  claim.result = 1``: a fresh key claimed, then its result stored.
* ``repeat``           - the same with a key completed before: the stored
  result comes back, nothing runs.  The aim: one round trip.
* ``SET NX + GET``     - Redis only, a reference: the hand-written pattern
  (``SET key owner NX PX``; when taken, ``GET`` what it holds) is two round
  trips for a repeat.

Each case is warmed up, then repeats run round-robin with the garbage
collector off; the best (minimum) repeat per call is reported with the
median beside it, and its ratio to the store's round trip.  PostgreSQL
(``--database-url``) runs in a fresh schema, dropped at the end; Redis
(``--redis-url``) under a fresh key prefix, deleted at the end.  A store that
cannot be reached is shown as n/a.  This script only reports; it never fails
on timings.

Run::

    python benchmarks/idempotency.py            # ~30 s
    python benchmarks/idempotency.py --quick    # a few seconds, noisier
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from _report import Results, table
from loguru import logger
from sqlalchemy import literal, select, text

import wisp

perf_counter_ns = time.perf_counter_ns

DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

Case = Callable[[], Awaitable[Any]]


@contextlib.asynccontextmanager
async def open_app(store: str, args: argparse.Namespace) -> AsyncIterator[wisp.Wisp]:
    """A started app on ``store``, and afterwards its data gone."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schema = ""
        prefix = f"bench:idem:{uuid.uuid4().hex}:"
        if store == "sqlite":
            toml = (
                '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
                f'[storage]\nurl = "sqlite+aiosqlite:///{root / "bench.sqlite3"}"\n'
                "auto_migrate = true\n"
            )
        elif store == "postgresql":
            import asyncpg

            schema = f"bench_{uuid.uuid4().hex[:12]}"
            conn = await asyncpg.connect(args.database_url.replace("+asyncpg", ""))
            await conn.execute(f"CREATE SCHEMA {schema}")
            await conn.close()
            toml = (
                '[wisp]\nautoload = false\nplugins = ["storage", "idempotency"]\n'
                f'[storage]\nurl = "{args.database_url}"\nschema = "{schema}"\n'
                "auto_migrate = true\n"
            )
        else:
            toml = (
                '[wisp]\nautoload = false\nplugins = ["redis", "idempotency"]\n'
                f'[redis]\nurl = "{args.redis_url}"\n'
                f'[idempotency]\nbackend = "redis"\nredis_prefix = "{prefix}"\n'
            )
        (root / "wisp.toml").write_text(toml)
        app = wisp.Wisp(rootdir=root, autoload=False, env={})
        try:
            async with app:
                yield app
                if store == "redis":
                    client = app.services.get("redis").client
                    async for key in client.scan_iter(match=prefix + "*", count=1000):
                        await client.delete(key)
        finally:
            if schema:
                import asyncpg

                conn = await asyncpg.connect(args.database_url.replace("+asyncpg", ""))
                await conn.execute(f"DROP SCHEMA {schema} CASCADE")
                await conn.close()


def cases(store: str, app: wisp.Wisp) -> dict[str, Case]:
    service = app.services.get("idempotency")
    backend = service.backend
    counter = iter(range(10**12))

    if store == "redis":
        client = app.services.get("redis").client

        async def round_trip() -> Any:
            return await client.ping()

    elif store == "postgresql":
        one = select(literal(1))

        async def round_trip() -> Any:
            return await backend._one(one)  # the backend's own single-statement path

    else:
        db = app.services.get("db")
        one_text = text("SELECT 1")

        async def round_trip() -> Any:
            async with db.transaction() as s:
                return (await s.execute(one_text)).scalar()

    async def claim_complete() -> None:
        async with service.idempotent(f"fresh-{next(counter)}") as claim:
            claim.result = 1

    async def repeat() -> None:
        async with service.idempotent("done") as claim:
            if not claim.replayed:
                raise AssertionError("the repeat ran")

    if store == "redis":
        written = service.config.redis_prefix + "write"

        async def write() -> Any:
            return await client.set(written, "1")

    else:
        # A row rewritten in place: one durable commit, nothing else.
        touch = text("UPDATE idempotency_keys SET attempts = attempts WHERE key = 'done'")

        async def write() -> Any:
            return await backend._one(touch)

    out: dict[str, Case] = {
        "round trip": round_trip,
        "write": write,
        "claim+complete": claim_complete,
        "repeat": repeat,
    }
    if store == "redis":
        prefix = service.config.redis_prefix + "setnx:"

        async def set_nx_get() -> None:
            key = prefix + "done"
            if not await client.set(key, "owner", nx=True, px=3_600_000):
                await client.get(key)

        out["SET NX + GET"] = set_nx_get
    return out


async def time_case(case: Case, n: int) -> float:
    """ns per call over ``n`` sequential calls."""
    start = perf_counter_ns()
    for _ in range(n):
        await case()
    return (perf_counter_ns() - start) / n


async def run_store(store: str, args: argparse.Namespace) -> Results | str:
    try:
        async with open_app(store, args) as app:
            service = app.services.get("idempotency")
            async with service.idempotent("done") as claim:
                claim.result = {"ok": True}
            all_cases = cases(store, app)
            if store == "redis":
                await all_cases["SET NX + GET"]()  # the key exists: every call is a repeat
            for case in all_cases.values():  # warm-up, and a check that each works
                await time_case(case, max(20, args.n // 10))
            samples: dict[str, list[float]] = {name: [] for name in all_cases}
            gc.disable()
            try:
                for _ in range(args.repeats):
                    for name, case in all_cases.items():
                        samples[name].append(await time_case(case, args.n))
            finally:
                gc.enable()
            c = service.counters
            if c.hits < args.n * args.repeats or c.in_progress or c.failures or c.lost:
                return f"unexpected counters {c}"
            return {
                name: (min(s), statistics.median(s), args.n * args.repeats)
                for name, s in samples.items()
            }
    except Exception as exc:  # an unreachable store: reported, not fatal
        return f"n/a: {type(exc).__name__}: {exc}"


async def main_async(args: argparse.Namespace) -> None:
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    print(f"Python {platform.python_version()} on {platform.machine()}, wisp {wisp.__version__}")
    print(f"{args.n} sequential calls per repeat, {args.repeats} repeats; best repeat shown\n")
    for store in args.stores:
        print(f"{store}:")
        results = await run_store(store, args)
        if isinstance(results, str):
            print(f"  {results}\n")
            continue
        table(results, "round trip")
        rt = results["round trip"][0]
        wr = results["write"][0]
        print(
            f"  a repeat costs {results['repeat'][0] / rt:.2f} round trips; "
            f"claim+complete {results['claim+complete'][0] / wr:.2f} writes\n"
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer calls, noisier")
    parser.add_argument("--database-url", default=DEFAULT_DB, help=f"default {DEFAULT_DB}")
    parser.add_argument("--redis-url", default=DEFAULT_REDIS, help=f"default {DEFAULT_REDIS}")
    parser.add_argument(
        "--stores",
        default="sqlite,postgresql,redis",
        help="comma-separated: sqlite, postgresql, redis",
    )
    args = parser.parse_args(argv)
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    args.n, args.repeats = (200, 3) if args.quick else (1000, 5)
    asyncio.run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
