"""The Redis backend: one string key per entry, expiry by Redis itself (``PX``)."""

from __future__ import annotations

from typing import Any

__all__ = ["RedisBackend"]


class RedisBackend:
    """Values shared by every process on one Redis; ``prefix`` keeps bots apart."""

    def __init__(self, client: Any, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def get(self, key: str) -> str | None:
        value = await self.client.get(self.prefix + key)
        if value is None:
            return None
        return value.decode() if isinstance(value, bytes) else str(value)

    async def set(self, key: str, value: str, ttl: float | None) -> None:
        px = None if ttl is None else max(1, round(ttl * 1000))
        await self.client.set(self.prefix + key, value, px=px)

    async def delete(self, key: str) -> bool:
        return bool(await self.client.delete(self.prefix + key))

    async def clear(self) -> int:
        """Delete every key under the prefix (SCAN, never KEYS)."""
        removed = 0
        batch: list[Any] = []
        async for key in self.client.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
            batch.append(key)
            if len(batch) >= 500:
                removed += await self.client.delete(*batch)
                batch = []
        if batch:
            removed += await self.client.delete(*batch)
        return removed


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
