"""The ``cluster`` service: which shards this process runs, and its part in the cluster.

At start it reads Discord's ``GET /gateway/bot``, reads (or writes, first
writer wins) the shard plan in SQL, takes a range lease in Redis (waiting as
a standby when every range is taken), and refuses to start when the day's
session-start budget could not cover its shards.  While running it renews
the lease (losing it stops the shards at once: fencing), heartbeats its shard
states into Redis, flips a pending generation active once all its shards are
READY, drains when its own generation is replaced, paces IDENTIFYs through one
Redis key per bucket, de-duplicates events while two generations overlap, and
answers registered admin queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import attrs
from loguru import logger

import wisp
from wisp.plugins.cluster.api import ClusterError
from wisp.plugins.cluster.config import ClusterConfig, parse_range
from wisp.plugins.cluster.dedup import event_digest
from wisp.plugins.cluster.gateway import GatewayInfo, fetch_gateway_bot
from wisp.plugins.cluster.leases import Keys, Lease, acquire, hold_bucket, release, renew
from wisp.plugins.cluster.plan import Plan, all_plans, ensure_first, flip, get_plan, retire
from wisp.plugins.metrics.api import metrics_of

__all__ = ["ClusterService", "QueryFn", "RunOptions", "StandbyStopped", "collect_queries"]

QueryFn = Callable[[wisp.Wisp], Awaitable[Any]]


class StandbyStopped(Exception):
    """SIGTERM (or SIGINT) arrived while this process waited for a range."""


@attrs.define
class RunOptions:
    """What ``wisp run`` was told (``--shards``, ``--shard-count``, ``--generation``)
    and the event that stops the run (set by signals, fencing and draining)."""

    shards: str | None
    shard_count: int | None
    generation: int | None
    stop: asyncio.Event


def collect_queries(app: wisp.Wisp) -> dict[str, QueryFn]:
    """Every ``wisp_cluster_queries`` name; one name from two plugins is an error."""
    found: dict[str, QueryFn] = {}
    owners: dict[str, str] = {}
    for plugin, result in app.pluginmanager.results("wisp_cluster_queries", app=app):
        for name, fn in dict(result).items():
            if name in owners:
                raise wisp.PluginError(
                    f"plugins {owners[name]!r} and {plugin!r} both register the cluster "
                    f"query {name!r}"
                )
            if not callable(fn):
                raise wisp.PluginError(
                    f"plugin {plugin!r} registers the cluster query {name!r} as {fn!r}, "
                    "not an async function (app) -> JSON"
                )
            owners[name] = plugin
            found[name] = fn
    return found


def _json_float(value: float | None) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, 2)


class ClusterService(wisp.BaseService):
    """One gateway process's view of the cluster: its plan, range, lease and shards."""

    name = "cluster"
    requires: Sequence[str] = ("db", "migrations")
    #: Redis, when configured, must be up first (leases, buckets, heartbeats).
    after = ("redis",)

    def __init__(self, app: wisp.Wisp, config: ClusterConfig, options: RunOptions) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.options = options
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.keys = Keys(config.prefix)
        self.redis: Any = None
        self.db: Any = None
        self.plan: Plan | None = None
        self.range: tuple[int, int] | None = None
        self.shards: list[int] = []
        self.lease: Lease | None = None
        self.lease_valid_until = 0.0
        #: Shards whose session is READY (or RESUMED) and not disconnected since.
        self.ready_shards: set[int] = set()
        self.identifies = 0
        #: Shards that IDENTIFYed again: their session was invalidated (op 9) or
        #: could not resume.  discord.py only re-identifies for those reasons.
        self.invalid_sessions = 0
        #: Events dropped because a process of the other generation handled them.
        self.duplicates = 0
        self.client: Any = None
        #: True while a pending or draining generation runs beside the active one.
        self.overlap = False
        self.fenced = False
        #: ``wisp run``'s exit code: 1 after losing the lease, else 0.
        self.exit_code = 0
        self.queries: dict[str, QueryFn] = {}
        self._identified: set[int] = set()
        self._local_buckets: dict[int, float] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._answers: set[asyncio.Task[Any]] = set()

    # -- start-up ------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self.plan.generation if self.plan is not None else 0

    def _describe_range(self) -> str:
        if self.range is None or self.plan is None:
            return "no shards"
        first, last = self.range
        return f"shards {first}-{last} of {self.plan.shard_count} (generation {self.generation})"

    def _static_range(self) -> tuple[int, int] | None:
        text = self.options.shards or self.config.shards
        if text is None:
            return None
        try:
            return parse_range(text, "--shards" if self.options.shards else "[cluster] shards")
        except ValueError as exc:
            raise ClusterError(str(exc)) from None

    def _ordinal(self) -> tuple[int, str] | None:
        """This process's range number and where it came from, if it has one."""
        if self.config.ordinal is not None:
            return self.config.ordinal, "[cluster] ordinal"
        name = self.config.ordinal_env
        if not name:
            return None
        value = self.app.env.get(name)
        if value is None:
            raise ClusterError(
                f"[cluster] ordinal_env = {name!r}, but ${name} is not set (a StatefulSet pod "
                "name like bot-2 gives ordinal 2)"
            )
        match = re.search(r"(\d+)$", value)
        if match is None:
            raise ClusterError(
                f"${name} = {value!r} does not end with an ordinal (like bot-2), "
                "which [cluster] ordinal_env asks for"
            )
        return int(match.group(1)), f"${name}={value}"

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # the query listener, a lease taken: nothing left behind
            raise

    async def _start(self) -> None:
        self.db = self.app.services.get("db")
        if "redis" in self.app.services:
            self.redis = self.app.services.get("redis").client
        self.queries = collect_queries(self.app)
        static = self._static_range()
        ordinal = self._ordinal()
        gateway = await self._gateway()
        self.plan = plan = await self._plan(gateway, static)
        candidates = self._candidates(plan, static, ordinal)
        if self.db.dialect == "sqlite" and (
            len(plan.ranges()) > 1 or candidates != [(0, plan.shard_count - 1)]
        ):
            raise ClusterError(
                f"storage is SQLite ({self.db.display_url}), which only one process can use, "
                f"but {plan.describe()} means several processes: set [storage] url to a "
                "PostgreSQL database (postgresql+asyncpg://...), or run every shard in one "
                "process (range_size = shard_count)"
            )
        if self.redis is None and len(candidates) > 1:
            raise ClusterError(
                f"{plan.describe()}: processes take ranges through Redis leases, and there "
                "is no [redis] url; set one, or give this process its shards (--shards 0-3, "
                "[cluster] shards or ordinal)"
            )
        waited = False
        if self.redis is not None:
            self._spawn(self._serve_queries(), "wisp-cluster-queries")
            waited = await self._take_lease(candidates)
        else:
            self.range = candidates[0]
        first, last = self.range or candidates[0]
        self.shards = list(range(first, last + 1))
        if waited:  # the budget may have moved while this process stood by
            gateway = await self._gateway()
        self._check_budget(gateway)
        if self.redis is not None:
            self._spawn(self._renew_loop(), "wisp-cluster-lease")
        self._spawn(self._heartbeat_loop(), "wisp-cluster-heartbeat")
        logger.info(
            "cluster: this process runs {} as {} ({})",
            self._describe_range(),
            self.owner,
            "lease in Redis" if self.lease is not None else "no Redis: no lease",
        )
        await super().start()

    async def _gateway(self) -> GatewayInfo:
        discord = self.app.config.section("discord")
        if not discord.token:
            raise ClusterError("no Discord token: set [discord] token or DISCORD_TOKEN")
        return await fetch_gateway_bot(discord.api_url, discord.token)

    async def _plan(self, gateway: GatewayInfo, static: tuple[int, int] | None) -> Plan:
        fixed = self.options.shard_count or self.config.shard_count
        where = "--shard-count" if self.options.shard_count else "[cluster] shard_count"
        generation = self.options.generation or self.config.generation
        if generation is not None:
            plan = await get_plan(self.db, generation)
            if plan is None:
                raise ClusterError(
                    f"generation {generation} does not exist (see `wisp cluster status`; "
                    "`wisp cluster reshard` makes a new one)"
                )
            if plan.state not in ("pending", "active"):
                raise ClusterError(
                    f"generation {generation} is {plan.state}: processes join the active "
                    "generation or a pending one"
                )
        else:
            count = fixed or gateway.shards
            if static is not None:
                size = self.config.range_size or static[1] - static[0] + 1
            else:
                size = self.config.range_size or count
            concurrency = self.config.max_concurrency or gateway.max_concurrency
            plan, wrote = await ensure_first(self.db, count, min(size, count), concurrency)
            if wrote:
                logger.info("cluster: wrote the first shard plan: {}", plan.describe())
        if fixed is not None and fixed != plan.shard_count:
            raise ClusterError(
                f"shard count {fixed} ({where}) differs from generation "
                f"{plan.generation}'s {plan.shard_count}: every process must agree; change "
                f"it with `wisp cluster reshard --shard-count {fixed}`"
            )
        if static is not None and static[1] >= plan.shard_count:
            raise ClusterError(
                f"shards {static[0]}-{static[1]} go beyond generation {plan.generation}'s "
                f"shard count {plan.shard_count} (ids are 0-{plan.shard_count - 1})"
            )
        return plan

    def _candidates(
        self, plan: Plan, static: tuple[int, int] | None, ordinal: tuple[int, str] | None
    ) -> list[tuple[int, int]]:
        if static is not None:
            return [static]
        ranges = plan.ranges()
        if ordinal is not None:
            number, source = ordinal
            if number >= len(ranges):
                shown = ", ".join(f"{a}-{b}" for a, b in ranges)
                raise ClusterError(
                    f"ordinal {number} ({source}) has no range: generation "
                    f"{plan.generation} has {len(ranges)} (numbered from 0: {shown})"
                )
            return [ranges[number]]
        return ranges

    async def _take_lease(self, candidates: list[tuple[int, int]]) -> bool:
        """Hold the first free range's lease; stand by until one is free.  Returns
        whether this process had to wait."""
        loop = asyncio.get_running_loop()
        waited = False
        while True:
            for first, last in candidates:
                key = self.keys.lease(self.generation, first, last)
                lease = await acquire(
                    self.redis, key, self.owner, self.generation, first, last, self.config.lease_ttl
                )
                if lease is not None:
                    self.lease = lease
                    self.lease_valid_until = loop.time() + self.config.lease_ttl
                    self.range = (first, last)
                    return waited
            if not waited:
                shown = ", ".join(f"{a}-{b}" for a, b in candidates)
                logger.info(
                    "cluster: standby: shards {} of generation {} are taken; waiting for a "
                    "lease to lapse or be released",
                    shown,
                    self.generation,
                )
            waited = True
            with contextlib.suppress(Exception):
                await self._write_heartbeat()
            try:
                await asyncio.wait_for(self.options.stop.wait(), self.config.standby_poll)
            except TimeoutError:
                continue
            raise StandbyStopped("stopped while standing by for a range")

    def _check_budget(self, gateway: GatewayInfo) -> None:
        need = len(self.shards)
        reserve = self.config.session_reserve
        if gateway.remaining < need + reserve:
            hours, rest = divmod(int(gateway.reset_after), 3600)
            raise ClusterError(
                f"Discord's session-start budget is nearly spent: {gateway.remaining} of "
                f"{gateway.total} left today (resets in {hours}h{rest // 60:02d}m); starting "
                f"{need} shard(s) with [cluster] session_reserve = {reserve} needs "
                f"{need + reserve}, and running out makes Discord reset the bot's token. "
                "Not connecting: no IDENTIFY was sent"
            )

    # -- the discord.py client -------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """``shard_count`` and ``shard_ids`` for the bot.  The ids start at the
        bucket matching this range's number, so processes starting together
        IDENTIFY in different buckets instead of queueing on one."""
        assert self.plan is not None
        assert self.range is not None
        number = self.range[0] // max(1, self.plan.range_size)
        concurrency = self.plan.max_concurrency
        shards = self.shards
        offset = next(
            (i for i, s in enumerate(shards) if s % concurrency == number % concurrency), 0
        )
        return {
            "shard_count": self.plan.shard_count,
            "shard_ids": shards[offset:] + shards[:offset],
        }

    def attach(self, client: Any, discord_service: Any) -> None:
        """Pace IDENTIFYs, track shard states, and gate events (see the module doc)."""
        self.client = client
        client.before_identify_hook = self.before_identify
        client.add_listener(self._on_shard_ready, "on_shard_ready")
        client.add_listener(self._on_shard_ready, "on_shard_resumed")
        client.add_listener(self._on_shard_disconnect, "on_shard_disconnect")
        gates = getattr(discord_service, "gates", None)
        if gates is not None:
            gates.append(self.gate)

    async def _on_shard_ready(self, shard_id: int) -> None:
        self.ready_shards.add(shard_id)

    async def _on_shard_disconnect(self, shard_id: int) -> None:
        self.ready_shards.discard(shard_id)

    async def before_identify(self, shard_id: int | None, *, initial: bool = False) -> None:
        """discord.py's ``before_identify_hook``: wait for this shard's bucket
        (``shard_id % max_concurrency``), shared by every process on the token."""
        if self._stopping():
            # Not an Exception: discord.py would retry the shard forever; this
            # ends its launch sequence, as closing the bot meant.
            raise asyncio.CancelledError
        assert self.plan is not None
        shard = shard_id or 0
        if shard in self._identified:
            self.invalid_sessions += 1
            self._count("wisp.cluster.invalid_sessions", "sessions Discord invalidated")
            logger.warning(
                "cluster: shard {} identifies again (its session was invalidated)", shard
            )
        self._identified.add(shard)
        bucket = shard % self.plan.max_concurrency
        hold = self.config.identify_window + self.config.identify_margin
        if self.redis is not None:
            waited = await hold_bucket(
                self.redis, self.keys.bucket(bucket), self.owner, hold, self._stopping
            )
        else:
            loop = asyncio.get_running_loop()
            last = self._local_buckets.get(bucket)
            waited = max(0.0, (last + hold - loop.time()) if last is not None else 0.0)
            await asyncio.sleep(waited)
            self._local_buckets[bucket] = loop.time()
        self.identifies += 1
        self._count("wisp.cluster.identifies", "IDENTIFYs sent")
        if self.redis is not None:
            with contextlib.suppress(Exception):
                key = self.keys.identifies(time.strftime("%Y-%m-%d", time.gmtime()))
                async with self.redis.pipeline(transaction=False) as pipe:
                    pipe.incr(key)
                    pipe.expire(key, 2 * 86400)
                    today, _ = await pipe.execute()
                registry = metrics_of(self.app)
                if registry is not None:
                    registry.set_gauge("wisp.cluster.identifies_today", float(today))
        logger.debug(
            "cluster: shard {} identifies (bucket {}, waited {:.1f}s)", shard, bucket, waited
        )

    def _stopping(self) -> bool:
        return self.fenced or (self.client is not None and self.client.is_closed())

    def _count(self, name: str, description: str) -> None:
        registry = metrics_of(self.app)
        if registry is not None:
            registry.counter(name, description=description).inc()

    async def gate(self, event: str, args: tuple[Any, ...]) -> bool:
        """While two generations overlap, handle an event only where it is seen first."""
        if not self.overlap or self.redis is None:
            return True
        key = self.keys.seen(event_digest(event, args))
        try:
            first = await self.redis.set(
                key, self.owner, nx=True, px=max(1, int(self.config.dedup_ttl * 1000))
            )
        except Exception as exc:  # Redis trouble: better twice than never
            logger.warning("cluster: cannot de-duplicate {}: {}", event, exc)
            return True
        if not first:
            self.duplicates += 1
            self._count("wisp.cluster.duplicates", "events dropped as seen by another generation")
            logger.debug("cluster: dropped {}: another generation handles it", event)
        return bool(first)

    # -- running -----------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any], name: str) -> None:
        self._tasks.append(asyncio.ensure_future(coro))
        self._tasks[-1].set_name(name)

    async def _renew_loop(self) -> None:
        loop = asyncio.get_running_loop()
        ttl = self.config.lease_ttl
        while self.lease is not None and not self.fenced:
            await asyncio.sleep(ttl / 3)
            lease = self.lease
            if lease is None:
                return
            started = loop.time()
            try:
                ok = await renew(self.redis, lease, ttl)
            except Exception as exc:
                if loop.time() >= self.lease_valid_until:
                    await self.fence(f"the lease of {self._describe_range()} ran out while "
                                     f"Redis could not renew it ({exc})")  # fmt: skip
                    return
                logger.warning("cluster: renewing the lease failed ({}); retrying", exc)
                continue
            if not ok:
                await self.fence(f"lost the lease of {self._describe_range()}")
                return
            self.lease_valid_until = started + ttl

    async def fence(self, why: str) -> None:
        """Stop this process's shards now (another process may own them) and stop."""
        if self.fenced:
            return
        self.fenced = True
        self.exit_code = 1
        self.lease = None
        logger.error("cluster: {}; stopping this process's shards now", why)
        await self._close_client()
        self.options.stop.set()

    async def drain(self, active: int | None) -> None:
        """This generation was replaced: stop the shards, give the range back, stop."""
        if self.fenced:
            return
        self.fenced = True
        logger.info(
            "cluster: generation {} is draining (generation {} is active): stopping {}",
            self.generation,
            active,
            self._describe_range(),
        )
        await self._close_client()
        await self._release()
        self.options.stop.set()

    async def _close_client(self) -> None:
        client = self.client
        if client is not None and not client.is_closed():
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10):
                    await client.close()
        self.ready_shards.clear()

    async def _release(self) -> None:
        lease, self.lease = self.lease, None
        if lease is not None and self.redis is not None:
            try:
                await release(self.redis, lease)
            except Exception as exc:
                logger.warning(
                    "cluster: could not release the lease (it lapses by itself): {}", exc
                )

    async def shutdown(self) -> None:
        """SIGTERM: shards first, then the lease, at once (a standby takes over)."""
        await self._close_client()
        await self._release()

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await self._beat()
            except Exception as exc:
                logger.warning("cluster: heartbeat failed: {}: {}", type(exc).__name__, exc)
            await asyncio.sleep(self.config.heartbeat_seconds)

    def shard_states(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        client = self.client
        for shard in self.shards:
            latency = None
            if client is not None:
                info = client.get_shard(shard)
                latency = info.latency * 1000 if info is not None else None
            out[str(shard)] = {
                "ready": shard in self.ready_shards,
                "latency_ms": _json_float(latency),
            }
        return out

    def status_record(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        return {
            "owner": self.owner,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "generation": self.generation,
            "range": f"{self.range[0]}-{self.range[1]}" if self.range else None,
            "standby": self.range is None,
            "shards": self.shard_states(),
            "lease_expires_in": _json_float(self.lease_valid_until - loop.time())
            if self.lease is not None
            else None,
            "identifies": self.identifies,
            "invalid_sessions": self.invalid_sessions,
            "duplicates": self.duplicates,
            "overlap": self.overlap,
            "time": time.time(),
        }

    async def _write_heartbeat(self) -> None:
        if self.redis is None or not self.generation:
            return
        ttl = max(3 * self.config.heartbeat_seconds, self.config.lease_ttl)
        await self.redis.set(
            self.keys.process(self.generation, self.owner),
            json.dumps(self.status_record()),
            px=int(ttl * 1000),
        )

    async def _beat(self) -> None:
        if self.fenced:
            return
        await self._write_heartbeat()
        plans = await all_plans(self.db)
        self.overlap = any(p.state in ("pending", "draining") for p in plans)
        mine = next((p for p in plans if p.generation == self.generation), None)
        active = next((p.generation for p in plans if p.state == "active"), None)
        if mine is None or mine.state in ("draining", "retired"):
            await self.drain(active)
            return
        if self.redis is None:
            return
        complete = mine.state == "pending" and await self._all_ready(mine)
        if complete and await flip(self.db, mine.generation):
            logger.info(
                "cluster: every shard of generation {} is READY: it is active now; "
                "generation {} drains",
                mine.generation,
                active,
            )
        for plan in plans:
            if plan.state != "draining" or plan.generation == self.generation:
                continue
            gone = not await process_records(self.redis, self.keys, plan.generation)
            if gone and await retire(self.db, plan.generation):
                logger.info("cluster: generation {} is retired", plan.generation)

    async def _all_ready(self, plan: Plan) -> bool:
        ready: set[int] = set()
        for record in await process_records(self.redis, self.keys, plan.generation):
            ready.update(int(s) for s, state in record.get("shards", {}).items() if state["ready"])
        return ready >= set(range(plan.shard_count))

    # -- admin queries -------------------------------------------------------------------

    async def _serve_queries(self) -> None:
        # A query missed while the subscription was down times out for its asker.
        await self.app.services.get("redis").listen(
            self.keys.queries(), self._on_query, what="cluster admin queries"
        )

    def _on_query(self, data: bytes) -> None:
        task = asyncio.ensure_future(self._answer(data))
        self._answers.add(task)
        task.add_done_callback(self._answers.discard)

    async def _answer(self, data: Any) -> None:
        try:
            request = json.loads(data)
            request_id = str(request["id"])
            name = str(request["name"])
        except (ValueError, KeyError, TypeError):
            logger.warning("cluster: ignored a malformed query: {!r}", data)
            return
        if not re.fullmatch(r"[0-9a-f]{8,64}", request_id):
            logger.warning("cluster: ignored a query with a bad id: {!r}", request_id)
            return
        body: dict[str, Any] = {
            "process": self.owner,
            "generation": self.generation,
            "range": f"{self.range[0]}-{self.range[1]}" if self.range else None,
        }
        fn = self.queries.get(name)
        if fn is None:
            body.update(
                ok=False, error=f"unknown query {name!r}; known: {', '.join(sorted(self.queries))}"
            )
        else:
            try:
                async with asyncio.timeout(self.config.query_timeout):
                    body.update(ok=True, result=await fn(self.app))
            except Exception as exc:
                body.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        await self.redis.publish(self.keys.reply(request_id), json.dumps(body, default=str))

    # -- lifecycle ---------------------------------------------------------------------

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        await wisp.cancel_and_wait(*tasks, *self._answers)
        await self._release()
        if self.redis is not None and self.generation:
            with contextlib.suppress(Exception):
                await self.redis.delete(self.keys.process(self.generation, self.owner))
        await super().stop()

    async def ready(self) -> wisp.Health:
        if self.range is None:
            return wisp.Health(False, "standby: no range yet")
        if self.fenced:
            return wisp.Health(False, f"stopping {self._describe_range()}")
        missing = [s for s in self.shards if s not in self.ready_shards]
        ready = len(self.shards) - len(missing)
        detail = f"{self._describe_range()}: {ready}/{len(self.shards)} READY"
        return wisp.Health(not missing, detail)

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        return wisp.Health(not self.fenced, self._describe_range())


async def process_records(
    redis: Any, keys: Keys, generation: int | None = None
) -> list[dict[str, Any]]:
    """The live processes' heartbeats (of one generation, or all)."""
    found = [k async for k in redis.scan_iter(match=keys.processes(generation), count=200)]
    if not found:
        return []
    out = []
    for raw in await redis.mget(found):
        if raw is None:
            continue
        with contextlib.suppress(ValueError):
            out.append(json.loads(raw))
    return out


def query_functions(app: wisp.Wisp) -> Mapping[str, QueryFn]:
    """The built-in admin queries: ``guild-count`` and ``shard-status``."""

    async def guild_count(app: wisp.Wisp) -> Any:
        service = app.services.get("cluster")
        client = service.client
        return {"guilds": len(client.guilds) if client is not None else 0}

    async def shard_status(app: wisp.Wisp) -> Any:
        return app.services.get("cluster").shard_states()

    return {"guild-count": guild_count, "shard-status": shard_status}
