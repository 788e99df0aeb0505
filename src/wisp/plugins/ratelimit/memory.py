"""In-process GCRA buckets: bounded, monotonic, and all-or-nothing across buckets."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence

from wisp.plugins.ratelimit.limits import Limit

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """Theoretical arrival times per bucket, least recently used evicted first.

    No lock: between reading and writing the buckets there is no ``await``,
    so on one event loop a check is atomic.  A call is allowed while its bucket's
    arrival time is at most ``period - interval`` (the burst) ahead of now,
    compared as that difference: ``now + 60 - 60`` is not always ``now`` in
    floating point, and a fresh ``1/60s`` bucket once refused its first call.
    """

    def __init__(self, max_keys: int = 100_000, clock: object = time.monotonic) -> None:
        self.max_keys = max_keys
        self._clock = clock
        self._tat: OrderedDict[str, float] = OrderedDict()

    async def hit(self, buckets: Sequence[tuple[str, Limit]]) -> float:
        """Take one call from every bucket, or from none: 0.0, or seconds to wait."""
        now: float = self._clock()  # type: ignore[operator]
        tat = self._tat
        if len(buckets) == 1:  # the common case, without the all-or-nothing bookkeeping
            name, limit = buckets[0]
            current = tat.get(name, now)
            base = current if current > now else now
            early = (base - now) - (limit.period - limit.interval)
            if early > 0.0:
                return early
            tat[name] = base + limit.interval
            tat.move_to_end(name)
            if len(tat) > self.max_keys:
                tat.popitem(last=False)
            return 0.0
        updates = []
        wait = 0.0
        for name, limit in buckets:
            interval = limit.interval
            current = tat.get(name, now)
            base = current if current > now else now
            early = (base - now) - (limit.period - interval)
            if early > 0.0:
                wait = max(wait, early)
            updates.append((name, base + interval))
        if wait > 0.0:
            return wait  # rejected: no bucket pays for it
        for name, new in updates:
            tat[name] = new
            tat.move_to_end(name)
        while len(tat) > self.max_keys:
            tat.popitem(last=False)
        return 0.0

    async def close(self) -> None:
        return None
