"""The ``db`` service: one async SQLAlchemy engine, sessions, health."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from loguru import logger
from sqlalchemy import event, text
from sqlalchemy.engine import ExceptionContext, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

import wisp
from wisp.plugins.storage.config import StorageConfig

__all__ = ["EMBEDDED_FILE", "Database"]

EMBEDDED_FILE = "wisp.sqlite3"


class Database(wisp.BaseService):
    """The database every storage-backed plugin shares.

    SQLite runs in WAL mode with foreign keys on and a busy timeout, so
    concurrent writers wait instead of failing.
    """

    name = "db"

    def __init__(self, config: StorageConfig, rootdir: Path) -> None:
        super().__init__()
        self.config = config
        self.embedded = not config.url
        url = make_url(config.url or f"sqlite+aiosqlite:///{rootdir / EMBEDDED_FILE}")
        if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
            # A relative SQLite path means the project directory, not the shell's.
            url = url.set(database=str((rootdir / url.database).resolve()))
        self.url = url.render_as_string(hide_password=False)
        self._engine: AsyncEngine | None = None
        self._sessions: async_sessionmaker[AsyncSession] | None = None

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @property
    def display_url(self) -> str:
        """The URL with its password hidden, for logs and ``wisp doctor``."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            raise RuntimeError("the db service is not started")
        return self._engine

    def make_engine(self, *, pre_ping: bool = True, pool_size: int | None = None) -> AsyncEngine:
        """Build the engine (not connected yet); the CLI uses it without starting.

        ``pre_ping=False`` (with a ``pool_size``) makes a separate pool for a hot
        path that retries a statement meeting a dropped connection itself,
        rather than paying a round trip on every checkout.
        """
        cfg = self.config
        if self.dialect == "sqlite":
            path = make_url(self.url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs: dict[str, Any] = {"echo": cfg.echo, "pool_pre_ping": pre_ping}
        connect_args: dict[str, Any] = {}
        if self.dialect == "sqlite":
            connect_args["timeout"] = cfg.sqlite_busy_timeout
        else:
            kwargs.update(
                pool_size=pool_size or cfg.pool_size,
                max_overflow=0 if pool_size else cfg.max_overflow,
                pool_timeout=cfg.pool_timeout,
            )
            if cfg.schema:
                connect_args["server_settings"] = {"search_path": cfg.schema}
        engine = create_async_engine(self.url, connect_args=connect_args, **kwargs)
        if self.dialect == "postgresql":
            event.listen(engine.sync_engine, "handle_error", _asyncpg_out_of_step)
        if self.dialect == "sqlite":
            busy_ms = int(cfg.sqlite_busy_timeout * 1000)

            @event.listens_for(engine.sync_engine, "connect")
            def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
                # The driver would otherwise open transactions itself, and not
                # before DDL: take over, so a failed migration rolls back whole.
                dbapi_conn.isolation_level = None
                cursor = dbapi_conn.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.close()

            @event.listens_for(engine.sync_engine, "begin")
            def _sqlite_begin(conn: Any) -> None:
                conn.exec_driver_sql("BEGIN")

        return engine

    async def start(self) -> None:
        self._engine = self.make_engine()
        self._sessions = async_sessionmaker(self._engine, expire_on_commit=False)
        try:
            async with self._engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            await self._engine.dispose()
            self._engine = None
            raise
        logger.debug("database {} connected", self.display_url)
        await super().start()

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None
        await super().stop()

    def session(self) -> AsyncSession:
        """A new session; use ``async with db.session() as s, s.begin(): ...``."""
        if self._sessions is None:
            raise RuntimeError("the db service is not started")
        return self._sessions()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.session() as session, session.begin():
            yield session

    async def health(self) -> wisp.Health:
        if self._engine is None:
            return wisp.Health(False, "not started")
        async with self._engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        return wisp.Health(True, f"{self.dialect} at {self.display_url}")


def _asyncpg_out_of_step(ctx: ExceptionContext) -> None:
    """A backend the server ended (``pg_terminate_backend``, a restart) can leave
    asyncpg's protocol out of step before it sees the socket close: the next
    statement fails with ``InternalClientError: cannot switch to state ...``
    (MagicStack/asyncpg#1069), which SQLAlchemy does not take for a disconnect.
    Call it one, so the connection is thrown away, not pooled again, and
    callers that retry on a dropped connection do."""
    exc: BaseException | None = ctx.original_exception
    while exc is not None:
        if type(exc).__name__ == "InternalClientError" and "cannot switch to state" in str(exc):
            ctx.is_disconnect = True
            return
        exc = exc.__cause__
