"""The gateway side: publish dispatches, keep guild snapshots for workers."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from loguru import logger

from wisp.plugins.eventstream.api import EventTransport, shard_of
from wisp.tasks import cancel_and_wait

if TYPE_CHECKING:
    import discord

__all__ = ["Publisher"]

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

#: What a snapshot leaves out: workers get members with each event, and presences
#: and voice states change too often to keep current.
_DROPPED = ("members", "presences", "voice_states", "threads", "stage_instances")


class Publisher:
    """Installed on the gateway's client: published dispatches go to the transport
    (shard from the guild id, so one guild's events share one stream); guild
    structure events update a snapshot per guild that workers read."""

    def __init__(
        self, client: discord.Client, transport: EventTransport, shard_count: int, app: Any
    ) -> None:
        self.client = client
        self.transport = transport
        self.shard_count = shard_count
        self.app = app
        self.snapshots: dict[int, dict[str, Any]] = {}
        self.published = 0
        self._dirty: set[int] = set()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        from wisp.plugins.metrics.api import metrics_of

        self._metrics = metrics_of(app)

    # -- called by discord.py's reader, synchronously --------------------------

    def publish(self, event: str, data: dict[str, Any]) -> None:
        guild = data.get("guild_id")
        shard = shard_of(int(guild) if guild else None, self.shard_count)
        self.transport.publish(shard, event, _dumps(data).encode())
        self.published += 1
        if self._metrics is not None:
            self._metrics.increment("wisp.events.published", event=event)

    def on_state(self, event: str, data: dict[str, Any]) -> None:
        try:
            guild_id = self._apply(event, data)
        except (KeyError, TypeError, ValueError):
            logger.exception("events: could not apply {} to the guild snapshot", event)
            return
        if guild_id is not None:
            self._dirty.add(guild_id)
            self._wake.set()

    def _apply(self, event: str, data: dict[str, Any]) -> int | None:
        if event == "GUILD_CREATE":
            if data.get("unavailable") is True:
                return None
            guild_id = int(data["id"])
            snap: dict[str, Any] | None = {k: v for k, v in data.items() if k not in _DROPPED}
            assert snap is not None
            me = self.client.user.id if self.client.user is not None else None
            snap["members"] = [
                m for m in data.get("members", ()) if int(m.get("user", {}).get("id", 0)) == me
            ]
            self.snapshots[guild_id] = snap
            return guild_id
        if event in ("GUILD_UPDATE", "GUILD_DELETE"):
            guild_id = int(data["id"])
            if event == "GUILD_DELETE":
                if data.get("unavailable"):
                    return None  # an outage, not a removal: keep what workers know
                self.snapshots.pop(guild_id, None)
                return guild_id
            snap = self.snapshots.get(guild_id)
            if snap is not None:
                snap.update({k: v for k, v in data.items() if k not in _DROPPED})
            return guild_id
        raw_guild = data.get("guild_id")
        if raw_guild is None:
            return None  # a DM channel: no guild snapshot
        guild_id = int(raw_guild)
        snap = self.snapshots.get(guild_id)
        if snap is None:
            return None
        item: Any
        if event.startswith("CHANNEL_"):
            items, item, item_id = "channels", data, data["id"]
        else:
            items = "roles"
            item = data.get("role")
            item_id = item["id"] if item is not None else data["role_id"]
        kept = [x for x in snap.get(items, ()) if x.get("id") != item_id]
        if not event.endswith("_DELETE"):
            kept.append(item)
        snap[items] = kept
        return guild_id

    # -- snapshots, written in the background ---------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write_snapshots(), name="wisp events snapshots")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        await self.write_dirty()

    async def write_dirty(self) -> None:
        while self._dirty:
            guild_id = self._dirty.pop()
            snap = self.snapshots.get(guild_id)
            raw = _dumps(snap).encode() if snap is not None else None
            try:
                await self.transport.put_guild(guild_id, raw)
            except BaseException:
                self._dirty.add(guild_id)  # written on the next round
                raise

    async def _write_snapshots(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.write_dirty()
            except Exception:
                logger.exception("events: writing guild snapshots failed; retrying")
                await asyncio.sleep(1.0)
                self._wake.set()
