"""Shared REST limits: 4 processes on one token against the fake's REST limits.

Part 1, load: a fake Discord in this process enforces Discord's REST limits
(``RestLimits``: a bucket of ``--route-limit`` messages per ``--route-window``
seconds per channel, 50 requests in any second globally, 429s with real
headers).  4 processes, each a ``discord.Client`` logged in with the same
token, send ``--messages`` messages each across ``--channels`` channels, all
at once (every process starts sending when all are ready: a line on stdin).

* ``shared``  - the restlimits plugin's ``SharedRestLimiter`` on Redis, handed
  to discord.py through its public ``http_trace`` option (as the plugin does).
* ``plain``   - plain discord.py: its own per-process limiter only.

Printed side by side: messages sent and failed, 429s the fake sent by scope
(``global``, ``user``), requests the fake saw (retries included), the route
429 rate, wall time and messages/s.  Aim: ``shared`` 0 global 429s and under
1% route 429s.

Part 2, overhead: one process, one task, ``--calls`` sequential
``GET /channels/{id}`` against a fake without limits:

* ``plain``           - discord.py, no trace: the baseline.
* ``empty trace``     - discord.py with an ``aiohttp.TraceConfig`` that does
  nothing: what the hook point itself costs.
* ``shared limiter``  - the limiter's trace: one Lua script per request on the
  path, the answer recorded by a second script off the path (the global
  limit lifted, or 50/s would set the pace).
* ``redis ping``      - one bare ``PING`` round trip, for scale.

Run::

    python benchmarks/scaleout_rest.py [--redis-url URL] [--quick] [--part all|load|overhead]

Redis keys sit under a fresh prefix, deleted at the end.  This script only
reports; it never fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _report import Results, table

TOKEN = "bench-token"


def _limiter(redis: Any, prefix: str, margin: float | None, **more: Any) -> Any:
    from wisp.plugins.restlimits.config import RestLimitsConfig
    from wisp.plugins.restlimits.discordpy import api_base
    from wisp.plugins.restlimits.limiter import SharedRestLimiter

    if margin is not None:
        more["margin"] = margin
    config = RestLimitsConfig(prefix=prefix, **more)
    return SharedRestLimiter(redis, config, api_base)


async def worker(args: argparse.Namespace) -> None:
    """One of the 4 processes: log in, say ready, wait for go, send, report."""
    import discord
    import redis.asyncio as aioredis

    from wisp.plugins.discord.endpoints import endpoints

    channels = [int(c) for c in args.channel_ids.split(",")]
    redis = aioredis.Redis.from_url(args.redis_url)
    limiter = _limiter(redis, args.prefix, args.margin) if args.mode == "shared" else None
    with endpoints(args.api_url):
        kwargs: dict[str, Any] = {}
        if limiter is not None:
            kwargs["http_trace"] = limiter.trace_config()
        client = discord.Client(intents=discord.Intents.none(), **kwargs)
        await client.login(TOKEN)
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        failed = 0

        async def one(i: int) -> None:
            nonlocal failed
            params = discord.http.handle_message_parameters(content=str(i))
            try:
                await client.http.send_message(channels[i % len(channels)], params=params)
            except discord.HTTPException:
                failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.messages)))
        elapsed = time.perf_counter() - started
        if limiter is not None:
            await limiter.drain()
        await client.close()
    await redis.aclose()
    print(json.dumps({"elapsed": elapsed, "failed": failed}), flush=True)


async def load(args: argparse.Namespace, mode: str, prefix: str) -> dict[str, Any]:
    from wisp.plugins.discord.fake import (
        DEFAULT_GUILD_ID,
        FakeChannel,
        FakeDiscord,
        FakeGuild,
        RestLimits,
    )

    channels = [DEFAULT_GUILD_ID + 100 + i for i in range(args.channels)]
    guild = FakeGuild()
    guild.channels.extend(FakeChannel(id=c, name=f"c{i}") for i, c in enumerate(channels))
    limits = RestLimits(route_limit=args.route_limit, route_window=args.route_window)
    async with FakeDiscord([guild], rest_limits=limits) as fake:
        cmd = [
            sys.executable, __file__, "--worker", "--mode", mode, "--api-url", fake.api_base,
            "--redis-url", args.redis_url, "--prefix", prefix, "--messages", str(args.messages),
            "--channel-ids", ",".join(map(str, channels)),
        ]  # fmt: skip
        if args.margin is not None:
            cmd += ["--margin", str(args.margin)]
        procs = [
            await asyncio.create_subprocess_exec(
                *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
            )
            for _ in range(args.processes)
        ]
        for proc in procs:
            assert proc.stdout is not None
            line = await proc.stdout.readline()
            if line.strip() != b"ready":
                raise SystemExit(f"a {mode} worker did not start: {line!r}")
        started = time.perf_counter()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        reports = []
        for proc in procs:
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise SystemExit(f"a {mode} worker failed (exit {proc.returncode})")
            reports.append(json.loads(out.decode().strip().splitlines()[-1]))
        wall = time.perf_counter() - started
        sent = fake.calls_to("POST", r"/channels/\d+/messages")
        ok = sum(1 for c in sent if c.status == 200)
        return {
            "ok": ok,
            "failed": sum(r["failed"] for r in reports),
            "requests": len(sent),
            "global": fake.rest.rejected.get("global", 0),
            "user": fake.rest.rejected.get("user", 0),
            "wall": wall,
        }


def print_load(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    total = args.processes * args.messages
    print(
        f"\nPart 1: {args.processes} processes x {args.messages} messages on {args.channels} "
        f"channels, {args.route_limit} per {args.route_window}s per channel, 50/s global"
    )
    print(
        f"  {'case':<8} {'sent':>6} {'failed':>7} {'requests':>9} {'global 429':>11} "
        f"{'route 429':>10} {'route 429 %':>12} {'wall s':>8} {'msg/s':>7}"
    )
    for mode, r in results.items():
        rate = 100 * r["user"] / max(r["requests"], 1)
        print(
            f"  {mode:<8} {r['ok']:>6}/{total:<3} {r['failed']:>4} {r['requests']:>9} "
            f"{r['global']:>11} {r['user']:>10} {rate:>11.2f}% {r['wall']:>8.2f} "
            f"{r['ok'] / r['wall']:>7.1f}"
        )
    shared = results.get("shared")
    if shared is not None:
        met = shared["global"] == 0 and shared["user"] < 0.01 * max(shared["requests"], 1)
        print(f"  aim (shared: 0 global 429s, route 429s under 1%): {'met' if met else 'NOT met'}")


async def overhead(args: argparse.Namespace, prefix: str) -> Results:
    import aiohttp
    import discord
    import redis.asyncio as aioredis

    from wisp.plugins.discord.fake import DEFAULT_CHANNEL_ID, FakeDiscord, patched_endpoints

    redis = aioredis.Redis.from_url(args.redis_url)
    results: Results = {}
    async with FakeDiscord() as fake:
        with patched_endpoints(fake):
            # The global limit (50/s) would set the pace of sequential calls: lifted.
            limiter = _limiter(redis, prefix, args.margin, global_per_second=1_000_000)
            clients: dict[str, discord.Client] = {
                "plain": discord.Client(intents=discord.Intents.none()),
                "empty trace": discord.Client(
                    intents=discord.Intents.none(), http_trace=aiohttp.TraceConfig()
                ),
                "shared limiter": discord.Client(
                    intents=discord.Intents.none(), http_trace=limiter.trace_config()
                ),
            }
            for client in clients.values():
                await client.login(TOKEN)

            def fetch(client: discord.Client) -> Any:
                async def run(n: int) -> None:
                    for _ in range(n):
                        await client.http.get_channel(DEFAULT_CHANNEL_ID)

                return run

            async def ping(n: int) -> None:
                for _ in range(n):
                    await redis.ping()

            cases = {name: fetch(c) for name, c in clients.items()}
            cases["redis ping"] = ping
            times: dict[str, list[float]] = {name: [] for name in cases}
            for run in cases.values():
                await run(50)  # warm up: connections, bucket learned
            for _ in range(args.repeats):
                for name, run in cases.items():
                    start = time.perf_counter_ns()
                    await run(args.calls)
                    times[name].append((time.perf_counter_ns() - start) / args.calls)
            await limiter.drain()
            for client in clients.values():
                await client.close()
            for name, samples in times.items():
                results[name] = (min(samples), statistics.median(samples), args.calls)
    await redis.aclose()
    return results


async def main(args: argparse.Namespace) -> None:
    import redis.asyncio as aioredis

    prefix = f"wisp:bench:rest:{uuid.uuid4().hex[:8]}:"
    try:
        if args.part in ("all", "load"):
            results = {}
            for mode in ("shared", "plain"):
                results[mode] = await load(args, mode, prefix)
            print_load(results, args)
        if args.part in ("all", "overhead"):
            timings = await overhead(args, prefix + "o:")
            print(f"\nPart 2: per-request cost, {args.calls} sequential GET /channels/{{id}}")
            table(timings, "plain")
            extra = timings["shared limiter"][0] - timings["plain"][0]
            print(f"  the limiter adds {extra / 1000:.0f} us per request (best rounds)")
    finally:
        redis = aioredis.Redis.from_url(args.redis_url)
        keys = [k async for k in redis.scan_iter(match=prefix + "*")]
        if keys:
            await redis.delete(*keys)
        await redis.aclose()


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("WISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    parser.add_argument("--part", choices=("all", "load", "overhead"), default="all")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--route-limit", type=int, default=5)
    parser.add_argument("--route-window", type=float, default=1.0)
    parser.add_argument("--margin", type=float, default=None, help="[restlimits] margin")
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    # The worker processes' own arguments.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--api-url", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", help=argparse.SUPPRESS)
    parser.add_argument("--channel-ids", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.messages, args.calls, args.repeats = 40, 200, 3
    return args


if __name__ == "__main__":
    arguments = parse()
    if arguments.worker:
        import logging

        logging.getLogger("discord").setLevel(logging.ERROR)  # plain mode's 429 warnings
        asyncio.run(worker(arguments))
    else:
        asyncio.run(main(arguments))
