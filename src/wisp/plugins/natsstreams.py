"""NATS JetStream as the event transport: ``[events] transport = "nats"``.

Bundled plugin ``nats``; block it with ``-p no:nats``.  Needs ``nats-py``
(``pip install 'wisp-framework[nats]'``), imported only when the transport
starts.  One JetStream stream (``[nats] stream``) with a subject per shard
(``{subject}.{shard}``), trimmed to ``max_per_shard`` messages per subject;
a durable pull consumer per worker pool and shard (``{group}_{shard}``) with
explicit acks: what a crashed worker took and never acked is redelivered after
``ack_wait``.  Guild snapshots and leases live in JetStream key-value buckets.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import attrs
from loguru import logger

import wisp
from wisp.config import positive
from wisp.plugins.eventstream.api import Delivery, StreamStatus, TransportError

__all__ = ["NatsConfig", "NatsTransport"]

WISP_PLUGIN = wisp.PluginMetadata(
    name="nats",
    description="NATS JetStream event transport: a subject per shard, durable pull "
    "consumers per worker pool, ack/nak and redelivery.",
    api=">=1.0,<2",
    data="Discord dispatches while they wait in the stream (at most max_per_shard per "
    "shard) and each guild's channels and roles.",
)


def _url(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    for one in value.split(","):
        if not one.strip().startswith(("nats://", "tls://", "ws://", "wss://")):
            raise ValueError(f"{one.strip()!r} is not a nats://, tls://, ws:// or wss:// URL")


def _token(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError(f"{value!r}: use letters, digits, '-' and '_'")


def _subject(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or any(c in value for c in " *>") or value.startswith(".") or value.endswith("."):
        raise ValueError(f"{value!r} is not a subject prefix (like wisp.events)")


@attrs.frozen
class NatsConfig:
    """``[nats]``."""

    #: Server URL(s), comma-separated.
    url: str = attrs.field(
        default="nats://127.0.0.1:4222",
        validator=_url,
        metadata={"env": "WISP_NATS_URL", "secret": True},
    )
    #: The JetStream stream holding every shard's events (created or updated at start).
    stream: str = attrs.field(default="WISP_EVENTS", validator=_token)
    #: Subjects are ``{subject}.{shard}``.
    subject: str = attrs.field(default="wisp.events", validator=_subject)
    #: Messages kept per shard subject; the oldest go first, acked or not.
    max_per_shard: int = attrs.field(default=100_000, validator=positive)
    #: "file" survives a NATS restart; "memory" is faster.
    storage: Literal["file", "memory"] = "file"
    #: Seconds before a message a worker took and did not ack goes to another worker
    #: (longer than your slowest handler, about ``[events] lease_seconds``).
    ack_wait: float = attrs.field(default=15.0, validator=positive)
    #: Messages per fetch and per publishing round.
    batch: int = attrs.field(default=200, validator=positive)
    #: Seconds a fetch waits for new messages before looking again.
    fetch_timeout: float = attrs.field(default=1.0, validator=positive)
    #: Dispatches queued in a gateway while NATS is away; more are dropped (logged).
    buffer: int = attrs.field(default=100_000, validator=positive)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NatsTransport:
    """:class:`~wisp.plugins.eventstream.api.EventTransport` on NATS JetStream."""

    name = "nats"

    def __init__(self, config: NatsConfig) -> None:
        self.config = config
        self._nc: Any = None
        self._js: Any = None
        self._kv: dict[str, Any] = {}
        self._queue: deque[tuple[int, bytes]] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._dropped = 0

    @property
    def js(self) -> Any:
        if self._js is None:
            raise TransportError("the NATS event transport has not started")
        return self._js

    def subject(self, shard_id: int) -> str:
        return f"{self.config.subject}.{shard_id}"

    async def start(self) -> None:
        try:
            import nats
            from nats.js.api import StreamConfig
            from nats.js.errors import NotFoundError
        except ImportError:
            raise TransportError(
                "[events] transport = 'nats' needs nats-py: pip install 'wisp-framework[nats]'"
            ) from None
        servers = [u.strip() for u in self.config.url.split(",")]
        try:
            self._nc = await nats.connect(
                servers=servers, connect_timeout=5, max_reconnect_attempts=-1, allow_reconnect=True
            )
        except Exception as exc:
            raise TransportError(f"[nats] url: cannot connect to NATS: {exc!r}") from None
        self._js = self._nc.jetstream()
        wanted = StreamConfig(
            name=self.config.stream,
            subjects=[f"{self.config.subject}.*"],
            max_msgs_per_subject=self.config.max_per_shard,
            storage=self.config.storage,  # type: ignore[arg-type]
        )
        try:
            await self._js.stream_info(self.config.stream)
        except NotFoundError:
            await self._js.add_stream(wanted)
        else:
            await self._js.update_stream(wanted)
        self._sender = asyncio.create_task(self._send(), name="wisp events nats publish")

    async def close(self) -> None:
        if self._nc is None:
            return
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.flush()
        await wisp.cancel_and_wait(self._sender)
        self._sender = None
        with contextlib.suppress(Exception):
            await self._nc.drain()
        self._nc = self._js = None
        self._kv.clear()

    # -- publishing -----------------------------------------------------------------

    def publish(self, shard_id: int, event: str, data: bytes) -> None:
        if len(self._queue) >= self.config.buffer:
            self._queue.popleft()
            self._dropped += 1
            if self._dropped in (1, 10, 100) or self._dropped % 1000 == 0:
                logger.error(
                    "events: NATS is not keeping up; {} dispatch(es) dropped so far "
                    "([nats] buffer = {})",
                    self._dropped,
                    self.config.buffer,
                )
        head = f"{event} {time.time()!r}\n".encode()
        self._queue.append((shard_id, head + data))
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        await self._idle.wait()

    async def _send(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                items = [
                    self._queue.popleft() for _ in range(min(self.config.batch, len(self._queue)))
                ]
                try:
                    acks = [
                        await self.js.publish_async(self.subject(shard), body)
                        for shard, body in items
                    ]
                    await asyncio.gather(*acks)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    # Some may be stored already: at least once, never lost.
                    logger.error("events: NATS publish failed ({!r}); retrying in 1s", exc)
                    self._queue.extendleft(reversed(items))
                    await asyncio.sleep(1.0)
            self._idle.set()

    # -- consuming ------------------------------------------------------------------

    async def consume(self, group: str, consumer: str, shard_id: int) -> AsyncIterator[Delivery]:
        from nats.errors import TimeoutError as NatsTimeout
        from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

        config = ConsumerConfig(
            durable_name=f"{group}_{shard_id}",
            filter_subject=self.subject(shard_id),
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=self.config.ack_wait,
            max_ack_pending=100_000,
            max_deliver=-1,
        )
        sub = await self.js.pull_subscribe(
            self.subject(shard_id),
            durable=f"{group}_{shard_id}",
            stream=self.config.stream,
            config=config,
        )
        left: list[Any] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(self.config.batch, timeout=self.config.fetch_timeout)
                except (TimeoutError, NatsTimeout):
                    continue
                left = list(msgs)
                while left:
                    msg = left.pop(0)
                    head, _, data = msg.data.partition(b"\n")
                    event, _, at = head.partition(b" ")
                    meta = msg.metadata
                    yield Delivery(
                        id=str(meta.sequence.stream),
                        shard_id=shard_id,
                        event=event.decode(),
                        data=data,
                        published_at=float(at or 0),
                        redelivered=meta.num_delivered > 1,
                        ack=msg.ack,
                        nak=msg.nak,
                    )
        finally:
            for msg in left:  # taken but not handed over: let another worker have them now
                with contextlib.suppress(Exception):
                    await msg.nak()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    # -- key-value: guild snapshots and leases ---------------------------------------

    async def _bucket(self, name: str, ttl: float | None = None, *, create: bool = True) -> Any:
        """The key-value bucket ``name``; ``None`` when it does not exist and
        ``create`` is false (so reading leases never makes a bucket without TTL)."""
        kv = self._kv.get(name)
        if kv is None:
            from nats.js.errors import BucketNotFoundError

            try:
                kv = await self.js.key_value(name)
            except BucketNotFoundError:
                if not create:
                    return None
                kv = await self.js.create_key_value(bucket=name, history=1, ttl=ttl)
            self._kv[name] = kv
        return kv

    async def put_guild(self, guild_id: int, data: bytes | None) -> None:
        kv = await self._bucket(f"{self.config.stream}_guilds")
        if data is None:
            with contextlib.suppress(Exception):
                await kv.delete(str(guild_id))
        else:
            await kv.put(str(guild_id), data)

    async def get_guild(self, guild_id: int) -> bytes | None:
        from nats.js.errors import KeyNotFoundError

        kv = await self._bucket(f"{self.config.stream}_guilds")
        try:
            entry = await kv.get(str(guild_id))
        except KeyNotFoundError:
            return None
        value: bytes | None = entry.value
        return value

    async def lease(self, group: str, name: str, owner: str, seconds: float) -> bool:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = await self._bucket(f"{self.config.stream}_leases_{group}", ttl=seconds)
        for _ in range(3):
            try:
                await kv.create(name, owner.encode())
                return True
            except KeyWrongLastSequenceError:
                pass
            try:
                entry = await kv.get(name)
            except KeyNotFoundError:
                continue  # expired or released meanwhile: try to create it again
            if _text(entry.value) != owner:
                return False
            try:
                await kv.update(name, owner.encode(), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                return False
        return False

    async def release(self, group: str, name: str, owner: str) -> None:
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError

        kv = await self._bucket(f"{self.config.stream}_leases_{group}", create=False)
        if kv is None:
            return
        try:
            entry = await kv.get(name)
            if _text(entry.value) == owner:
                await kv.delete(name, last=entry.revision)
        except (KeyNotFoundError, KeyWrongLastSequenceError):
            pass

    async def holders(self, group: str) -> dict[str, str]:
        from nats.js.errors import KeyNotFoundError, NoKeysError

        kv = await self._bucket(f"{self.config.stream}_leases_{group}", create=False)
        if kv is None:
            return {}
        try:
            names = await kv.keys()
        except NoKeysError:
            return {}
        out: dict[str, str] = {}
        for name in names:
            with contextlib.suppress(KeyNotFoundError):
                out[name] = _text((await kv.get(name)).value)
        return out

    async def status(self, group: str, shards: Sequence[int]) -> list[StreamStatus]:
        from nats.js.errors import NotFoundError

        info = await self.js.stream_info(self.config.stream, subjects_filter=">")
        counts = dict(info.state.subjects or {})
        out: list[StreamStatus] = []
        for shard_id in shards:
            subject = self.subject(shard_id)
            # No consumer yet: the group's first worker starts from the beginning.
            pending, lag = 0, int(counts.get(subject, 0))
            try:
                ci = await self.js.consumer_info(self.config.stream, f"{group}_{shard_id}")
                pending, lag = int(ci.num_ack_pending or 0), int(ci.num_pending or 0)
            except NotFoundError:
                pass
            out.append(
                StreamStatus(shard_id, subject, int(counts.get(subject, 0)), group, pending, lag)
            )
        return out


@wisp.hookimpl
def wisp_config_sections() -> dict[str, type[Any]]:
    return {"nats": NatsConfig}


@wisp.hookimpl(optionalhook=True)  # the eventstream plugin may be blocked
def wisp_event_transport(app: wisp.Wisp) -> NatsTransport | None:
    events: Any = app.config.section("events")
    if events.transport != "nats":
        return None
    return NatsTransport(app.config.section(NatsConfig))
