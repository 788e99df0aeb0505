"""The cache's public face: the backend protocol and the errors.

Importing it never registers a plugin.  Bot code uses the ``cache`` service
(``ctx.service("cache")``, a :class:`wisp.plugins.cache.service.CacheService`).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CacheBackend", "CacheError"]


class CacheError(ValueError):
    """A value cannot be cached (not JSON-able) or read back as the asked type."""


class CacheBackend(Protocol):
    """Where serialized values live.  Values are JSON text; ``ttl`` is in seconds."""

    async def get(self, key: str) -> str | None: ...
    async def set(self, key: str, value: str, ttl: float | None) -> None: ...
    async def delete(self, key: str) -> bool: ...
    async def clear(self) -> int: ...
