"""``[cluster]``: which shards this process runs, and how processes coordinate."""

from __future__ import annotations

import re
from typing import Any

import attrs

from wisp.config import not_negative, positive

__all__ = ["ClusterConfig", "parse_range"]

_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")


def parse_range(text: str, what: str = "shards") -> tuple[int, int]:
    """``"4-7"`` -> ``(4, 7)`` (inclusive); ``"5"`` -> ``(5, 5)``.  A ``ValueError``
    names the text and says what is wrong (``9-4`` runs backwards)."""
    match = _RANGE.match(text)
    if match is None:
        raise ValueError(f"{what} {text!r} is not a shard range like 4-7 (first-last, inclusive)")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) is not None else first
    if last < first:
        raise ValueError(f"{what} {text!r} runs backwards: write {last}-{first}")
    return first, last


def _range(_: Any, attribute: attrs.Attribute[Any], value: str | None) -> None:
    if value is not None:
        parse_range(value)


@attrs.frozen
class ClusterConfig:
    """``[cluster]``; see docs/scaling-out.md."""

    #: On or off; unset: on when wisp.toml has a ``[cluster]`` table (or
    #: ``WISP_CLUSTER__*`` variables are set) or ``wisp run --shards`` is given.
    enabled: bool | None = None
    #: Total shards; unset: Discord's recommendation (GET /gateway/bot) when the
    #: first generation is written.  Must match the active generation.
    shard_count: int | None = attrs.field(default=None, validator=positive)
    #: Shards per range (one process runs one range); unset: all shards in one range.
    range_size: int | None = attrs.field(default=None, validator=positive)
    #: IDENTIFY buckets; unset: Discord's ``max_concurrency`` (GET /gateway/bot).
    max_concurrency: int | None = attrs.field(default=None, validator=positive)
    #: Static ownership: the shards this process runs, like ``"4-7"`` (also ``--shards``).
    shards: str | None = attrs.field(default=None, validator=_range)
    #: Static ownership by ordinal: this process runs range number ``ordinal``.
    ordinal: int | None = attrs.field(default=None, validator=not_negative)
    #: Read the ordinal from this environment variable's trailing ``-N`` (a
    #: Kubernetes StatefulSet pod name such as ``bot-2``; e.g. ``POD_NAME``).
    ordinal_env: str | None = None
    #: The generation this process joins (also ``--generation``); unset: the active one.
    generation: int | None = attrs.field(default=None, validator=positive)
    #: Seconds a range lease lives unless renewed (renewed every third of it).
    lease_ttl: float = attrs.field(default=15.0, validator=positive)
    #: How often a standby looks for a free range.
    standby_poll: float = attrs.field(default=1.0, validator=positive)
    #: How often a process writes its shard states to Redis and reads the plan.
    heartbeat_seconds: float = attrs.field(default=5.0, validator=positive)
    #: Seconds one IDENTIFY holds its bucket (Discord: 5).
    identify_window: float = attrs.field(default=5.0, validator=positive)
    #: Seconds added to the window against network and scheduling jitter.
    identify_margin: float = attrs.field(default=0.5, validator=not_negative)
    #: Session starts to leave unspent: refuse to start when fewer would remain.
    session_reserve: int = attrs.field(default=0, validator=not_negative)
    #: Seconds an event's identity is remembered while two generations overlap.
    dedup_ttl: float = attrs.field(default=60.0, validator=positive)
    #: Seconds ``wisp cluster query`` waits for the answers.
    query_timeout: float = attrs.field(default=5.0, validator=positive)
    #: Prefix of Redis keys and channels (bots sharing a Redis use different ones).
    prefix: str = "wisp:cluster:"

    def __attrs_post_init__(self) -> None:
        if self.shards is not None and (self.ordinal is not None or self.ordinal_env):
            raise ValueError("give shards or ordinal/ordinal_env, not both")
        if self.shards is not None and self.shard_count is not None:
            last = parse_range(self.shards)[1]
            if last >= self.shard_count:
                raise ValueError(
                    f"shards {self.shards!r} go beyond shard_count {self.shard_count} "
                    f"(ids are 0-{self.shard_count - 1})"
                )
