"""The webhook log sink: records at the configured levels, posted to a Discord
channel through discord.py's ``Webhook``, batched and rate-limited.

The loguru sink only appends to a bounded queue (no await, no I/O), so a
command that logs an error never waits for Discord; when the queue is full
the record is dropped and counted, and the next message says how many were.
A task drains the queue: it waits ``batch_seconds`` for company, packs up to
``max_embeds`` records into one message within Discord's embed limits, and
keeps below Discord's webhook limits (5 requests per 2 seconds, and
``per_minute`` messages a minute) before each send.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

from wisp.services import BaseService, Health

if TYPE_CHECKING:
    import aiohttp
    import discord
    from loguru import Message, Record

    from wisp.plugins.webhooklog.config import WebhookLogConfig

__all__ = ["Entry", "RateWindow", "Stats", "WebhookLogService", "pack"]

#: Discord's limits on one message's embeds.
EMBED_TOTAL = 6000
DESCRIPTION_MAX = 4096
#: Every record this sink writes about itself carries this extra, and is not sent.
SKIP = "webhooklog_skip"
#: Loggers whose records could be about this sink's own requests: never sent.
_OWN = ("discord.webhook", "discord.http", "aiohttp")
_COLOURS = {"WARNING": 0xE6A23C, "ERROR": 0xD9534F, "CRITICAL": 0x8B0000}


@attrs.define
class Stats:
    """What the sink did since start."""

    sent: int = 0  # records delivered
    messages: int = 0  # webhook requests that succeeded
    dropped: int = 0  # records dropped because the queue was full
    failed: int = 0  # records lost to a failed request


@attrs.frozen
class Entry:
    """One record, reduced to what the message shows (taken in the sink)."""

    level: str
    logger: str
    message: str
    time: float
    exception: str | None = None
    fields: tuple[tuple[str, str], ...] = ()


class RateWindow:
    """Sliding windows of (count, seconds): how long until one more send fits."""

    def __init__(
        self, limits: Sequence[tuple[int, float]], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = tuple(limits)
        self.clock = clock
        self._sent: collections.deque[float] = collections.deque()

    def delay(self) -> float:
        """Seconds to wait before the next send (0: now)."""
        now = self.clock()
        longest = max(s for _, s in self.limits)
        while self._sent and self._sent[0] <= now - longest:
            self._sent.popleft()
        wait = 0.0
        for count, seconds in self.limits:
            recent = [t for t in self._sent if t > now - seconds]
            if len(recent) >= count:
                wait = max(wait, recent[-count] + seconds - now)
        return wait

    def record(self) -> None:
        self._sent.append(self.clock())


_FIELD_KEYS = ("request_id", "command", "event", "job", "saga", "guild_id", "user_id")


def _entry(record: Record, scrub: Callable[[str], str]) -> Entry:
    extra = record["extra"]
    exc = record["exception"]
    exc_text = None
    if exc is not None and exc.type is not None:
        lines = traceback.format_exception(exc.type, exc.value, exc.traceback)
        exc_text = scrub("".join(lines).rstrip("\n"))
    fields = tuple(
        (key, str(extra[key])) for key in _FIELD_KEYS if extra.get(key) not in (None, "-")
    )
    return Entry(
        level=record["level"].name,
        logger=str(record["name"]),
        message=scrub(record["message"]),
        time=record["time"].timestamp(),
        exception=exc_text,
        fields=fields,
    )


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def pack(entries: Sequence[Entry], dropped: int = 0) -> list[dict[str, Any]]:
    """Embeds (as Discord's JSON) for ``entries``, within one message's limits.

    Fewer embeds than entries come back when the 6000-character total is
    reached; the caller sends the rest next.  ``dropped`` is said in the first.
    """
    budget = EMBED_TOTAL
    each = max(200, EMBED_TOTAL // max(1, len(entries)))
    out: list[dict[str, Any]] = []
    for n, entry in enumerate(entries):
        title = _cut(f"{entry.level} {entry.logger}", 120)
        footer = _cut(" ".join(f"{k}={v}" for k, v in entry.fields), 300)
        room = min(each, DESCRIPTION_MAX, budget) - len(title) - len(footer)
        if room < 100 and out:
            break  # the rest go in the next message
        body = entry.message
        if n == 0 and dropped:
            body = f"({dropped} record(s) dropped: the sink fell behind)\n" + body
        if entry.exception:
            # The end of a traceback says most: keep that part.
            keep = max(0, room - len(body) - 10)
            tail = entry.exception[len(entry.exception) - keep :] if keep else ""
            body += f"\n```\n{tail}\n```"
        body = _cut(body, max(1, room))
        embed: dict[str, Any] = {
            "title": title,
            "description": body,
            "color": _COLOURS.get(entry.level, 0x5865F2),
            "timestamp": _iso(entry.time),
        }
        if footer:
            embed["footer"] = {"text": footer}
        out.append(embed)
        budget -= len(title) + len(body) + len(footer)
    return out


def _iso(ts: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat()


class WebhookLogService(BaseService):
    """The sink and its sender; ``stats`` counts what happened."""

    name = "webhooklog"

    def __init__(self, config: WebhookLogConfig, scrub: Callable[[str], str]) -> None:
        super().__init__()
        self.config = config
        self.scrub = scrub
        self.stats = Stats()
        self.queue: collections.deque[Entry] = collections.deque()
        self.window = RateWindow([(5, 2.0), (config.per_minute, 60.0)])
        self.disabled: str | None = None
        self._levels = {config.level.upper()} | {lv.upper() for lv in config.also}
        self._min = logger.level(config.level.upper()).no
        self._handler: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._session: aiohttp.ClientSession | None = None
        self._webhook: discord.Webhook | None = None
        self._pending_drops = 0
        self._stopping = False

    # -- the loguru side: synchronous, bounded, never waits --------------------

    def _filter(self, record: Record) -> bool:
        if SKIP in record["extra"]:
            return False
        name = record["name"] or ""
        if name.startswith(_OWN):
            return False
        return record["level"].no >= self._min or record["level"].name in self._levels

    def _sink(self, message: Message) -> None:
        if len(self.queue) >= self.config.max_queue or self.disabled:
            self.stats.dropped += 1
            self._pending_drops += 1
            return
        self.queue.append(_entry(message.record, self.scrub))
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        elif self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        import aiohttp
        import discord

        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._session = aiohttp.ClientSession()
        self._webhook = discord.Webhook.from_url(self.config.url, session=self._session)
        self._task = asyncio.create_task(self._run(), name="wisp-webhooklog")
        lowest = min([self._min, *(logger.level(lv).no for lv in self._levels)])
        self._handler = logger.add(
            self._sink, level=lowest, filter=self._filter, format="{message}", catch=True
        )
        await super().start()

    async def stop(self) -> None:
        if self._handler is not None:
            logger.remove(self._handler)
            self._handler = None
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.config.flush_seconds)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                left = len(self.queue)
                self.stats.dropped += left
                self.queue.clear()
                logger.bind(**{SKIP: True}).warning(
                    "webhook log sink: {} record(s) not delivered before stop", left
                )
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop()

    async def health(self) -> Health:
        s = self.stats
        detail = (
            f"sent {s.sent} record(s) in {s.messages} message(s), dropped {s.dropped}, "
            f"failed {s.failed}, queued {len(self.queue)}"
        )
        if self.disabled:
            return Health(False, f"off: {self.disabled}; {detail}")
        return Health(self.started, detail)

    async def ready(self) -> Health:
        """Ready once started, whatever Discord does: a log sink that cannot
        deliver must not take the bot out of service (``/readyz``)."""
        return Health(self.started, "started" if self.started else "not started")

    # -- the sender -----------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            if not self.queue:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            if not self._stopping and len(self.queue) < self.config.max_embeds:
                # Give the records that usually follow an error a moment to join it.
                await self._sleep(self.config.batch_seconds)
            delay = self.window.delay()
            if delay > 0:
                await asyncio.sleep(delay)
            await self._send_batch()
            if self.disabled:
                return

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        try:
            async with asyncio.timeout(seconds):
                while len(self.queue) < self.config.max_embeds and not self._stopping:
                    await self._wake.wait()
                    self._wake.clear()
        except TimeoutError:
            pass

    async def _send_batch(self) -> None:
        import discord

        batch = [self.queue[i] for i in range(min(len(self.queue), self.config.max_embeds))]
        dropped, self._pending_drops = self._pending_drops, 0
        embeds = pack(batch, dropped)
        for _ in embeds:
            self.queue.popleft()
        assert self._webhook is not None
        self.window.record()
        try:
            await self._webhook.send(
                embeds=[discord.Embed.from_dict(e) for e in embeds],
                username=self.config.username,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except discord.NotFound:
            self.stats.failed += len(embeds)
            self.disabled = "the webhook is gone (404); delete [webhooklog] url or set a new one"
            self.stats.dropped += len(self.queue)
            self.queue.clear()
            logger.bind(**{SKIP: True}).error("webhook log sink is off: {}", self.disabled)
        except Exception as exc:
            self.stats.failed += len(embeds)
            logger.bind(**{SKIP: True}).warning(
                "webhook log sink: {} record(s) not delivered: {}: {}",
                len(embeds),
                type(exc).__name__,
                self.scrub(str(exc)),
            )
        else:
            self.stats.sent += len(embeds)
            self.stats.messages += 1
