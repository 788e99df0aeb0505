"""Durable jobs: enqueue and process throughput, on each store, against peers.

Every system enqueues no-op jobs (no arguments, no payload, the handler
returns ``None``) and drains them with one worker in this process, running
``--concurrency`` jobs at once (20 unless told).  Stores and systems:

SQLite (a file in a temporary project directory; no peer runs on SQLite):

* ``wisp``           - a real app: ``wisp.Wisp(rootdir=...)`` on a project whose
  ``wisp.toml`` has ``plugins = ["storage", "jobs"]``, ``[storage] url =
  "sqlite+aiosqlite:///..."`` and a command file with ``@wisp.job("noop")``.

PostgreSQL (``--database-url``; each system gets a fresh schema, dropped at the end):

* ``wisp``           - the same project with ``[storage] url``, ``schema`` and
  ``pool_size = <concurrency>``, ``max_overflow = 0``.
* ``procrastinate``  - ``App(connector=PsycopgConnector(conninfo, max_size=<concurrency>,
  kwargs={"options": "-c search_path=<schema>"}))``, its schema applied with
  ``schema_manager.apply_schema_async()``; ``@app.task(name="noop")``.

Redis (``--redis-url``; keys under a fresh prefix or queue name, deleted at the end):

* ``wisp``           - the project with ``plugins = ["redis", "jobs"]``, ``[redis] url``,
  ``[jobs] backend = "redis"`` and ``redis_prefix = "<unique>:wisp:"``.
* ``arq``            - ``create_pool(RedisSettings.from_dsn(url), default_queue_name=<unique>)``.
* ``saq``            - ``Queue.from_url(url, name=<unique>)`` (redis-py, its default pool).

Cases, per system:

* ``enqueue``        - N ``enqueue`` calls, one after another: Wisp's
  ``app.services.get("jobs").enqueue("noop")``, arq's ``pool.enqueue_job("noop",
  _job_id=...)`` (an id of ours only so that its keys can be found and deleted
  afterwards), saq's ``queue.enqueue("noop")``, procrastinate's
  ``noop.defer_async()``.
* ``enqueue x100``   - the same N calls as ``asyncio.gather`` batches of 100 (``--batch``).
* ``process``        - N pending jobs (those just enqueued), one new worker with
  ``--concurrency`` slots; the time from starting it until all N are recorded
  as completed in the store.  Wisp: ``Worker(app, service.backend, config,
  concurrency=C).run(stop)``, stopped (untimed) once its ``completed`` count
  reaches N.  arq: ``Worker(functions=[noop], redis_pool=pool, burst=True,
  max_jobs=C, poll_delay=0, handle_signals=False).async_run()``, which returns
  once the queue is empty and every result is written.  saq: ``Worker(queue,
  [noop], concurrency=C).start()``, stopped (untimed) once ``queue.complete``
  (counted after each result is written) reaches N; it dequeues with a
  blocking ``BLMOVE``, so it has no poll interval.  procrastinate:
  ``app.run_worker_async(concurrency=C, wait=False, install_signal_handlers=False)``,
  which returns once no job is left and every running job is finished; its
  timing includes registering and removing the worker row (two short queries).
  A watched counter is read every millisecond.

Settings: Wisp's ``[jobs] poll_seconds = 0.1`` (a worker in the enqueuing
process, and on PostgreSQL one that LISTENs, is woken at once anyway); arq's
``poll_delay = 0`` (the least it allows; its default is 0.5 s, which caps a
burst at about 200 jobs/s here; 0.01 s measured the same as 0); every peer
keeps its results the way it does by default (arq for an hour, saq for 10
minutes, procrastinate's rows and Wisp's rows kept), and nothing is retried.
Both PostgreSQL clients may open up to ``--concurrency`` pooled connections.

How it measures: everything runs in one asyncio event loop, each system
opened once.  Before timing, each system enqueues and drains a small warm-up
batch, which also checks that its jobs really complete (a Wisp failure stops
the script; a peer that fails is shown as n/a with the reason, as is one that
cannot be imported or reached).  Then repeats run round-robin across the
systems; each repeat is: enqueue N one by one, drain them, enqueue N in
batches, drain them, each drain checked against the store's own count (so
process has two samples per repeat).  Every system runs one repeat; it runs
more, up to ``--repeats``, only while its timed repeats so far took less than
``--budget`` seconds, so fast systems get several samples and slow ones do
not stretch the run (the ``runs`` column).  The best (highest jobs/s) sample
is reported with the median beside it.  Log output is off while timing:
Wisp's loguru sinks are removed (warnings still print); the peers' stdlib
logging is left unconfigured, so their INFO lines are dropped, and saq's and
procrastinate's loggers are set to ERROR (saq warns at every stop that its
idle blocking dequeues were cancelled, procrastinate that its App is defined
in ``__main__``; neither is timed).  The aim: Wisp ahead of each peer on its
own store, in all three cases.  This script only reports; it never fails on
timings.

Run::

    python benchmarks/jobs.py              # 5,000 jobs, up to 3 repeats (20 s budget): ~5 min
    python benchmarks/jobs.py --quick      # 1,000 jobs, up to 2 repeats (4 s budget): ~1 min
    python benchmarks/jobs.py --only wisp-sqlite,arq --jobs 2000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import itertools
import logging
import os
import platform
import statistics
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.jobs.config import JobsConfig
from wisp.plugins.jobs.worker import Worker

perf_counter = time.perf_counter

DEFAULT_DB = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
DRAIN_TIMEOUT = 300.0  # seconds: a drain that takes longer is a failure, not a number
WATCH_STEP = 0.001  # how often a watched completion counter is read
POLL_SECONDS = 0.1  # Wisp's [jobs] poll_seconds
CASES = ("enqueue", "enqueue xB", "process")

HANDLER = """\
import wisp


@wisp.job("noop")
async def noop(ctx, payload):
    return None
"""


class Unavailable(Exception):
    """This system cannot run here; the message says why."""


async def noop(ctx: Any) -> None:
    """arq's and saq's no-op job (both pass a context dict)."""
    return None


def quiet_peers() -> None:
    """saq warns at every stop that its idle dequeues were cancelled; procrastinate
    that its App lives in ``__main__`` (which matters only to workers that import
    tasks by name).  Neither is timed; their errors still show."""
    for name in ("saq", "procrastinate"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_loguru() -> None:
    """No Wisp log output while timing; warnings and errors still go to stderr."""
    logger.remove()
    logger.add(sys.stderr, level="WARNING")


async def watch(count: Callable[[], int], n: int, task: asyncio.Task[Any]) -> None:
    """Return once ``count()`` reaches n; raise if ``task`` ends first or time runs out."""
    deadline = perf_counter() + DRAIN_TIMEOUT
    sleep = asyncio.sleep
    while count() < n:
        if task.done():
            task.result()  # its error, if it failed
            raise RuntimeError(f"the worker stopped after {count()} of {n} jobs")
        if perf_counter() > deadline:
            raise RuntimeError(f"only {count()} of {n} jobs completed in {DRAIN_TIMEOUT:g}s")
        await sleep(WATCH_STEP)


async def delete_keys(client: Any, pattern: str) -> None:
    keys = [k async for k in client.scan_iter(match=pattern, count=1000)]
    for i in range(0, len(keys), 1000):
        await client.delete(*keys[i : i + 1000])


def pg_dsn(url: str) -> str:
    """An SQLAlchemy URL as libpq (asyncpg, psycopg) takes it."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


async def pg_schema(url: str, schema: str, *, create: bool) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg_dsn(url))
    try:
        if create:
            await conn.execute(f"CREATE SCHEMA {schema}")
        else:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


# -- systems -------------------------------------------------------------------------


class System:
    """One job system on one store.  ``open`` sets ``enqueue``: a call that
    enqueues one no-op job."""

    name = ""
    store = ""
    role = "peer"  # or "wisp"
    enqueue: Callable[[], Awaitable[Any]]

    async def open(self) -> None:
        raise NotImplementedError

    async def drain(self, n: int, concurrency: int) -> tuple[float, int]:
        """Seconds until n pending jobs are completed; how many the store counts
        completed meanwhile (-1: some were left unfinished or failed)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close what ``open`` opened and delete what the run stored (also after a
        failed ``open``)."""


class WispSystem(System):
    """A real app on a project directory, as a bot author would run it."""

    name = "wisp"
    role = "wisp"

    def __init__(self, store: str, root: Path, toml: str) -> None:
        self.store = store
        self.root = root
        self.toml = toml
        self._stack = contextlib.AsyncExitStack()

    async def open(self) -> None:
        folder = f"wispbench_{self.store}"  # a module name of its own per project
        (self.root / folder).mkdir(parents=True)
        (self.root / folder / "noop.py").write_text(HANDLER, encoding="utf-8")
        toml = textwrap.dedent(self.toml).replace("FOLDER", folder)
        (self.root / "wisp.toml").write_text(toml, encoding="utf-8")
        quiet_loguru()
        self.app = wisp.Wisp(rootdir=self.root, autoload=False, env={})
        await self._stack.enter_async_context(self.app)
        self.service = self.app.services.get("jobs")
        self.config = self.app.config.section(JobsConfig)
        self.enqueue = functools.partial(self.service.enqueue, "noop")

    async def completed(self) -> int:
        return int((await self.service.backend.counts())["completed"])

    async def drain(self, n: int, concurrency: int) -> tuple[float, int]:
        before = await self.completed()
        worker = Worker(self.app, self.service.backend, self.config, concurrency=concurrency)
        stop = asyncio.Event()
        t0 = perf_counter()
        task = asyncio.create_task(worker.run(stop))
        try:
            await watch(lambda: worker.completed, n, task)
            elapsed = perf_counter() - t0
        finally:
            stop.set()
            await task
        return elapsed, await self.completed() - before

    async def close(self) -> None:
        await self._stack.aclose()


class WispSQLite(WispSystem):
    def __init__(self, base: Path) -> None:
        root = base / "sqlite"
        super().__init__(
            "sqlite",
            root,
            f"""\
            [wisp]
            autoload = false
            plugins = ["storage", "jobs"]
            command_paths = ["FOLDER"]
            [storage]
            url = "sqlite+aiosqlite:///{root / "jobs.sqlite3"}"
            auto_migrate = true
            [jobs]
            poll_seconds = {POLL_SECONDS}
            """,
        )


class WispPostgreSQL(WispSystem):
    def __init__(self, base: Path, url: str, schema: str, concurrency: int) -> None:
        super().__init__(
            "postgresql",
            base / "postgresql",
            f"""\
            [wisp]
            autoload = false
            plugins = ["storage", "jobs"]
            command_paths = ["FOLDER"]
            [storage]
            url = "{url}"
            schema = "{schema}"
            auto_migrate = true
            pool_size = {concurrency}
            max_overflow = 0
            [jobs]
            poll_seconds = {POLL_SECONDS}
            """,
        )
        self.url = url
        self.schema = schema

    async def open(self) -> None:
        await pg_schema(self.url, self.schema, create=True)
        await super().open()

    async def close(self) -> None:
        try:
            await super().close()
        finally:
            await pg_schema(self.url, self.schema, create=False)


class WispRedis(WispSystem):
    def __init__(self, base: Path, url: str, tag: str) -> None:
        self.prefix = tag + "wisp:"
        super().__init__(
            "redis",
            base / "redis",
            f"""\
            [wisp]
            autoload = false
            plugins = ["redis", "jobs"]
            command_paths = ["FOLDER"]
            [redis]
            url = "{url}"
            [jobs]
            backend = "redis"
            redis_prefix = "{self.prefix}"
            poll_seconds = {POLL_SECONDS}
            """,
        )
        self.url = url

    async def close(self) -> None:
        import redis.asyncio

        try:
            await super().close()
        finally:
            client = redis.asyncio.Redis.from_url(self.url)
            try:
                await delete_keys(client, self.prefix + "*")
            finally:
                await client.aclose()


class ArqSystem(System):
    name = "arq"
    store = "redis"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.queue = tag + "arq"
        self.ids = itertools.count()
        self.pool: Any = None

    async def open(self) -> None:
        try:
            import arq.connections
            import arq.worker
        except Exception as exc:
            raise Unavailable(f"cannot import arq ({type(exc).__name__}: {exc})") from exc
        self.worker_class = arq.worker.Worker
        settings = arq.connections.RedisSettings.from_dsn(self.url)
        self.pool = await arq.connections.create_pool(settings, default_queue_name=self.queue)
        enqueue_job, tag, ids = self.pool.enqueue_job, self.tag, self.ids

        async def enqueue() -> Any:
            return await enqueue_job("noop", _job_id=f"{tag}{next(ids)}")

        self.enqueue = enqueue

    async def drain(self, n: int, concurrency: int) -> tuple[float, int]:
        worker = self.worker_class(
            functions=[noop],
            redis_pool=self.pool,
            queue_name=self.queue,
            burst=True,
            max_jobs=concurrency,
            poll_delay=0,
            handle_signals=False,
        )
        t0 = perf_counter()
        await asyncio.wait_for(worker.async_run(), DRAIN_TIMEOUT)
        elapsed = perf_counter() - t0
        left = await self.pool.zcard(self.queue)
        return elapsed, -1 if left or worker.jobs_failed else worker.jobs_complete

    async def close(self) -> None:
        if self.pool is not None:
            try:
                # Its jobs and results (arq:job:<id>, ...), its queue and health-check key.
                await delete_keys(self.pool, f"arq:*{self.tag}*")
                await delete_keys(self.pool, f"{self.queue}*")
            finally:
                await self.pool.aclose()


class SaqSystem(System):
    name = "saq"
    store = "redis"

    def __init__(self, url: str, tag: str) -> None:
        self.url = url
        self.tag = tag
        self.queue: Any = None

    async def open(self) -> None:
        try:
            import saq
        except Exception as exc:
            raise Unavailable(f"cannot import saq ({type(exc).__name__}: {exc})") from exc
        self.worker_class = saq.Worker
        self.queue = saq.Queue.from_url(self.url, name=self.tag + "saq")
        await self.queue.connect()
        self.enqueue = functools.partial(self.queue.enqueue, "noop")

    async def drain(self, n: int, concurrency: int) -> tuple[float, int]:
        queue = self.queue
        base = queue.complete
        worker = self.worker_class(queue, functions=[noop], concurrency=concurrency)
        t0 = perf_counter()
        task = asyncio.create_task(worker.start())
        try:
            await watch(lambda: queue.complete - base, n, task)
            elapsed = perf_counter() - t0
        finally:
            await worker.stop()
            await task
        # A finished job leaves saq's "incomplete" set (its data stays for its ttl).
        unfinished = await queue.count("incomplete")
        return elapsed, -1 if unfinished else queue.complete - base

    async def close(self) -> None:
        if self.queue is not None:
            try:
                await delete_keys(self.queue.redis, f"saq:*{self.tag}*")
            finally:
                await self.queue.disconnect()


class ProcrastinateSystem(System):
    name = "procrastinate"
    store = "postgresql"

    def __init__(self, url: str, schema: str, concurrency: int) -> None:
        self.url = url
        self.schema = schema
        self.pool_size = concurrency
        self.app: Any = None

    async def open(self) -> None:
        try:
            import procrastinate
        except Exception as exc:
            raise Unavailable(f"cannot import procrastinate ({type(exc).__name__}: {exc})") from exc
        await pg_schema(self.url, self.schema, create=True)
        connector = procrastinate.PsycopgConnector(
            conninfo=pg_dsn(self.url),
            max_size=self.pool_size,
            kwargs={"options": f"-c search_path={self.schema}"},
        )
        app = procrastinate.App(connector=connector)

        async def noop_task() -> None:
            return None

        task = app.task(name="noop")(noop_task)
        await app.open_async()
        self.app = app
        await app.schema_manager.apply_schema_async()
        self.enqueue = task.defer_async

    async def succeeded(self) -> int:
        rows = await self.app.connector.execute_query_all_async(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'succeeded'"
        )
        return int(rows[0]["n"])

    async def drain(self, n: int, concurrency: int) -> tuple[float, int]:
        before = await self.succeeded()
        run = self.app.run_worker_async(
            concurrency=concurrency, wait=False, install_signal_handlers=False
        )
        t0 = perf_counter()
        await asyncio.wait_for(run, DRAIN_TIMEOUT)
        elapsed = perf_counter() - t0
        return elapsed, await self.succeeded() - before

    async def close(self) -> None:
        try:
            if self.app is not None:
                await self.app.close_async()
        finally:
            await pg_schema(self.url, self.schema, create=False)


# -- running -------------------------------------------------------------------------


@dataclass
class Result:
    system: System
    samples: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CASES})
    error: str | None = None
    spent: float = 0.0  # seconds of timed repeats so far
    broken: bool = False  # Wisp failed (not: its store is unreachable)


async def enqueue_seq(system: System, n: int) -> float:
    call = system.enqueue
    t0 = perf_counter()
    for _ in range(n):
        await call()
    return perf_counter() - t0


async def enqueue_batched(system: System, n: int, batch: int) -> float:
    call = system.enqueue
    gather = asyncio.gather
    t0 = perf_counter()
    for start in range(0, n, batch):
        await gather(*[call() for _ in range(min(batch, n - start))])
    return perf_counter() - t0


async def one_round(
    system: System, n: int, batch: int, concurrency: int, record: Result | None
) -> None:
    """Enqueue n one by one, drain; enqueue n in batches, drain.  Checked, and
    recorded in jobs/s unless ``record`` is None (warm-up)."""
    for case, enqueue in (
        ("enqueue", lambda: enqueue_seq(system, n)),
        ("enqueue xB", lambda: enqueue_batched(system, n, batch)),
    ):
        gc.collect()
        seconds = await enqueue()
        gc.collect()
        drained, completed = await system.drain(n, concurrency)
        if completed != n:
            raise RuntimeError(
                f"the store counts {completed} jobs completed by this drain, not {n}"
                if completed >= 0
                else "jobs were left unfinished or failed"
            )
        if record is not None:
            record.samples[case].append(n / seconds)
            record.samples["process"].append(n / drained)


def fmt_rate(samples: list[float]) -> str:
    return f"{max(samples):>9,.0f} ({statistics.median(samples):>7,.0f})"


STORES = {
    "sqlite": "SQLite",
    "postgresql": "PostgreSQL",
    "redis": "Redis",
}


@dataclass
class Aim:
    text: str
    met: bool | None  # None: the peer did not run


def report_store(store: str, title: str, results: list[Result], batch: int, conc: int) -> list[Aim]:
    """Print one store's table and ratios; return its aims."""
    here = [r for r in results if r.system.store == store]
    if not here:
        return []
    heads = ["enqueue", f"enqueue x{batch}", f"process c={conc}"]
    print(f"\n{title}: jobs/s, best (median)")
    print(f"  {'system':<15}{'runs':>5}" + "".join(f"{h:>20}" for h in heads))
    for r in here:
        if r.error:
            print(f"  {r.system.name:<20}n/a ({r.error})")
            continue
        cells = "".join(f"{fmt_rate(r.samples[c]):>20}" for c in CASES)
        print(f"  {r.system.name:<15}{len(r.samples['enqueue']):>5}{cells}")
    ours = next((r for r in here if r.system.role == "wisp"), None)
    peers = [r for r in here if r.system.role == "peer"]
    aims: list[Aim] = []
    if ours is None or ours.error:
        if peers:
            print(f"  (no ratios: wisp {'was not selected' if ours is None else 'did not run'})")
    else:
        for peer in peers:
            label = f"wisp / {peer.system.name}"
            if peer.error:
                print(f"  {label:<20}n/a")
                aims.append(
                    Aim(f"{store}: wisp ahead of {peer.system.name} (it did not run)", None)
                )
                continue
            ratios = [max(ours.samples[c]) / max(peer.samples[c]) for c in CASES]
            cells = "".join(
                f"{f'{x:.2f}x ' + ('ahead' if x > 1 else 'BEHIND'):>20}" for x in ratios
            )
            print(f"  {label:<20}{cells}")
            shown = ", ".join(f"{h} {x:.2f}x" for h, x in zip(heads, ratios, strict=True))
            aims.append(
                Aim(f"{store}: wisp ahead of {peer.system.name} ({shown})", min(ratios) > 1)
            )
    if not peers:
        print("  (no peer runs on this store)")
    return aims


def versions() -> str:
    out = []
    for dist in (
        *("wisp-framework", "sqlalchemy", "aiosqlite", "asyncpg", "redis"),
        *("arq", "saq", "procrastinate", "psycopg"),
    ):
        try:
            out.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            out.append(f"{dist} (not installed)")
    return ", ".join(out)


def redacted(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            rest = cred.split(":", 1)[0] + ":***@" + host
    return scheme + sep + rest


def failure(r: Result, exc: BaseException) -> str:
    """The n/a reason; a Wisp failure's traceback is printed too."""
    if isinstance(exc, Unavailable):
        return str(exc)
    if r.system.role == "wisp":
        r.broken = True
        traceback.print_exception(exc)
    return f"failed: {type(exc).__name__}: {exc}".splitlines()[0][:200]


async def unreachable(store: str, args: argparse.Namespace) -> str | None:
    """Why a store cannot be used, or None."""
    try:
        if store == "postgresql":
            await pg_schema(args.database_url, "wispbench_probe_unused", create=False)
        elif store == "redis":
            import redis.asyncio

            client = redis.asyncio.Redis.from_url(args.redis_url)
            try:
                await client.ping()
            finally:
                await client.aclose()
    except Exception as exc:
        url = args.database_url if store == "postgresql" else args.redis_url
        return f"{STORES[store]} at {redacted(url)} unreachable ({type(exc).__name__}: {exc})"
    return None


def make_systems(args: argparse.Namespace, base: Path) -> list[System]:
    tag = f"wispbench{uuid.uuid4().hex[:10]}:"
    schema = f"wispbench_{uuid.uuid4().hex[:10]}"
    conc = args.concurrency
    systems: list[System] = [
        WispSQLite(base),
        WispPostgreSQL(base, args.database_url, schema + "_wisp", conc),
        ProcrastinateSystem(args.database_url, schema + "_procrastinate", conc),
        WispRedis(base, args.redis_url, tag),
        ArqSystem(args.redis_url, tag),
        SaqSystem(args.redis_url, tag),
    ]
    if not args.only:
        return systems
    only = {word.strip() for word in args.only.split(",")}
    return [s for s in systems if {s.name, s.store, f"{s.name}-{s.store}"} & only]


async def run(args: argparse.Namespace) -> None:
    n, batch, conc, budget = args.jobs, args.batch, args.concurrency, args.budget
    started = perf_counter()
    print(f"Python {platform.python_version()} on {platform.machine()}; {versions()}")
    print(
        f"{n:,} no-op jobs per case, up to {args.repeats} repeats (fewer once a system "
        f"has used {budget:g} s); enqueue batches of {batch}; worker concurrency {conc}"
    )
    quiet_peers()
    with tempfile.TemporaryDirectory(prefix="wisp-jobs-bench-") as tmp:
        results = [Result(s) for s in make_systems(args, Path(tmp))]
        down = {store: await unreachable(store, args) for store in STORES}
        opened: list[Result] = []
        try:
            for r in results:
                if down[r.system.store]:
                    r.error = down[r.system.store]
                    continue
                opened.append(r)
                try:
                    await r.system.open()
                    warm = args.warmup
                    await one_round(r.system, warm, min(batch, warm), conc, None)
                except Exception as exc:
                    r.error = failure(r, exc)
            for round_ in range(args.repeats):  # round-robin
                for r in results:
                    if r.error is not None or (round_ and r.spent >= budget):
                        continue
                    t0 = perf_counter()
                    try:
                        await one_round(r.system, n, batch, conc, r)
                    except Exception as exc:
                        r.error = failure(r, exc)
                    r.spent += perf_counter() - t0
        finally:
            for r in reversed(opened):
                try:
                    await r.system.close()
                except Exception as exc:
                    print(f"({r.system.name} on {r.system.store}: cleanup failed: {exc!r})")

    where = {
        "sqlite": "SQLite (a file in a temporary directory; Wisp only)",
        "postgresql": f"PostgreSQL at {redacted(args.database_url)}",
        "redis": f"Redis at {redacted(args.redis_url)}",
    }
    aims: list[Aim] = []
    for store in STORES:
        aims += report_store(store, where[store], results, batch, conc)
    decided = [a for a in aims if a.met is not None]
    print(
        "\nAim, Wisp ahead of each peer on its own store in every case: "
        f"{sum(1 for a in decided if a.met)} of {len(decided)} met"
    )
    for aim in aims:
        mark = "n/a    " if aim.met is None else "met    " if aim.met else "NOT met"
        print(f"  {mark}  {aim.text}")
    print(f"(ran in {perf_counter() - started:.0f} s)")
    wisp_failed = [r for r in results if r.broken]
    if wisp_failed:
        sys.exit(
            "jobs benchmark: "
            + "; ".join(f"wisp on {r.system.store}: {r.error}" for r in wisp_failed)
        )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,000 jobs, fewer repeats")
    parser.add_argument("--jobs", type=int, help="jobs per case (default 5,000; --quick 1,000)")
    parser.add_argument("--repeats", type=int, help="at most (default 3; --quick 2)")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed repeats per system before it stops repeating "
        "(default 20; --quick 4); every system runs at least once",
    )
    parser.add_argument("--batch", type=int, default=100, help="enqueues per gather (100)")
    parser.add_argument("--concurrency", type=int, default=20, help="worker slots (20)")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("WISP_TEST_DATABASE_URL", DEFAULT_DB),
        help=f"default: $WISP_TEST_DATABASE_URL or {DEFAULT_DB}",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("WISP_TEST_REDIS_URL", DEFAULT_REDIS),
        help=f"default: $WISP_TEST_REDIS_URL or {DEFAULT_REDIS}",
    )
    parser.add_argument(
        "--only",
        help="comma-separated: systems (wisp, arq, saq, procrastinate), stores "
        "(sqlite, postgresql, redis) or both (wisp-sqlite)",
    )
    args = parser.parse_args(argv)
    args.jobs = args.jobs or (1_000 if args.quick else 5_000)
    args.repeats = args.repeats or (2 if args.quick else 3)
    args.budget = args.budget if args.budget is not None else (4.0 if args.quick else 20.0)
    args.warmup = max(50, min(500, args.jobs // 10))
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
