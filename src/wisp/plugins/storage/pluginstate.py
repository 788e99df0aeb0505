"""The ``plugin_state`` service: per-guild enable/disable and health of each plugin."""

from __future__ import annotations

from collections.abc import Callable

import attrs
from sqlalchemy import select

import wisp
from wisp.plugins.storage.database import Database
from wisp.plugins.storage.guilddata import upsert
from wisp.plugins.storage.models import PluginState, utcnow

__all__ = ["PluginStateService", "PluginStatus"]


@attrs.frozen
class PluginStatus:
    """A plugin's state in one guild; ``stored`` is false for the default."""

    plugin: str
    guild_id: int
    enabled: bool
    degraded: bool = False
    last_error: str | None = None
    version: str | None = None
    stored: bool = False


class PluginStateService(wisp.BaseService):
    """Whether each plugin is enabled per guild, defaulting to its ``default_enabled``.

    Reads are cached per (plugin, guild) in this process; a write through this
    service updates the cache at once.
    """

    name = "plugin_state"
    requires = ("db", "migrations")

    def __init__(self, db: Database, default_enabled: Callable[[str], bool]) -> None:
        super().__init__()
        self.db = db
        self.default_enabled = default_enabled
        self._cache: dict[tuple[str, int], bool] = {}

    def invalidate(self) -> None:
        """Forget cached switches (after an import wrote plugin_states directly)."""
        self._cache.clear()

    async def is_enabled(self, plugin: str, guild_id: int) -> bool:
        key = (plugin, guild_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        status = await self.get(plugin, guild_id)
        self._cache[key] = status.enabled
        return status.enabled

    async def get(self, plugin: str, guild_id: int) -> PluginStatus:
        async with self.db.session() as s:
            row = await s.get(PluginState, (plugin, guild_id))
        if row is None:
            return PluginStatus(plugin, guild_id, self.default_enabled(plugin))
        return PluginStatus(
            plugin, guild_id, row.enabled, row.degraded, row.last_error, row.version, stored=True
        )

    async def list(self, guild_id: int) -> list[PluginStatus]:
        """Stored states for a guild, by plugin name."""
        async with self.db.session() as s:
            rows = await s.scalars(
                select(PluginState)
                .where(PluginState.guild_id == guild_id)
                .order_by(PluginState.plugin)
            )
            return [
                PluginStatus(
                    r.plugin,
                    r.guild_id,
                    r.enabled,
                    r.degraded,
                    r.last_error,
                    r.version,
                    stored=True,
                )
                for r in rows
            ]

    async def set_enabled(self, plugin: str, guild_id: int, enabled: bool) -> None:
        await self._upsert(plugin, guild_id, enabled=enabled)
        self._cache[(plugin, guild_id)] = enabled

    async def mark_degraded(self, plugin: str, guild_id: int, error: str | None) -> None:
        """Record that a plugin misbehaves in a guild (``error=None`` clears it)."""
        await self._upsert(plugin, guild_id, degraded=error is not None, last_error=error)

    async def _upsert(self, plugin: str, guild_id: int, **values: object) -> None:
        now = utcnow()
        insert_values = {
            "enabled": self.default_enabled(plugin),
            "degraded": False,
            **values,
            "plugin": plugin,
            "guild_id": guild_id,
            "updated_at": now,
        }
        stmt = upsert(self.db.dialect, PluginState.__table__).values(**insert_values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["plugin", "guild_id"], set_={**values, "updated_at": now}
        )
        async with self.db.transaction() as s:
            await s.execute(stmt)
