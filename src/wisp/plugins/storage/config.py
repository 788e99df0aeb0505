"""``[storage]`` in wisp.toml."""

from __future__ import annotations

from typing import Any

import attrs

from wisp.config import not_negative, positive


def _url(_: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if value and not value.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
        raise ValueError(
            "must start with sqlite+aiosqlite:// or postgresql+asyncpg:// (async drivers)"
        )


@attrs.frozen
class StorageConfig:
    """Where the database is and how to pool connections to it."""

    #: SQLAlchemy URL; empty means the embedded default, ``wisp.sqlite3`` in the
    #: project directory.
    url: str = attrs.field(
        default="", validator=_url, metadata={"env": "WISP_DATABASE_URL", "secret": True}
    )
    #: PostgreSQL schema for every table (sets ``search_path``); empty: the default.
    schema: str = ""
    pool_size: int = attrs.field(default=5, validator=positive)
    max_overflow: int = attrs.field(default=10, validator=not_negative)
    pool_timeout: float = attrs.field(default=30.0, validator=positive)
    #: Seconds a SQLite writer waits for a lock before failing.
    sqlite_busy_timeout: float = attrs.field(default=30.0, validator=positive)
    echo: bool = False
    #: Apply pending migrations at start-up.  Unset: only on the embedded default.
    auto_migrate: bool | None = None
