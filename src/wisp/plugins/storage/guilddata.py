"""The ``guild_data`` service: namespaced JSON values per guild, atomic upserts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite

import wisp
from wisp.plugins.storage.database import Database
from wisp.plugins.storage.models import GuildData, utcnow

__all__ = ["GuildDataService", "NamespacedGuildData"]


def upsert(dialect: str, table: Any) -> Any:
    """``INSERT ... ON CONFLICT`` for the dialect at hand (SQLite or PostgreSQL)."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"no upsert for dialect {dialect!r}")


class GuildDataService(wisp.BaseService):
    """Key/value storage per guild and namespace (by convention, the plugin's name)."""

    name = "guild_data"
    requires = ("db", "migrations")

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db

    def namespace(self, namespace: str) -> NamespacedGuildData:
        """A view bound to one namespace, for a plugin to keep."""
        return NamespacedGuildData(self, namespace)

    async def get(self, guild_id: int, namespace: str, key: str, default: Any = None) -> Any:
        """The stored value (JSON ``null`` included), or ``default`` if the key is absent."""
        async with self.db.session() as s:
            row = await s.get(GuildData, (guild_id, namespace, key))
            return default if row is None else row.value

    async def set(self, guild_id: int, namespace: str, key: str, value: Any) -> None:
        """Insert or replace in one statement: concurrent writers never collide."""
        now = utcnow()
        stmt = upsert(self.db.dialect, GuildData.__table__).values(
            guild_id=guild_id, namespace=namespace, key=key, value=value, updated_at=now
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["guild_id", "namespace", "key"],
            set_={"value": stmt.excluded.value, "updated_at": now},
        )
        async with self.db.transaction() as s:
            await s.execute(stmt)

    async def delete(self, guild_id: int, namespace: str, key: str) -> bool:
        """Delete one key; return whether it existed."""
        async with self.db.transaction() as s:
            result = await s.execute(
                delete(GuildData).where(
                    GuildData.guild_id == guild_id,
                    GuildData.namespace == namespace,
                    GuildData.key == key,
                )
            )
            return bool(getattr(result, "rowcount", 0))

    async def get_all(self, guild_id: int, namespace: str) -> dict[str, Any]:
        async with self.db.session() as s:
            rows = await s.execute(
                select(GuildData.key, GuildData.value)
                .where(GuildData.guild_id == guild_id, GuildData.namespace == namespace)
                .order_by(GuildData.key)
            )
            return {k: v for k, v in rows}


class NamespacedGuildData:
    """:class:`GuildDataService` with the namespace filled in."""

    def __init__(self, service: GuildDataService, namespace: str) -> None:
        self.service = service
        self.name = namespace

    async def get(self, guild_id: int, key: str, default: Any = None) -> Any:
        return await self.service.get(guild_id, self.name, key, default)

    async def set(self, guild_id: int, key: str, value: Any) -> None:
        await self.service.set(guild_id, self.name, key, value)

    async def delete(self, guild_id: int, key: str) -> bool:
        return await self.service.delete(guild_id, self.name, key)

    async def get_all(self, guild_id: int) -> dict[str, Any]:
        return await self.service.get_all(guild_id, self.name)
