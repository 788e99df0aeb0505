"""What transports implement and other plugins import; importing it registers nothing.

A transport carries raw Discord dispatches from gateway processes to worker
processes.  Each transport is its own plugin and answers the
``wisp_event_transport`` hook (firstresult) when ``[events] transport`` names
it.  Delivery is **at least once**: a worker that dies after handling an event
but before its ack makes another worker handle it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "Delivery",
    "EventTransport",
    "StreamStatus",
    "TransportError",
    "shard_of",
]


class TransportError(RuntimeError):
    """The transport is misconfigured or unreachable; the message names which."""


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """Discord's rule: a guild lives on shard ``(guild_id >> 22) % shard_count``;
    direct messages arrive on shard 0."""
    if guild_id is None or shard_count <= 1:
        return 0
    return (guild_id >> 22) % shard_count


@attrs.define(slots=True)
class Delivery:
    """One dispatch handed to a worker.  ``ack()`` after handling; ``nak()`` asks
    for redelivery now (shutdown before handling)."""

    #: The transport's id for it (a Redis stream id, a JetStream sequence).
    id: str
    shard_id: int
    #: Discord's dispatch name (``MESSAGE_CREATE``).
    event: str
    #: The dispatch's ``d`` as JSON bytes.
    data: bytes
    #: When the gateway published it (``time.time()``).
    published_at: float
    #: Delivered before to a worker that did not ack (crashed or was slow).
    redelivered: bool
    _ack: Callable[[], Awaitable[None]]
    _nak: Callable[[], Awaitable[None]]

    async def ack(self) -> None:
        await self._ack()

    async def nak(self) -> None:
        await self._nak()


@attrs.frozen
class StreamStatus:
    """One shard's stream as ``wisp events status`` shows it."""

    shard_id: int
    #: The stream (Redis key, JetStream subject).
    name: str
    #: Entries kept now (bounded by trimming).
    length: int
    group: str
    #: Delivered to a worker, not acked yet.
    pending: int
    #: Published, not delivered to the group yet (``None``: unknown).
    lag: int | None
    #: Workers seen by the transport for this group and stream.
    consumers: tuple[str, ...] = ()


@runtime_checkable
class EventTransport(Protocol):
    """A stream per shard, consumer groups per worker pool, a guild snapshot store
    and leases (one owner per shard stream, so a guild's events stay in order)."""

    #: Its name in ``[events] transport``.
    name: str

    async def start(self) -> None:
        """Connect; fail with :class:`TransportError` saying what is wrong."""
        ...

    async def close(self) -> None:
        """Flush what was published, then disconnect."""
        ...

    def publish(self, shard_id: int, event: str, data: bytes) -> None:
        """Queue one dispatch (never blocks: the gateway's reader calls it); a
        background task sends queued ones in batches."""
        ...

    async def flush(self) -> None:
        """Wait until everything queued so far is stored."""
        ...

    def consume(self, group: str, consumer: str, shard_id: int) -> AsyncIterator[Delivery]:
        """This consumer's deliveries from one shard's stream, oldest first: first what
        a crashed consumer of ``group`` left unacked, then new ones."""
        ...

    async def put_guild(self, guild_id: int, data: bytes | None) -> None:
        """Store (``None``: delete) the gateway's snapshot of a guild (GUILD_CREATE JSON)."""
        ...

    async def get_guild(self, guild_id: int) -> bytes | None:
        """The stored snapshot of a guild, if any."""
        ...

    async def lease(self, group: str, name: str, owner: str, seconds: float) -> bool:
        """Take or renew lease ``name`` for ``owner``; False when another holds it."""
        ...

    async def release(self, group: str, name: str, owner: str) -> None:
        """Give lease ``name`` up if ``owner`` holds it."""
        ...

    async def holders(self, group: str) -> dict[str, str]:
        """Live leases of ``group``: name -> owner."""
        ...

    async def status(self, group: str, shards: Sequence[int]) -> list[StreamStatus]:
        """Each shard stream: length, pending and lag for ``group``."""
        ...
