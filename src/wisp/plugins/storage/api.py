"""What other plugins import to persist through the storage plugin.

Declare tables on :class:`Model` (one shared metadata with a naming
convention, so constraint names and migrations are stable), return them with
their migrations folder from ``wisp_storage_models``, and reach the database
through the ``db`` service.  Importing this module never registers the
storage plugin: blocking it leaves this import working.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from sqlalchemy import JSON, MetaData, Table
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator, TypeEngine

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "NAMING_CONVENTION",
    "ExportSection",
    "JSONDocument",
    "Model",
    "ModelSet",
    "SectionProblem",
    "branch_name",
]

#: Constraint names derived from table and column names, as Alembic recommends.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JSONDocument(TypeDecorator[Any]):
    """JSON on SQLite, JSONB on PostgreSQL; renders cleanly in migrations."""

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


class Model(DeclarativeBase):
    """Declarative base of every Wisp table: one metadata, named constraints."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_BRANCH = re.compile(r"[^A-Za-z0-9_]+")


def branch_name(plugin: str) -> str:
    """The Alembic branch label for a plugin name (``bot/x.py`` -> ``bot_x_py``)."""
    return _BRANCH.sub("_", plugin).strip("_") or "plugin"


@attrs.frozen
class ModelSet:
    """A plugin's tables and the folder its Alembic migrations live in.

    ``branch`` defaults to the plugin's registered name (made label-safe).
    """

    models: Sequence[type[Model] | Table]
    migrations: Path
    branch: str | None = None

    def tables(self) -> list[Table]:
        out = []
        for m in self.models:
            table = m if isinstance(m, Table) else m.__table__
            if not isinstance(table, Table):
                raise TypeError(f"{m!r} has no table")
            out.append(table)
        return out


@attrs.frozen
class SectionProblem:
    """One thing wrong in an import document, at a JSON path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@attrs.frozen
class ExportSection:
    """One named part of ``wisp export`` / ``wisp import`` documents.

    ``dump(session, guild_id)`` returns JSON-ready rows (``guild_id`` ``None``
    means every guild), in a stable order; ``validate(rows, path)`` returns every
    problem without touching the database (``guild_id`` is the document's:
    rows of other guilds are problems); ``load(session, rows, guild_id,
    loaded)`` replaces what the document covers, inside the caller's
    transaction, calling ``loaded(n)`` as rows go in (for progress).
    ``after`` names sections that must load first (foreign keys).
    """

    name: str
    dump: Callable[[AsyncSession, int | None], Awaitable[list[dict[str, Any]]]]
    validate: Callable[[list[Any], str, int | None], list[SectionProblem]]
    load: Callable[
        [AsyncSession, list[dict[str, Any]], int | None, Callable[[int], None]], Awaitable[None]
    ]
    after: tuple[str, ...] = ()
