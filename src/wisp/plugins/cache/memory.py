"""The memory backend: an LRU dict with per-entry expiry, bounded by entries."""

from __future__ import annotations

import time
from collections import OrderedDict

__all__ = ["MemoryBackend"]


class MemoryBackend:
    """One process's cache.  ``max_entries`` bounds memory: the least recently
    used entry goes first.  Expired entries are dropped when read, and when
    the bound is reached."""

    def __init__(self, max_entries: int, clock: object = time.monotonic) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._clock = clock
        self._data: OrderedDict[str, tuple[float | None, str]] = OrderedDict()
        self.evictions = 0

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator,no-any-return]

    async def get(self, key: str) -> str | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires is not None and expires <= self._now():
            del self._data[key]
            return None
        self._data.move_to_end(key)
        return value

    async def set(self, key: str, value: str, ttl: float | None) -> None:
        expires = None if ttl is None else self._now() + ttl
        self._data[key] = (expires, value)
        self._data.move_to_end(key)
        if len(self._data) > self.max_entries:
            self._drop_expired()
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
            self.evictions += 1

    def _drop_expired(self) -> None:
        now = self._now()
        for key in [k for k, (exp, _) in self._data.items() if exp is not None and exp <= now]:
            del self._data[key]

    async def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    async def clear(self) -> int:
        n = len(self._data)
        self._data.clear()
        return n

    def __len__(self) -> int:
        return len(self._data)
