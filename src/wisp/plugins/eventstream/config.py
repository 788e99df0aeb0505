"""``[events]``: whether this bot splits gateway and handlers, and how."""

from __future__ import annotations

from typing import Any, Literal

import attrs

from wisp.config import positive

__all__ = ["DEFAULT_EVENTS", "EventsConfig"]

#: Dispatches published by default: those Wisp's event router and commands use
#: and that need no gateway state to rebuild (guild lifecycle events stay local).
DEFAULT_EVENTS = (
    "MESSAGE_CREATE",
    "MESSAGE_UPDATE",
    "MESSAGE_DELETE",
    "MESSAGE_REACTION_ADD",
    "MESSAGE_REACTION_REMOVE",
    "GUILD_MEMBER_ADD",
    "GUILD_MEMBER_REMOVE",
    "GUILD_MEMBER_UPDATE",
    "INTERACTION_CREATE",
)

#: Dispatches that may be published: they need only a guild snapshot to rebuild.
PUBLISHABLE = frozenset(
    {
        *DEFAULT_EVENTS,
        "TYPING_START",
        "MESSAGE_DELETE_BULK",
        "MESSAGE_REACTION_REMOVE_ALL",
        "MESSAGE_REACTION_REMOVE_EMOJI",
    }
)


def _events(_: Any, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    bad = sorted(set(value) - PUBLISHABLE)
    if bad:
        raise ValueError(
            f"cannot publish {', '.join(bad)}; publishable: {', '.join(sorted(PUBLISHABLE))}"
        )


def _name(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value or not all(c.isalnum() or c in "-_" for c in value):
        raise ValueError(f"{value!r}: use letters, digits, '-' and '_'")


@attrs.frozen
class EventsConfig:
    """``[events]``."""

    #: "local": handle events in the gateway process (no transport).  "publish":
    #: ``wisp run`` publishes the dispatches in ``events`` instead of handling
    #: them.  "consume": ``wisp run`` runs a worker (like ``wisp events work``).
    mode: Literal["local", "publish", "consume"] = "local"
    #: The transport plugin: "redis" (plugin ``redisstreams``) or "nats" (plugin ``nats``).
    transport: str = "redis"
    #: The worker pool: workers of one group share the streams, each event goes to one.
    group: str = attrs.field(default="workers", validator=_name)
    #: Dispatch names to publish (Discord's, such as ``MESSAGE_CREATE``).
    events: list[str] = attrs.field(factory=lambda: list(DEFAULT_EVENTS), validator=_events)
    #: Shard streams (unset: ``[discord] shard_count``, else 1).  Workers and
    #: gateways of one bot must agree.
    shard_count: int | None = attrs.field(default=None, validator=positive)
    #: Seconds a worker's claim on a shard stream lasts unless renewed; a crashed
    #: worker's shards (and their unacked events) go to another after this.
    lease_seconds: float = attrs.field(default=10.0, validator=positive)
    #: Events a worker handles at once (different guilds run concurrently, one
    #: guild's events one after another).
    max_inflight: int = attrs.field(default=256, validator=positive)
    #: Seconds a worker reuses a guild snapshot before reading it again.
    guild_refresh: float = attrs.field(default=60.0, validator=positive)
