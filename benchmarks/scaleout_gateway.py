"""Scale-out gateway: 4 processes x 4 shards bringing 16 shards up, and a takeover.

One FakeDiscord in this process enforces IDENTIFY buckets as Discord does
(``max_concurrency`` 4, so bucket ``shard_id % 4``; a second IDENTIFY in one
bucket within 5 s gets op 9 Invalid Session and the shard must IDENTIFY
again).  Four real ``wisp run`` processes connect to it, each running 4 of
the 16 shards:

* ``redis bucket lock``  - the cluster plugin: dynamic ranges of 4 (Redis
  leases), a plan in PostgreSQL, and its ``before_identify_hook`` holding one
  Redis key per bucket for the window (``SET NX PX``).
* ``discord.py default`` - the bare baseline: the same bot, the cluster plugin
  blocked, each process an ``AutoShardedBot`` with ``[discord] shard_count =
  16`` and its own ``shard_ids``: discord.py's default hook sleeps 5 s
  between its own shards and knows nothing of the other processes.

Printed for each: IDENTIFYs sent, IDENTIFYs rejected (op 9), processes
restarted (one that exits is started again, as a supervisor would: the
discord plugin gives up on shards not READY within 60 s), and seconds from the
first IDENTIFY to all 16 shards READY (connected sessions at the fake), with
the ratio to the Redis lock.  Then, on the Redis cluster: a standby
process waits, one owner is SIGKILLed (lease TTL ``--ttl``), and the seconds
from the kill to the standby's 4 shards READY are printed beside the TTL.

Run::

    python benchmarks/scaleout_gateway.py [--redis-url URL] [--database-url URL]
                                          [--window 5] [--ttl 5] [--cap 240]

PostgreSQL uses a fresh schema, dropped at the end; Redis keys sit under a
fresh prefix, deleted at the end.  It only reports; it never fails on timings.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path
from typing import Any

from wisp.plugins.discord.fake import FakeDiscord

WISP = str(Path(sys.executable).parent / "wisp")


def _toml(fake: FakeDiscord, db: str, schema: str, redis: str, prefix: str, body: str) -> str:
    plugins = ["storage", "redis", "discord"] + (["cluster"] if "[cluster]" in body else [])
    return textwrap.dedent(f"""
        [wisp]
        autoload = false
        log_level = "WARNING"
        plugins = {json.dumps(plugins)}
        [storage]
        url = "{db}"
        schema = "{schema}"
        [redis]
        url = "{redis}"
        [discord]
        token = "bench"
        api_url = "{fake.api_base}"
        gateway_url = "{fake.gateway_url}"
        intents = ["guilds"]
        """) + textwrap.dedent(body).replace("PREFIX", prefix)


async def _spawn(root: Path, *args: str, env: dict[str, str] | None = None) -> Any:
    log = (root / f"{uuid.uuid4().hex[:6]}.log").open("wb")
    base = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    return await asyncio.create_subprocess_exec(
        WISP, "--rootdir", str(root), *args,
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env={**base, **(env or {})},
    )  # fmt: skip


async def _until_all_up(
    fake: FakeDiscord, shards: int, cap: float, procs: list[Any], argv: list[list[str]], root: Path
) -> tuple[float | None, float, int]:
    """Seconds from the first IDENTIFY the fake received to every shard connected,
    restarting any process that exits, as a supervisor would (the restarts are
    counted: the discord plugin gives up when its shards are not READY in 60 s)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    first: float | None = None
    restarts = 0
    while loop.time() - start < cap:
        for i, proc in enumerate(procs):
            if proc.returncode is not None:
                procs[i] = await _spawn(root, *argv[i])
                restarts += 1
        if first is None and any(p.get("op") == 2 for p in fake.received):
            first = loop.time()
        if len(set(fake.shards_connected)) >= shards and first is not None:
            return loop.time() - first, loop.time() - start, restarts
        await asyncio.sleep(0.05)
    return None, loop.time() - start, restarts


async def _stop(procs: list[Any]) -> None:
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def _migrate(root: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        WISP, "--rootdir", str(root), "migrate", stdout=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("WISP_")},
    )  # fmt: skip
    await proc.wait()


async def run_case(
    name: str, args: argparse.Namespace, schema: str, prefix: str, redis_lock: bool
) -> dict[str, Any]:
    fake = FakeDiscord(
        recommended_shards=16,
        max_concurrency=4,
        enforce_identify_buckets=True,
        identify_window=args.window,
    )
    procs: list[Any] = []
    result: dict[str, Any] = {"case": name}
    async with fake:
        root = Path(tempfile.mkdtemp(prefix="wisp-scaleout-"))
        if redis_lock:
            body = f"""
                [cluster]
                prefix = "PREFIX"
                shard_count = 16
                range_size = 4
                identify_window = {args.window}
                lease_ttl = {args.ttl}
                standby_poll = 0.2
                heartbeat_seconds = 0.5
                """
        else:
            body = ""  # the cluster plugin not loaded: discord.py's own hook
        (root / "wisp.toml").write_text(
            _toml(fake, args.database_url, schema, args.redis_url, prefix, body)
        )
        await _migrate(root)
        try:
            argv: list[list[str]] = []
            for n in range(4):
                if redis_lock:
                    argv.append(["run"])
                else:
                    # Each process its own file: the same bot with [discord] shard_ids.
                    ids = list(range(4 * n, 4 * n + 4))
                    own = root / f"wisp-{n}.toml"
                    own.write_text(
                        (root / "wisp.toml")
                        .read_text()
                        .replace("[discord]\n", f"[discord]\nshard_count = 16\nshard_ids = {ids}\n")
                    )
                    argv.append(["-c", str(own), "run"])
            for a in argv:
                procs.append(await _spawn(root, *a))
            up, total, restarts = await _until_all_up(fake, 16, args.cap, procs, argv, root)
            result.update(
                identifies=len(fake.identifies) + len(fake.identify_rejections),
                rejected=len(fake.identify_rejections),
                seconds=up,
                seconds_from_spawn=total,
                restarts=restarts,
            )
            if redis_lock and up is not None:
                result["takeover"] = await _takeover(fake, root, procs, args)
        finally:
            await _stop(procs)
    return result


async def _takeover(
    fake: FakeDiscord, root: Path, procs: list[Any], args: argparse.Namespace
) -> Any:
    import redis.asyncio as aioredis

    standby = await _spawn(root, "run")
    procs.append(standby)
    client = aioredis.Redis.from_url(args.redis_url)
    loop = asyncio.get_running_loop()
    try:
        config = (root / "wisp.toml").read_text()
        prefix = config.split('prefix = "', 1)[1].split('"', 1)[0]

        async def records() -> list[dict[str, Any]]:
            keys = [k async for k in client.scan_iter(match=f"{prefix}proc:*")]
            return [json.loads(r) for r in await client.mget(keys) if r] if keys else []

        for _ in range(int(args.cap * 10)):  # until the standby is waiting
            if any(r["pid"] == standby.pid and r["standby"] for r in await records()):
                break
            await asyncio.sleep(0.1)
        victim = procs[0]
        victim_range = next(r["range"] for r in await records() if r["pid"] == victim.pid)
        victim.send_signal(signal.SIGKILL)
        killed = loop.time()
        await victim.wait()
        while loop.time() - killed < args.cap:
            mine = [r for r in await records() if r["pid"] == standby.pid]
            took = mine and mine[0]["range"] == victim_range
            if took and all(s["ready"] for s in mine[0]["shards"].values()):
                return loop.time() - killed
            await asyncio.sleep(0.05)
        return None
    finally:
        await client.aclose()


async def main(args: argparse.Namespace) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    pg = await asyncpg.connect(args.database_url.replace("postgresql+asyncpg://", "postgresql://"))
    await pg.execute(f"CREATE SCHEMA {schema}")
    prefix = f"wisp:bench:{uuid.uuid4().hex[:8]}:"
    results = []
    try:
        results.append(await run_case("redis bucket lock", args, schema, prefix, True))
        await pg.execute(f"DROP SCHEMA {schema} CASCADE")
        await pg.execute(f"CREATE SCHEMA {schema}")
        results.append(await run_case("discord.py default", args, schema, prefix, False))
    finally:
        await pg.execute(f"DROP SCHEMA {schema} CASCADE")
        await pg.close()
        client = aioredis.Redis.from_url(args.redis_url)
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()

    print(
        f"4 processes x 4 shards, max concurrency 4, {args.window:g} s IDENTIFY window "
        "(buckets enforced by the fake)"
    )
    print(
        f"  {'case':<20} {'IDENTIFYs':>9} {'rejected':>9} {'restarts':>9} "
        f"{'s to READY':>11} {'vs redis':>9}"
    )
    base = results[0]["seconds"]
    for r in results:
        secs = r["seconds"]
        shown = f"{secs:11.1f}" if secs is not None else f"{'>' + str(args.cap):>11}"
        ratio = f"{secs / base:8.2f}x" if secs is not None and base else f"{'-':>9}"
        print(
            f"  {r['case']:<20} {r['identifies']:>9} {r['rejected']:>9} {r['restarts']:>9} "
            f"{shown} {ratio}"
        )
    takeover = results[0].get("takeover")
    if takeover is not None:
        print(
            f"SIGKILL takeover: the standby's 4 shards READY {takeover:.1f} s after the kill "
            f"(lease TTL {args.ttl:g} s; {takeover - args.ttl:+.1f} s beyond it)"
        )
    else:
        print(
            "SIGKILL takeover: not measured (the cluster did not come up or the standby never did)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("WISP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    )
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "WISP_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument("--window", type=float, default=5.0, help="IDENTIFY window, seconds")
    parser.add_argument("--ttl", type=float, default=5.0, help="range lease TTL, seconds")
    parser.add_argument("--cap", type=float, default=240.0, help="give up after, seconds")
    asyncio.run(main(parser.parse_args()))
