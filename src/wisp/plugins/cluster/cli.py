"""``wisp cluster status|query|reshard``: look at and change the shard cluster."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
from typing import Any

import wisp
from wisp.plugins.cluster.config import ClusterConfig
from wisp.plugins.cluster.leases import Keys

__all__ = ["COMMANDS", "scatter_gather"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser(
        "status", help="generations, ranges, owners, shard latencies and lease expiries"
    )
    s.add_argument("--json", action="store_true", help="print JSON")
    q = sub.add_parser("query", help="ask every gateway process a registered admin query")
    q.add_argument("name", metavar="NAME", help="the query's name (guild-count, shard-status, ...)")
    q.add_argument("--json", action="store_true", help="print one JSON object per answer")
    r = sub.add_parser("reshard", help="write a pending generation with another shard count")
    r.add_argument("--shard-count", type=int, required=True, metavar="N", help="total shards")
    r.add_argument("--range-size", type=int, metavar="R", help="shards per process")
    r.add_argument("--max-concurrency", type=int, metavar="M", help="IDENTIFY buckets")


def _fail(message: str, code: int = 2) -> int:
    print(f"wisp cluster: {message}", file=sys.stderr)
    return code


def _redis(app: wisp.Wisp) -> Any:
    return app.services.get("redis").client if "redis" in app.services else None


async def scatter_gather(
    redis: Any, keys: Keys, name: str, timeout: float
) -> tuple[int, list[dict[str, Any]]]:
    """Publish query ``name``; gather one answer per process that received it.
    Returns how many received it and the answers that came in time."""
    request_id = secrets.token_hex(8)
    pubsub = redis.pubsub()
    await pubsub.subscribe(keys.reply(request_id))
    loop = asyncio.get_running_loop()
    try:
        receivers = int(
            await redis.publish(keys.queries(), json.dumps({"id": request_id, "name": name}))
        )
        answers: list[dict[str, Any]] = []
        deadline = loop.time() + timeout
        while len(answers) < receivers and (left := deadline - loop.time()) > 0:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=min(left, 1.0)
            )
            if message is not None and message.get("type") == "message":
                answers.append(json.loads(message["data"]))
    finally:
        await pubsub.unsubscribe()
        await pubsub.aclose()
    return receivers, answers


async def _query(app: wisp.Wisp, args: argparse.Namespace, config: ClusterConfig) -> int:
    from wisp.plugins.cluster.service import collect_queries

    known = collect_queries(app)
    if args.name not in known:
        return _fail(
            f"unknown query {args.name!r}; registered: {', '.join(sorted(known)) or 'none'} "
            "(plugins add queries with wisp_cluster_queries)"
        )
    redis = _redis(app)
    if redis is None:
        return _fail("admin queries travel over Redis: set [redis] url")
    receivers, answers = await scatter_gather(
        redis, Keys(config.prefix), args.name, config.query_timeout
    )
    for answer in sorted(answers, key=lambda a: (a.get("range") or "~", a.get("process", ""))):
        if args.json:
            print(json.dumps(answer, sort_keys=True))
        else:
            where = f"{answer.get('process')} (shards {answer.get('range') or 'standby'})"
            shown = answer.get("result") if answer.get("ok") else f"error: {answer.get('error')}"
            print(f"{where}: {json.dumps(shown, sort_keys=True)}")
    if len(answers) < receivers:
        return _fail(f"{receivers - len(answers)} of {receivers} process(es) did not answer "
                     f"within {config.query_timeout}s", 1)  # fmt: skip
    if receivers == 0:
        print("no gateway process is listening", file=sys.stderr)
    return 0 if all(a.get("ok") for a in answers) else 1


async def _status(app: wisp.Wisp, args: argparse.Namespace, config: ClusterConfig) -> int:
    from wisp.plugins.cluster.service import process_records

    db = app.services.get("db")
    from wisp.plugins.cluster.plan import all_plans

    plans = await all_plans(db)
    keys = Keys(config.prefix)
    redis = _redis(app)
    leases: dict[str, tuple[dict[str, Any], int]] = {}
    records: list[dict[str, Any]] = []
    today = None
    if redis is not None:
        async for key in redis.scan_iter(match=keys.leases(), count=200):
            raw, ttl = await redis.get(key), await redis.pttl(key)
            if raw is not None:
                leases[key.decode() if isinstance(key, bytes) else key] = (json.loads(raw), ttl)
        records = await process_records(redis, keys)
        import time

        today = await redis.get(keys.identifies(time.strftime("%Y-%m-%d", time.gmtime())))
    report = {
        "generations": [p.as_dict() for p in plans],
        "leases": {
            key: {**value, "expires_in": round(ttl / 1000, 1)}
            for key, (value, ttl) in sorted(leases.items())
        },
        "processes": sorted(records, key=lambda r: (r["generation"], r.get("range") or "~")),
        "identifies_today": int(today) if today is not None else None,
    }
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    if not plans:
        print("no shard plan yet: `wisp run` with [cluster] writes generation 1")
    for plan in plans:
        print(plan.describe())
        if plan.state == "retired":
            continue
        live = [r for r in records if r["generation"] == plan.generation]
        for first, last in plan.ranges():
            lease = leases.get(keys.lease(plan.generation, first, last))
            owner = next((r for r in live if r.get("range") == f"{first}-{last}"), None)
            held = f"{lease[0]['owner']}, lease {lease[1] / 1000:.1f}s" if lease else "no lease"
            print(f"  {first}-{last}: {held}")
            if owner is not None:
                for shard, state in sorted(owner["shards"].items(), key=lambda i: int(i[0])):
                    ready = "READY" if state["ready"] else "not ready"
                    latency = state.get("latency_ms")
                    shown = f", {latency:.0f}ms" if latency is not None else ""
                    print(f"    shard {shard}: {ready}{shown}")
        for record in live:
            if record.get("standby"):
                print(f"  standby: {record['owner']}")
            elif record.get("range") not in {f"{a}-{b}" for a, b in plan.ranges()}:
                print(f"  shards {record['range']}: {record['owner']} (static)")
    if redis is None:
        print("(no [redis] url: leases, owners and shard states are not shared)")
    elif today is not None:
        print(f"IDENTIFYs today (UTC): {int(today)}")
    return 0


async def _reshard(app: wisp.Wisp, args: argparse.Namespace, config: ClusterConfig) -> int:
    from wisp.plugins.cluster.plan import PlanError, create_pending, get_plan

    db = app.services.get("db")
    for name in ("shard_count", "range_size", "max_concurrency"):
        value = getattr(args, name)
        if value is not None and value < 1:
            return _fail(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    active = await get_plan(db)
    if active is None:
        return _fail("no active shard generation yet: start `wisp run` with [cluster] first")
    count = args.shard_count
    size = min(args.range_size or config.range_size or active.range_size, count)
    concurrency = args.max_concurrency or active.max_concurrency
    try:
        plan = await create_pending(db, count, size, concurrency)
    except PlanError as exc:
        return _fail(str(exc))
    print(plan.describe())
    print(
        f"start its processes beside the running ones with `wisp run --generation "
        f"{plan.generation}`; once all {count} shards are READY it becomes active and "
        f"generation {active.generation} drains"
    )
    return 0


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    if "db" not in app.services:
        return _fail("the shard plan lives in the database: the storage plugin is not loaded")
    config: ClusterConfig = app.config.section(ClusterConfig)
    if args.action == "query":
        return await _query(app, args, config)
    if args.action == "reshard":
        return await _reshard(app, args, config)
    return await _status(app, args, config)


COMMANDS = [
    wisp.CliCommand("cluster", "the shard cluster: status, query, reshard", _run, _args, start=True)
]
