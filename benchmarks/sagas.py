"""Sagas: the cost of one 3-step no-op saga run, on each store, against DBOS.

Each system runs a saga of three steps that do nothing (each returns
``None``), one run after another, start to finish, and the time per run is
reported.  Systems:

* ``bare``              - the three no-op steps awaited in a row: the floor.
* ``wisp-sqlite``       - a real app, ``plugins = ["storage", "sagas"]`` on a SQLite
  file (WAL), the jobs plugin not loaded, so runs are driven inline:
  ``await sagas.start("noop3", i)`` then ``await sagas.drain()`` (the run's
  background task).  Every run is journaled: created, claimed (lease and
  token), each step's intent and outcome, completed.
* ``wisp-postgresql``   - the same on PostgreSQL (``--database-url``, a fresh schema),
  with the default ``[sagas] sync_progress = true``: every write waits for
  PostgreSQL's WAL flush, as DBOS's do.
* ``wisp-postgresql-async`` - the same with ``sync_progress = false``: creating and
  finishing the run wait for the flush, the owner's progress writes do not.
* ``wisp-redis``        - the same with ``[sagas] backend = "redis"`` (``--redis-url``, a fresh
  key prefix, deleted at the end).
* ``dbos-postgresql``   - DBOS (``dbos`` on PyPI) on the same PostgreSQL server (a
  database of its own, ``wisp_bench_dbos``, dropped at the end): a
  ``@DBOS.workflow()`` awaiting three ``@DBOS.step()`` functions, called
  directly (``await saga(i)``), which runs and checkpoints it in this process.

Round trips, for scale: ``sqlite SELECT 1``, ``postgresql SELECT 1`` (asyncpg
through SQLAlchemy's pool), ``redis PING``.

How it measures: one asyncio event loop; each system warms up with 20 runs,
then ``--runs`` runs are timed, ``--repeats`` times, round-robin across the
systems; the best repeat (ns per run) is reported with the median beside it.
Loguru's sinks are removed while timing.  The aim: Wisp at least 3x faster
per run than DBOS on the same PostgreSQL.  This script only reports.

Run::

    python benchmarks/sagas.py            # 300 runs x 3 repeats per system
    python benchmarks/sagas.py --quick    # 100 runs x 2 repeats
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import statistics
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.sagas.api import Saga

sys.path.insert(0, str(Path(__file__).parent))
from _report import table, versus

DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DBOS_DATABASE = "wisp_bench_dbos"

RunOnce = Callable[[int], Awaitable[Any]]


async def _noop(step: Any) -> None:
    return None


def noop_saga() -> Saga:
    saga = Saga("noop3", version=1)
    for name in ("one", "two", "three"):
        saga.step(name)(_noop)
    return saga


class Sagas:
    @wisp.hookimpl
    def wisp_sagas(self, app: Any) -> list[Any]:
        return [noop_saga()]


class Unavailable(Exception):
    """This system cannot run here; the message says why."""


async def open_wisp(
    stack: contextlib.AsyncExitStack, store: str, args: argparse.Namespace, base: Path
) -> tuple[RunOnce, RunOnce]:
    """A Wisp app on ``store``; returns (one saga run, one bare round trip)."""
    root = base / f"wisp-{store}"
    root.mkdir()
    sagas = ""
    if store == "postgresql-async":
        store, sagas = "postgresql", "sync_progress = false\n"
    if store == "sqlite":
        storage = f'url = "sqlite+aiosqlite:///{root / "bench.sqlite3"}"\n'
        plugins = '["storage", "sagas"]'
    elif store == "postgresql":
        schema = await _pg_schema(stack, args.database_url)
        storage = f'url = "{args.database_url}"\nschema = "{schema}"\n'
        plugins = '["storage", "sagas"]'
    else:
        prefix = f"bench:{uuid.uuid4().hex[:8]}:sagas:"
        storage = f'url = "sqlite+aiosqlite:///{root / "bench.sqlite3"}"\n'
        plugins = '["redis", "sagas"]'
        sagas = f'backend = "redis"\nredis_prefix = "{prefix}"\n'
        stack.push_async_callback(_redis_cleanup, args.redis_url, prefix)
    (root / "wisp.toml").write_text(
        f"[wisp]\nautoload = false\nplugins = {plugins}\n"
        f"[storage]\n{storage}auto_migrate = true\n"
        f'[redis]\nurl = "{args.redis_url}"\n'
        f"[sagas]\n{sagas}",
        encoding="utf-8",
    )
    app = wisp.Wisp(rootdir=root, autoload=False, env={})
    app.register(Sagas(), "bench-sagas")
    await stack.enter_async_context(app)
    service = app.services.get("sagas")

    async def run_once(i: int) -> None:
        run_id = await service.start("noop3", i)
        await service.drain()
        if i < 0:  # the warm-up checks that runs really complete
            run = await service.get(run_id)
            if run is None or run.status.value != "completed":
                raise RuntimeError(f"wisp-{store}: a run did not complete: {run}")

    if store == "redis":
        client = app.services.get("redis").client

        async def trip(i: int) -> None:
            await client.ping()
    else:
        from sqlalchemy import text

        engine = app.services.get("db").engine

        async def trip(i: int) -> None:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))

    return run_once, trip


async def _pg_schema(stack: contextlib.AsyncExitStack, url: str) -> str:
    import asyncpg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    stack.push_async_callback(conn.close)
    stack.push_async_callback(conn.execute, f"DROP SCHEMA {schema} CASCADE")
    await conn.execute(f"CREATE SCHEMA {schema}")
    return schema


async def _redis_cleanup(url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def open_dbos(stack: contextlib.AsyncExitStack, args: argparse.Namespace) -> RunOnce:
    try:
        from dbos import DBOS
    except ImportError as exc:
        raise Unavailable(f"dbos is not installed ({exc}); pip install dbos") from None
    plain = args.database_url.replace("postgresql+asyncpg://", "postgresql://")
    server, _, _ = plain.rpartition("/")
    url = f"{server}/{DBOS_DATABASE}"
    logging.getLogger("dbos").setLevel(logging.ERROR)
    DBOS(config={"name": "wispbench", "system_database_url": url, "run_admin_server": False})

    @DBOS.step()
    async def one(i: int) -> None:
        return None

    @DBOS.step()
    async def two(i: int) -> None:
        return None

    @DBOS.step()
    async def three(i: int) -> None:
        return None

    @DBOS.workflow()
    async def saga(i: int) -> int:
        await one(i)
        await two(i)
        await three(i)
        return i

    DBOS.launch()
    stack.push_async_callback(_drop_database, server, DBOS_DATABASE)
    stack.callback(DBOS.destroy)

    async def run_once(i: int) -> None:
        if await saga(i) != i:
            raise RuntimeError("dbos: the workflow returned something else")

    return run_once


async def _drop_database(server: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{server}/postgres")
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await conn.close()


async def bare(i: int) -> None:
    await _noop(None)
    await _noop(None)
    await _noop(None)


async def timed(fn: RunOnce, runs: int, offset: int) -> float:
    start = time.perf_counter_ns()
    for i in range(runs):
        await fn(offset + i)
    return (time.perf_counter_ns() - start) / runs


async def run(args: argparse.Namespace) -> None:
    systems: dict[str, RunOnce] = {"bare": bare}
    trips: dict[str, RunOnce] = {}
    missing: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with contextlib.AsyncExitStack() as stack:
            for store in ("sqlite", "postgresql", "postgresql-async", "redis"):
                try:
                    run_once, trip = await open_wisp(stack, store, args, Path(tmp))
                    systems[f"wisp-{store}"] = run_once
                    trips.setdefault(f"{store.removesuffix('-sync')} round trip", trip)
                except Exception as exc:
                    missing[f"wisp-{store}"] = f"{type(exc).__name__}: {exc}"
            try:
                systems["dbos-postgresql"] = await open_dbos(stack, args)
            except Exception as exc:
                traceback.print_exc()
                missing["dbos-postgresql"] = f"{type(exc).__name__}: {exc}"
            logger.remove()
            for name, fn in list(systems.items()) + list(trips.items()):
                try:
                    for i in range(20):
                        await fn(-1 - i)
                except Exception as exc:
                    missing[name] = f"{type(exc).__name__}: {exc}"
                    systems.pop(name, None)
                    trips.pop(name, None)
            samples: dict[str, list[float]] = {n: [] for n in [*systems, *trips]}
            for r in range(args.repeats):
                for name, fn in [*systems.items(), *trips.items()]:
                    samples[name].append(await timed(fn, args.runs, r * args.runs))
    results = {n: (min(s), statistics.median(s), args.runs * len(s)) for n, s in samples.items()}
    print(f"sagas: one 3-step no-op saga run, start to finish ({args.runs} runs x {args.repeats})")
    print(f"python {sys.version.split()[0]}, wisp {wisp.__version__}, pid {os.getpid()}")
    table(results, "bare", unit="ns/run")
    print()
    for store in ("sqlite", "postgresql", "postgresql-async", "redis"):
        ours, trip = f"wisp-{store}", f"{store.removesuffix('-sync')} round trip"
        if ours in results and trip in results:
            ratio = results[ours][0] / results[trip][0]
            print(f"  {ours:<18} {results[ours][0] / 1e6:7.2f} ms/run = {ratio:5.1f} round trips")
    print()
    for ours in ("wisp-postgresql", "wisp-postgresql-async", "wisp-sqlite", "wisp-redis"):
        if ours in results and "dbos-postgresql" in results:
            versus(results, ours, ["dbos-postgresql"])
    if "wisp-postgresql" in results and "dbos-postgresql" in results:
        ratio = results["dbos-postgresql"][0] / results["wisp-postgresql"][0]
        aim = "met" if ratio >= 3 else "NOT met"
        print(f"  aim (wisp-postgresql at least 3x faster than DBOS): {aim} ({ratio:.2f}x)")
    for name, why in missing.items():
        print(f"  {name}: n/a ({why})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 runs x 2 repeats")
    parser.add_argument("--runs", type=int, help="runs per repeat (default 300; --quick 100)")
    parser.add_argument("--repeats", type=int, help="repeats (default 3; --quick 2)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WISP_TEST_DATABASE_URL", DEFAULT_DB),
        help="PostgreSQL (SQLAlchemy URL with asyncpg)",
    )
    parser.add_argument("--redis-url", default=os.environ.get("WISP_TEST_REDIS_URL", DEFAULT_REDIS))
    args = parser.parse_args(argv)
    args.runs = args.runs or (100 if args.quick else 300)
    args.repeats = args.repeats or (2 if args.quick else 3)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
