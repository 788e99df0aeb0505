"""``[cache]``: which backend holds cached values, and its bounds."""

from __future__ import annotations

from typing import Literal

import attrs

from wisp.config import positive

__all__ = ["CacheConfig"]


@attrs.frozen
class CacheConfig:
    """``[cache]``."""

    #: "memory": this process, LRU-bounded; "redis": the redis plugin's server, shared.
    backend: Literal["memory", "redis"] = "memory"
    #: The memory backend keeps at most this many entries, dropping the least recently used.
    max_entries: int = attrs.field(default=10_000, validator=positive)
    #: Seconds a value lives when ``set`` gives no ``ttl``; unset: until evicted or deleted.
    default_ttl: float | None = attrs.field(default=None, validator=positive)
    #: Prefix of the Redis backend's keys (bots sharing one Redis use different ones).
    redis_prefix: str = "wisp:cache:"
    #: When Redis fails a read or a write: "miss" logs it and goes on as if the key
    #: were absent (``get_or_set`` computes); "raise" lets the error through.
    #: ``delete`` and ``clear`` always raise: a stale value must not stay unnoticed.
    on_redis_error: Literal["miss", "raise"] = "miss"
