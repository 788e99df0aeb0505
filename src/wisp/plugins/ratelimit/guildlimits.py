"""Per-guild limit overrides, kept in ``guild_data`` and cached in memory.

A guild's override for a command replaces the command's limits in that guild
only (an empty list lifts them).  Overrides are read once per guild and kept
for ``guild_cache_seconds``; a write through this process takes effect at
once, other processes see it when their copy expires.
"""

from __future__ import annotations

import time
from typing import Any

from wisp.plugins.ratelimit.limits import Limit, LimitError, parse_limit

__all__ = ["NAMESPACE", "GuildLimits", "parse_specs"]

#: The ``guild_data`` namespace: one key per command, a list of limit specs.
NAMESPACE = "ratelimit"


def parse_specs(specs: list[str]) -> list[Limit]:
    """Parse every spec; the first bad one raises :class:`LimitError` naming it."""
    return [parse_limit(spec) for spec in specs]


class GuildLimits:
    """Overrides per guild: ``{command: [Limit, ...]}``, cached with an expiry."""

    def __init__(self, guild_data: Any, ttl: float, clock: Any = time.monotonic) -> None:
        self._store = guild_data
        self._ttl = ttl
        self._clock = clock
        self._cache: dict[int, tuple[float, dict[str, list[Limit]]]] = {}

    def cached(self, guild_id: int) -> dict[str, list[Limit]] | None:
        """The guild's overrides if this process read them recently, else None:
        the per-command path, with no await when they are fresh."""
        entry = self._cache.get(guild_id)
        if entry is not None and entry[0] > self._clock():
            return entry[1]
        return None

    async def for_guild(self, guild_id: int) -> dict[str, list[Limit]]:
        found = self.cached(guild_id)
        if found is not None:
            return found
        raw = await self._store.get_all(guild_id, NAMESPACE)
        parsed: dict[str, list[Limit]] = {}
        for command, specs in raw.items():
            try:
                parsed[command] = parse_specs(list(specs))
            except (LimitError, TypeError):
                # Stored by an older version or by hand: keep the command's own
                # limits rather than failing every call in the guild.
                continue
        self._cache[guild_id] = (self._clock() + self._ttl, parsed)
        return parsed

    async def set(self, guild_id: int, command: str, specs: list[str]) -> list[Limit]:
        limits = parse_specs(specs)
        await self._store.set(guild_id, NAMESPACE, command, [str(x) for x in limits])
        self._cache.pop(guild_id, None)
        return limits

    async def reset(self, guild_id: int, command: str) -> bool:
        removed: bool = await self._store.delete(guild_id, NAMESPACE, command)
        self._cache.pop(guild_id, None)
        return removed
