"""``[locks]``: which backend holds the locks, and its defaults."""

from __future__ import annotations

from typing import Literal

import attrs

from wisp.config import positive

__all__ = ["LocksConfig"]


@attrs.frozen
class LocksConfig:
    """``[locks]``."""

    #: "auto": Redis when the redis plugin has a URL, else PostgreSQL when the
    #: storage plugin's database is PostgreSQL, else in-process ("memory").
    backend: Literal["auto", "memory", "redis", "sql"] = "auto"
    #: Prefix of Redis keys and channels, and part of PostgreSQL advisory keys
    #: (bots sharing one Redis or database use different ones).
    prefix: str = "wisp:locks:"
    #: Lease length when ``acquire`` is given no ``ttl``.
    default_ttl: float = attrs.field(default=30.0, validator=positive)
    #: Longest a waiter sleeps before looking again when no release woke it (a
    #: lost wake-up, or a holder that died and whose lease ran out).
    recheck_seconds: float = attrs.field(default=1.0, validator=positive)
    #: PostgreSQL: connections this process keeps for held locks and waiters.
    sql_pool_size: int = attrs.field(default=10, validator=positive)
