"""What does one rate-limit check cost, in memory and in Redis, against peers?

Memory (every check allowed, one asyncio loop):

* ``bare await``          - ``await noop()``, an ``async def`` returning 0.0.
* ``wisp memory``         - ``await MemoryBackend().hit([("bench", Limit(10**9, 1.0))])``.
* ``aiolimiter``          - ``await AsyncLimiter(10**9, 1).acquire()``.
* ``limits moving``       - limits' ``MovingWindowRateLimiter(MemoryStorage())``, 10**9/s.
* ``limits fixed``        - limits' ``FixedWindowRateLimiter(MemoryStorage())``, 10**9/s.
* ``pyrate-limiter``      - ``await Limiter(Rate(10**9, SECOND)).try_acquire_async("bench")``.

Redis (same client and pool for Wisp and PING):

* ``PING``                - ``await client.ping()``, sequential.
* ``wisp redis``          - ``await RedisBackend(client).hit(...)``, sequential.
* ``PING x50``            - 50 concurrent pings per ``asyncio.gather``, ns per ping.
* ``wisp redis x50``      - 50 concurrent checks per ``asyncio.gather``, ns per check.
* ``limits redis fixed``  - limits' ``FixedWindowRateLimiter`` on its async Redis storage.

Each case has its own timing loop, is warmed up, then repeats run round-robin
with the garbage collector off; the best (minimum) repeat is reported with the
median beside it.  A case whose cost grows with use (limits' in-memory moving
window keeps one list entry per hit) gets fewer iterations, sized from the
warm-up, so the whole run stays short.  This script only reports; it never
fails on timings.

Run::

    python benchmarks/ratelimit.py            # ~20-30 s
    python benchmarks/ratelimit.py --quick    # a few seconds, noisier
    python benchmarks/ratelimit.py --redis-url redis://host:6379/1
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import version

import aiolimiter
import limits
import limits.aio.storage
import limits.aio.strategies
import pyrate_limiter
import redis.asyncio
from _report import table, versus

from wisp.plugins.ratelimit.limits import Limit
from wisp.plugins.ratelimit.memory import MemoryBackend
from wisp.plugins.ratelimit.redisbackend import RedisBackend

perf_counter_ns = time.perf_counter_ns

AIM_BARE = 6.0  # wisp memory vs bare await
AIM_PING = 1.15  # wisp redis vs PING
HUGE = 10**9
CONCURRENCY = 50
# Per repeat, a case runs at most this long (its n is cut down from the warm-up).
BUDGET_MEMORY_NS = 150_000_000
BUDGET_REDIS_NS = 1_000_000_000

Loop = Callable[[int], Awaitable[int]]


# -- memory cases: one loop function each -------------------------------------------


async def noop() -> float:
    return 0.0


def make_memory_cases() -> tuple[dict[str, Loop], dict[str, Callable[[], Awaitable[object]]]]:
    backend = MemoryBackend()
    buckets = [("bench", Limit(HUGE, 1.0, "user"))]
    aio = aiolimiter.AsyncLimiter(HUGE, 1)
    item = limits.RateLimitItemPerSecond(HUGE)
    moving = limits.aio.strategies.MovingWindowRateLimiter(limits.aio.storage.MemoryStorage())
    fixed = limits.aio.strategies.FixedWindowRateLimiter(limits.aio.storage.MemoryStorage())
    pyrate = pyrate_limiter.Limiter(pyrate_limiter.Rate(HUGE, pyrate_limiter.Duration.SECOND))

    async def bare(n: int) -> int:
        t0 = perf_counter_ns()
        for _ in range(n):
            await noop()
        return perf_counter_ns() - t0

    async def wisp_memory(n: int) -> int:
        hit = backend.hit
        t0 = perf_counter_ns()
        for _ in range(n):
            await hit(buckets)
        return perf_counter_ns() - t0

    async def aiolimiter_case(n: int) -> int:
        acquire = aio.acquire
        t0 = perf_counter_ns()
        for _ in range(n):
            await acquire()
        return perf_counter_ns() - t0

    async def limits_moving(n: int) -> int:
        hit = moving.hit
        t0 = perf_counter_ns()
        for _ in range(n):
            await hit(item, "bench")
        return perf_counter_ns() - t0

    async def limits_fixed(n: int) -> int:
        hit = fixed.hit
        t0 = perf_counter_ns()
        for _ in range(n):
            await hit(item, "bench")
        return perf_counter_ns() - t0

    async def pyrate_case(n: int) -> int:
        acquire = pyrate.try_acquire_async
        t0 = perf_counter_ns()
        for _ in range(n):
            await acquire("bench")
        return perf_counter_ns() - t0

    loops: dict[str, Loop] = {
        "bare await": bare,
        "wisp memory": wisp_memory,
        "aiolimiter": aiolimiter_case,
        "limits moving": limits_moving,
        "limits fixed": limits_fixed,
        "pyrate-limiter": pyrate_case,
    }
    # One call each, to check before timing that every check is allowed.
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "bare await": noop,
        "wisp memory": lambda: backend.hit(buckets),
        "aiolimiter": aio.acquire,
        "limits moving": lambda: moving.hit(item, "bench"),
        "limits fixed": lambda: fixed.hit(item, "bench"),
        "pyrate-limiter": lambda: pyrate.try_acquire_async("bench"),
    }
    return loops, checks


# -- redis cases ---------------------------------------------------------------------


def make_redis_cases(
    client: redis.asyncio.Redis, prefix: str, limits_url: str
) -> tuple[dict[str, Loop], dict[str, Callable[[], Awaitable[object]]]]:
    backend = RedisBackend(client, prefix=prefix + "wisp:")
    buckets = [("bench", Limit(HUGE, 1.0, "user"))]
    storage = limits.aio.storage.RedisStorage(limits_url, key_prefix=prefix + "limits")
    fixed = limits.aio.strategies.FixedWindowRateLimiter(storage)
    item = limits.RateLimitItemPerSecond(HUGE)
    batch = range(CONCURRENCY)

    async def ping(n: int) -> int:
        p = client.ping
        t0 = perf_counter_ns()
        for _ in range(n):
            await p()
        return perf_counter_ns() - t0

    async def wisp_redis(n: int) -> int:
        hit = backend.hit
        t0 = perf_counter_ns()
        for _ in range(n):
            await hit(buckets)
        return perf_counter_ns() - t0

    # Concurrent cases: n checks as n // 50 gathers of 50.
    async def ping_x50(n: int) -> int:
        p = client.ping
        gather = asyncio.gather
        t0 = perf_counter_ns()
        for _ in range(n // CONCURRENCY):
            await gather(*[p() for _ in batch])
        return perf_counter_ns() - t0

    async def wisp_redis_x50(n: int) -> int:
        hit = backend.hit
        gather = asyncio.gather
        t0 = perf_counter_ns()
        for _ in range(n // CONCURRENCY):
            await gather(*[hit(buckets) for _ in batch])
        return perf_counter_ns() - t0

    async def limits_redis_fixed(n: int) -> int:
        hit = fixed.hit
        t0 = perf_counter_ns()
        for _ in range(n):
            await hit(item, "bench")
        return perf_counter_ns() - t0

    loops: dict[str, Loop] = {
        "PING": ping,
        "wisp redis": wisp_redis,
        "PING x50": ping_x50,
        "wisp redis x50": wisp_redis_x50,
        "limits redis fixed": limits_redis_fixed,
    }
    checks: dict[str, Callable[[], Awaitable[object]]] = {
        "PING": client.ping,
        "wisp redis": lambda: backend.hit(buckets),
        "limits redis fixed": lambda: fixed.hit(item, "bench"),
    }
    return loops, checks


# -- timing --------------------------------------------------------------------------


async def check_allowed(checks: dict[str, Callable[[], Awaitable[object]]]) -> None:
    for name, call in checks.items():
        result = await call()
        if name.startswith("wisp") or name == "bare await":
            ok = result == 0.0  # Wisp returns 0.0 or the seconds to wait
        elif name == "aiolimiter":
            ok = result is None  # acquire() returns None once it has capacity
        else:
            ok = result is True
        if not ok:
            sys.exit(f"ratelimit benchmark: {name} did not allow the check (got {result!r})")


async def measure(
    loops: dict[str, Loop], n: int, repeats: int, warmup: int, budget_ns: int, step: int = 1
) -> dict[str, tuple[float, float, int]]:
    """Best and median ns per check, and the n used, for each case."""
    sizes: dict[str, int] = {}
    for name, loop in loops.items():
        w = max(step, warmup // step * step)
        elapsed = await loop(w)
        per = max(elapsed / w, 1.0)
        sized = min(n, max(step * 10, int(budget_ns / per)))
        sizes[name] = max(step, sized // step * step)
    samples: dict[str, list[float]] = {name: [] for name in loops}
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, loop in loops.items():
                samples[name].append(await loop(sizes[name]) / sizes[name])
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: (min(s), statistics.median(s), sizes[name]) for name, s in samples.items()}


async def run(url: str, n_mem: int, n_redis: int, repeats: int) -> None:
    print(
        f"Python {platform.python_version()} on {platform.machine()}; "
        f"aiolimiter {version('aiolimiter')}, limits {version('limits')}, "
        f"pyrate-limiter {version('pyrate-limiter')}, redis {version('redis')}, "
        f"coredis {version('coredis')}"
    )

    # 1. memory
    loops, checks = make_memory_cases()
    await check_allowed(checks)
    mem = await measure(
        loops, n_mem, repeats, warmup=max(1000, n_mem // 10), budget_ns=BUDGET_MEMORY_NS
    )
    print(f"\nMemory backends, best of {repeats} (ns per check, every check allowed):")
    table(mem, "bare await", unit="ns/check")
    bare_ratio = mem["wisp memory"][0] / mem["bare await"][0]
    peers = ["aiolimiter", "limits moving", "limits fixed", "pyrate-limiter"]
    ahead = versus(mem, "wisp memory", peers)
    print(
        f"  aim: wisp memory <= {AIM_BARE:g}x bare await: {bare_ratio:.2f}x "
        f"-> {'met' if bare_ratio <= AIM_BARE else 'NOT met'}; "
        f"faster than every peer -> {'met' if ahead else 'NOT met'}"
    )

    # 2. redis
    prefix = f"wispbench:{uuid.uuid4().hex[:12]}:"
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=CONCURRENCY)
    client = redis.asyncio.Redis.from_pool(pool)
    limits_url = "async+" + url if url.startswith(("redis://", "rediss://")) else url
    try:
        try:
            await client.ping()
        except (redis.exceptions.ConnectionError, OSError) as exc:
            print(f"\nRedis at {url} unreachable ({exc}); Redis cases skipped.")
            return
        loops, checks = make_redis_cases(client, prefix, limits_url)
        await check_allowed(checks)
        # Fill the pool to 50 connections before timing.
        await asyncio.gather(*[client.ping() for _ in range(CONCURRENCY)])
        rds = await measure(
            loops,
            n_redis,
            repeats,
            warmup=max(500, n_redis // 5),
            budget_ns=BUDGET_REDIS_NS,
            step=CONCURRENCY,
        )
        print(f"\nRedis backends at {url}, best of {repeats} (ns per check):")
        table(rds, "PING", unit="ns/check")
        seq = rds["wisp redis"][0] / rds["PING"][0]
        conc = rds["wisp redis x50"][0] / rds["PING x50"][0]
        print(f"  wisp redis x50 / PING x50 = {conc:.2f}x")
        ahead = versus(rds, "wisp redis", ["limits redis fixed"])
        print(
            f"  aim: wisp redis <= {AIM_PING:g}x PING: {seq:.2f}x sequential, "
            f"{conc:.2f}x with {CONCURRENCY} concurrent "
            f"-> {'met' if max(seq, conc) <= AIM_PING else 'NOT met'}; "
            f"ahead of limits -> {'met' if ahead else 'NOT met'}"
        )
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
        await pool.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations, noisier")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("WISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="default: $WISP_TEST_REDIS_URL or redis://127.0.0.1:6379/0",
    )
    args = parser.parse_args(argv)
    if args.quick:
        n_mem, n_redis, repeats = 20_000, 1_000, 3
    else:
        n_mem, n_redis, repeats = 100_000, 5_000, 5
    asyncio.run(run(args.redis_url, n_mem, n_redis, repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
