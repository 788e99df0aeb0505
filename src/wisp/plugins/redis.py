"""Redis: one shared redis-py asyncio client as the ``redis`` service.

Bundled plugin ``redis``; block it with ``-p no:redis``.  It does nothing
until ``[redis] url`` (or ``WISP_REDIS_URL``) is set; then plugins that share
state across processes (policy cache invalidation, rate limits) find the
client with ``app.services.get("redis")`` and should start ``after`` it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs
from loguru import logger

import wisp

if TYPE_CHECKING:
    import redis.asyncio as aioredis

WISP_PLUGIN = wisp.PluginMetadata(
    name="redis",
    description="The shared redis-py asyncio client (the redis service).",
    api=">=1.0,<2",
    data="Nothing itself: other plugins store through it and state what.",
)


def _url(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    if value and not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// or unix://")


@attrs.frozen
class RedisConfig:
    """``[redis]``: where the shared Redis is; empty means none."""

    url: str = attrs.field(
        default="", validator=_url, metadata={"env": "WISP_REDIS_URL", "secret": True}
    )


class RedisService(wisp.BaseService):
    """Holds the client; ``client`` is a ``redis.asyncio.Redis``."""

    name = "redis"

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.client: aioredis.Redis | None = None

    async def start(self) -> None:
        # A bounded pool that makes callers wait for a connection rather than fail.
        import redis.asyncio as aioredis  # only once a Redis is configured and starts

        pool = aioredis.BlockingConnectionPool.from_url(self.url, max_connections=50, timeout=10)
        self.client = aioredis.Redis.from_pool(pool)  # owns the pool: aclose() closes it
        try:
            await self.client.ping()
        except Exception:
            await self.client.aclose()
            self.client = None
            raise
        await super().start()

    async def stop(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
        await super().stop()

    async def listen(
        self,
        channel: str,
        on_message: Callable[[bytes], Awaitable[None] | None],
        *,
        on_gap: Callable[[], Awaitable[None] | None] | None = None,
        subscribed: asyncio.Event | None = None,
        what: str = "",
    ) -> None:
        """Hand every message on ``channel`` to ``on_message`` until cancelled.

        Subscriptions do not survive a dropped connection by themselves, and a
        listener that dies leaves a process deaf without a word.  This one logs
        the loss, subscribes again (0.1 s back-off, doubling to 5 s), and then
        calls ``on_gap``: messages published meanwhile are gone, so drop caches
        or re-check there.  ``subscribed`` is set while a subscription is in
        place and cleared while it is lost.  Either callback may be async
        (awaited before the next message); one that raises is logged and the
        subscription goes on.
        """
        assert self.client is not None, "the redis service has not started"
        label = what or channel
        delay = 0.1
        first = True
        while True:
            pubsub: Any = self.client.pubsub()  # redis-py's PubSub is partly untyped
            try:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        data = message["data"]
                        raw = data if isinstance(data, bytes) else str(data).encode()
                        await _call(on_message, raw, what=f"handling a message for {label}")
                    elif kind == "subscribe":  # also after redis-py reconnects by itself
                        delay = 0.1
                        if subscribed is not None:
                            subscribed.set()
                        if first:
                            first = False
                        else:
                            logger.info("redis: {} subscribed again", label)
                            if on_gap is not None:
                                await _call(on_gap, what=f"catching up on {label}")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if subscribed is not None:
                    subscribed.clear()
                logger.warning(
                    "redis: lost the subscription for {} ({}: {}); subscribing again in {}s",
                    label,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    async def health(self) -> wisp.Health:
        if self.client is None:
            return wisp.Health(False, "not started")
        await self.client.ping()
        return wisp.Health(True, "PING answered")


async def _call(callback: Callable[..., Awaitable[None] | None], *args: Any, what: str) -> None:
    """Run a listener's callback, sync or async; its exception is its own bug."""
    try:
        result = callback(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("redis: {} failed", what)


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"redis": RedisConfig}


@wisp.hookimpl
def wisp_services(app: wisp.Wisp) -> Sequence[wisp.Service]:
    config: RedisConfig = app.config.section(RedisConfig)
    return [RedisService(config.url)] if config.url else []
