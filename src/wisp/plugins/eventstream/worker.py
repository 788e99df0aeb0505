"""The worker side: own shard streams, rebuild discord.py objects, route, ack.

Each shard stream has at most one owner in a group at a time (a lease the
transport keeps), so one guild's events are handled in publish order.  Workers
share the shards evenly: each takes up to ``ceil(shards / live workers)``,
renews its leases every third of ``lease_seconds`` and gives extra shards back
(after finishing what it took from them) when workers join.  A worker that
dies stops renewing; after ``lease_seconds`` another takes its shards and the
transport redelivers what the dead one had not acked.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Hashable, Sequence
from typing import Any

from loguru import logger

import wisp
from wisp.plugins.eventstream.api import Delivery, EventTransport
from wisp.plugins.eventstream.config import EventsConfig

__all__ = ["EventWorker", "default_consumer"]


def default_consumer() -> str:
    """A name unique to this process: host, pid and a random tail."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


class EventWorker(wisp.BaseService):
    """Consumes ``[events] group``'s share of the shard streams and routes each
    event through the discord service's client (REST only), then acks it."""

    name = "eventstream-worker"
    requires: Sequence[str] = ("eventstream", "discord")

    def __init__(
        self,
        app: wisp.Wisp,
        config: EventsConfig,
        shard_count: int,
        *,
        consumer: str | None = None,
        shards: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self.config = config
        self.shard_count = shard_count
        self.consumer = consumer or default_consumer()
        self.allowed = list(shards) if shards is not None else list(range(shard_count))
        self.owned: dict[int, asyncio.Task[None]] = {}
        #: Events handled (acked) and redelivered ones among them, since start.
        self.handled = 0
        self.reclaimed = 0
        self._transport: EventTransport | None = None
        self._feeder: Any = None
        self._slots = asyncio.Semaphore(config.max_inflight)
        self._queues: dict[Hashable, deque[tuple[Delivery, dict[str, Any]]]] = {}
        self._inflight: dict[int, set[asyncio.Task[None]]] = {}
        self._guilds: dict[int, float] = {}
        self._balancer: asyncio.Task[None] | None = None
        self._metrics: Any = None

    @property
    def transport(self) -> EventTransport:
        assert self._transport is not None, "the worker has not started"
        return self._transport

    async def start(self) -> None:
        from wisp.plugins.eventstream.discordpy import Feeder
        from wisp.plugins.metrics.api import metrics_of

        self._transport = self.app.services.get("eventstream").transport
        bot = self.app.services.get("discord").bot
        self._feeder = Feeder(bot)
        self._metrics = metrics_of(self.app)
        await self._balance_once()
        self._balancer = asyncio.create_task(self._balance(), name="wisp events balancer")
        logger.info(
            "events worker {} in group {!r}: shards {} of {}",
            self.consumer,
            self.config.group,
            sorted(self.owned),
            self.shard_count,
        )
        await super().start()

    async def stop(self) -> None:
        await wisp.cancel_and_wait(self._balancer)
        self._balancer = None
        for shard in list(self.owned):
            await self._drop(shard, release=True)
        if self._transport is not None:
            with contextlib.suppress(Exception):
                await self.transport.release(self.config.group, self._me, self.consumer)
        await super().stop()

    async def health(self) -> wisp.Health:
        if not self.started:
            return wisp.Health(False, "not started")
        return wisp.Health(
            True, f"shards {sorted(self.owned)}; {self.handled} handled, {self.reclaimed} reclaimed"
        )

    # -- shard ownership ---------------------------------------------------------

    @property
    def _me(self) -> str:
        return f"worker.{self.consumer}"

    async def _balance(self) -> None:
        while True:
            await asyncio.sleep(self.config.lease_seconds / 3)
            try:
                await self._balance_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("events worker {}: balancing shards failed", self.consumer)

    async def _balance_once(self) -> None:
        t, group, seconds = self.transport, self.config.group, self.config.lease_seconds
        await t.lease(group, self._me, self.consumer, seconds)
        for shard in list(self.owned):
            if not await t.lease(group, f"shard.{shard}", self.consumer, seconds):
                logger.warning("events worker {}: lost shard {}", self.consumer, shard)
                await self._drop(shard, release=False)
        holders = await t.holders(group)
        live = sum(1 for name in holders if name.startswith("worker."))
        share = math.ceil(len(self.allowed) / max(1, live))
        while len(self.owned) > share:
            await self._drop(max(self.owned), release=True)
        # Start looking at a different shard in each worker, so they do not race.
        offset = hash(self.consumer) % max(1, len(self.allowed))
        for shard in self.allowed[offset:] + self.allowed[:offset]:
            if len(self.owned) >= share:
                break
            if shard in self.owned or f"shard.{shard}" in holders:
                continue
            if await t.lease(group, f"shard.{shard}", self.consumer, seconds):
                self._inflight.setdefault(shard, set())
                self.owned[shard] = asyncio.create_task(
                    self._read(shard), name=f"wisp events shard {shard}"
                )
                logger.info("events worker {}: took shard {}", self.consumer, shard)
        if self._metrics is not None and self.owned:
            for status in await t.status(group, sorted(self.owned)):
                labels = {"shard": str(status.shard_id), "group": group}
                self._metrics.set_gauge("wisp.events.pending", status.pending, **labels)
                if status.lag is not None:
                    self._metrics.set_gauge("wisp.events.lag", status.lag, **labels)

    async def _drop(self, shard: int, *, release: bool) -> None:
        """Stop reading ``shard``, finish (and ack) what was taken from it, then
        give the lease back."""
        await wisp.cancel_and_wait(self.owned.pop(shard))
        pending = self._inflight.get(shard, set())
        if pending:
            await asyncio.wait(pending)
        if release:
            with contextlib.suppress(Exception):
                await self.transport.release(self.config.group, f"shard.{shard}", self.consumer)

    # -- reading and handling ------------------------------------------------------

    async def _read(self, shard: int) -> None:
        try:
            async for delivery in self.transport.consume(self.config.group, self.consumer, shard):
                await self._slots.acquire()
                self._schedule(shard, delivery)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("events worker {}: reading shard {} failed", self.consumer, shard)
            # Let the balancer take the shard again on its next round.
            self.owned.pop(shard, None)
            with contextlib.suppress(Exception):
                await self.transport.release(self.config.group, f"shard.{shard}", self.consumer)

    def _schedule(self, shard: int, delivery: Delivery) -> None:
        """Queue ``delivery`` behind its guild's earlier events; one runner task per
        guild with events waiting (a guild lives on one shard)."""
        try:
            data: dict[str, Any] = json.loads(delivery.data)
        except ValueError:
            data = {}
        guild = data.get("guild_id")
        key: Hashable = int(guild) if guild else ("channel", data.get("channel_id"))
        queue = self._queues.get(key)
        if queue is not None:
            queue.append((delivery, data))
            return
        queue = self._queues[key] = deque([(delivery, data)])
        inflight = self._inflight.setdefault(shard, set())
        task = asyncio.create_task(self._run(key, queue))
        inflight.add(task)
        task.add_done_callback(inflight.discard)

    async def _run(self, key: Hashable, queue: deque[tuple[Delivery, dict[str, Any]]]) -> None:
        try:
            while queue:
                delivery, data = queue[0]
                try:
                    await self._handle(delivery, data)
                finally:
                    queue.popleft()
                    self._slots.release()
        finally:
            del self._queues[key]

    async def _handle(self, delivery: Delivery, data: dict[str, Any]) -> None:
        try:
            if not data or not self._feeder.knows(delivery.event):
                logger.error(
                    "events: dropped {} {} from shard {}: not a dispatch this worker can read",
                    delivery.event,
                    delivery.id,
                    delivery.shard_id,
                )
            else:
                guild = data.get("guild_id")
                if guild:
                    await self._ensure_guild(int(guild))
                await self._feeder.feed(delivery.event, data)
        except Exception:
            # A dispatch discord.py cannot parse fails the same way every time:
            # log it and ack, rather than redeliver it forever.
            logger.exception(
                "events: handling {} {} from shard {} failed",
                delivery.event,
                delivery.id,
                delivery.shard_id,
            )
        await delivery.ack()
        self.handled += 1
        if delivery.redelivered:
            self.reclaimed += 1
        if self._metrics is not None:
            self._metrics.increment("wisp.events.consumed", event=delivery.event)
            if delivery.redelivered:
                self._metrics.increment("wisp.events.reclaimed")
            self._metrics.timing(
                "wisp.events.latency", max(0.0, time.time() - delivery.published_at)
            )

    async def _ensure_guild(self, guild_id: int) -> None:
        seen = self._guilds.get(guild_id)
        now = time.monotonic()
        if seen is not None and now - seen < self.config.guild_refresh:
            return
        self._guilds[guild_id] = now
        raw = await self.transport.get_guild(guild_id)
        if raw is not None:
            self._feeder.add_guild(json.loads(raw))
        elif not self._feeder.has_guild(guild_id):
            logger.warning(
                "events: no snapshot of guild {} yet (is a gateway publishing?); handlers see "
                "a guild with no channels or roles",
                guild_id,
            )
            self._feeder.add_guild({"id": str(guild_id), "name": "", "channels": [], "roles": []})
