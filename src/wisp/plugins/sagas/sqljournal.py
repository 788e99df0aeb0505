"""The saga journal in the storage plugin's database: SQLite or PostgreSQL.

Every fenced write is one ``UPDATE saga_runs ... WHERE id = ? AND token = ?
AND status NOT IN (terminal)``: atomic on both databases, no lock held past
the statement, and a stale owner's write matches no row.  Statements run on a
connection of their own in autocommit mode on PostgreSQL (one round trip, no
BEGIN/COMMIT) and in a short transaction on SQLite.  Lease times come from
PostgreSQL's ``now()`` (one clock for every machine); SQLite lives on one
machine and uses its clock.

With ``sync_progress = false`` an owner's progress writes on PostgreSQL
(``save`` short of a final state, ``heartbeat``) commit with
``synchronous_commit = off``: they do not wait for the WAL flush (about 3 ms
each on a plain disk).  Creating, claiming, releasing and finishing a run
always wait.  A PostgreSQL crash can then forget the last moments of
progress (``wal_writer_delay``, three times over at most), always a
consistent prefix: the runs concerned are taken over again and re-run the
steps (or compensations) whose outcome was forgotten, as if their process
had died just before writing it.  The default waits for every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
from sqlalchemy import (
    Float,
    Table,
    and_,
    bindparam,
    case,
    delete,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from wisp.plugins.sagas.api import TERMINAL, Run, RunStatus, StepRecord
from wisp.plugins.sagas.models import SagaRunRow

__all__ = ["SQLJournal"]

T: Table = SagaRunRow.__table__  # type: ignore[assignment]
#: Connections of each kind a PostgreSQL journal keeps open at most.
POOL = 4
_TERMINAL = sorted(s.value for s in TERMINAL)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _run(row: Any) -> Run:
    return Run(
        id=row.id,
        saga=row.saga,
        version=row.version,
        key=row.key,
        input=row.input,
        status=RunStatus(row.status),
        steps=[StepRecord.from_json(s) for s in row.steps],
        error=row.error,
        cancel=bool(row.cancel),
        owner=row.owner,
        token=row.token,
        lease_expires_at=_utc(row.lease_expires_at),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        finished_at=_utc(row.finished_at),
    )


class SQLJournal:
    """:class:`~wisp.plugins.sagas.api.SagaJournal` on the ``db`` service."""

    def __init__(self, db: Any, *, sync_progress: bool = True) -> None:
        self.db = db
        self.pg = db.dialect == "postgresql"
        self.sync_progress = sync_progress
        self._engine: Any = None
        # Per kind (False: durable, True: progress): idle connections, how
        # many are open, and an event set whenever one is given back.
        self._idle: dict[bool, list[Any]] = {False: [], True: []}
        self._open = {False: 0, True: 0}
        self._freed = {False: asyncio.Event(), True: asyncio.Event()}
        self._stmts = self._statements()

    # -- clock ---------------------------------------------------------------------

    def _now(self) -> Any:
        return func.now() if self.pg else literal(datetime.now(UTC), SagaRunRow.created_at.type)

    def _in(self, seconds: float) -> Any:
        if self.pg:
            return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
        return literal(datetime.now(UTC) + timedelta(seconds=seconds), SagaRunRow.created_at.type)

    # -- execution -----------------------------------------------------------------

    async def _connection(self, *, progress: bool) -> Any:
        """A connection of our own, opened once and kept: autocommit on
        PostgreSQL (``synchronous_commit = off`` for ``progress`` writes unless
        ``sync_progress``), the one connection on SQLite."""
        if self._engine is None:
            self._engine = self.db.make_engine(pre_ping=False)
        conn = await self._engine.connect()
        if self.pg:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            if progress and not self.sync_progress:
                await conn.exec_driver_sql("SET synchronous_commit TO off")
        return conn

    async def _execute(self, stmt: Any, params: Any = None, *, progress: bool = False) -> Any:
        """Run one statement alone and return its result, fully read.

        PostgreSQL: in autocommit (one round trip) on connections of our own,
        kept open (``POOL`` per kind, taken in turn); an owner's ``progress``
        writes on connections whose commits do not wait for the WAL flush
        unless ``sync_progress``.  SQLite: on one connection kept open, a
        statement at a time (SQLite has one writer anyway), in its own short
        transaction.
        """
        kind = progress and self.pg and not self.sync_progress
        idle = self._idle[kind]
        if not idle and self._open[kind] < (POOL if self.pg else 1):
            self._open[kind] += 1
            try:
                idle.append(await self._connection(progress=kind))
            except BaseException:
                self._open[kind] -= 1
                raise
            self._freed[kind].set()
        while not idle:
            self._freed[kind].clear()
            await self._freed[kind].wait()
        conn = idle.pop()
        try:
            done = _Done(await conn.execute(stmt, params))
            if not self.pg:
                await conn.commit()
        except BaseException:
            self._open[kind] -= 1
            self._freed[kind].set()
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            raise
        idle.append(conn)
        self._freed[kind].set()
        return done

    def _statements(self) -> dict[str, Any]:
        """The hot statements, built once: only their parameters change per call,
        so SQLAlchemy neither rebuilds nor re-keys them."""
        now = func.now() if self.pg else bindparam("b_now", type_=T.c.created_at.type)
        if self.pg:
            until = func.now() + func.make_interval(
                0, 0, 0, 0, 0, 0, bindparam("b_secs", type_=Float())
            )
        else:
            until = bindparam("b_until", type_=T.c.created_at.type)
        held = and_(
            T.c.id == bindparam("b_id"),
            T.c.token == bindparam("b_token"),
            T.c.status.not_in(_TERMINAL),
        )
        progress = {
            "status": bindparam("b_status"),
            "steps": bindparam("b_steps", type_=T.c.steps.type),
            "error": bindparam("b_error", type_=T.c.error.type),
            "updated_at": now,
        }
        insert = (postgresql.insert if self.pg else sqlite.insert)(T).values(
            id=bindparam("b_id"),
            saga=bindparam("b_saga"),
            version=bindparam("b_version"),
            key=bindparam("b_key", type_=T.c.key.type),
            input=bindparam("b_input", type_=T.c.input.type),
            status=bindparam("b_status"),
            steps=bindparam("b_steps", type_=T.c.steps.type),
            cancel=False,
            owner=bindparam("b_owner", type_=T.c.owner.type),
            token=bindparam("b_token", type_=T.c.token.type),
            lease_expires_at=until,
            created_at=now,
            updated_at=now,
        )
        return {
            "create": insert.on_conflict_do_nothing().returning(T.c.id),
            "save": update(T).where(held).values(**progress).returning(T.c.cancel),
            "finish": update(T)
            .where(held)
            .values(**progress, finished_at=now, owner=None, lease_expires_at=None)
            .returning(T.c.cancel),
            "heartbeat": update(T).where(held).values(lease_expires_at=until).returning(T.c.id),
            "get": select(T).where(T.c.id == bindparam("b_id")),
        }

    def _times(self, lease_seconds: float) -> dict[str, Any]:
        if self.pg:
            return {"b_secs": lease_seconds}
        now = datetime.now(UTC)
        return {"b_now": now, "b_until": now + timedelta(seconds=lease_seconds)}

    # -- the journal ---------------------------------------------------------------

    async def create(
        self, run: Run, lease_seconds: float, owner: str | None = None
    ) -> tuple[Run, bool]:
        token = secrets.token_hex(16) if owner else None
        status = RunStatus.RUNNING if owner else run.status
        params = {
            "b_id": run.id,
            "b_saga": run.saga,
            "b_version": run.version,
            "b_key": run.key,
            "b_input": run.input,
            "b_status": status.value,
            "b_steps": run.steps_json(),
            "b_owner": owner,
            "b_token": token,
            **self._times(lease_seconds),
        }
        done = await self._execute(self._stmts["create"], params)
        if done.row is not None:
            # Ours, as written: no read back (times are the store's; these are close).
            now = datetime.now(UTC)
            made = attrs.evolve(
                run,
                status=status,
                owner=owner,
                token=token,
                created_at=now,
                updated_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            return made, True
        mine = await self.get(run.id)
        if mine is not None:  # an insert retried after its reply was lost
            return mine, True
        # The key was taken: a separate read finds its run (a single statement
        # would miss rows under concurrency on PostgreSQL).
        found = await self._execute(select(T).where(T.c.key == run.key))
        if found.row is None:  # pragma: no cover - purged between the statements
            raise RuntimeError(f"the saga run of key {run.key!r} vanished")
        return _run(found.row), False

    async def get(self, run_id: str) -> Run | None:
        done = await self._execute(self._stmts["get"], {"b_id": run_id})
        return None if done.row is None else _run(done.row)

    async def claim(self, run_id: str, owner: str, lease_seconds: float) -> Run | None:
        now = self._now()
        stmt = (
            update(T)
            .where(
                T.c.id == run_id,
                T.c.status.not_in(_TERMINAL),
                or_(T.c.owner.is_(None), T.c.lease_expires_at < now),
            )
            .values(
                status=case(
                    (T.c.status == RunStatus.PENDING.value, RunStatus.RUNNING.value),
                    else_=T.c.status,
                ),
                owner=owner,
                token=secrets.token_hex(16),
                lease_expires_at=self._in(lease_seconds),
                updated_at=now,
            )
            .returning(*T.columns)
        )
        done = await self._execute(stmt)
        return None if done.row is None else _run(done.row)

    def _held(self, run_id: str, token: str) -> Any:
        return and_(T.c.id == run_id, T.c.token == token, T.c.status.not_in(_TERMINAL))

    async def save(self, run: Run, token: str) -> bool | None:
        params = {
            "b_id": run.id,
            "b_token": token,
            "b_status": run.status.value,
            "b_steps": run.steps_json(),
            "b_error": run.error,
            **self._times(0),
        }
        stmt = self._stmts["finish" if run.terminal else "save"]
        # A final state always waits for the flush: once seen, it never changes.
        done = await self._execute(stmt, params, progress=not run.terminal)
        return None if done.row is None else bool(done.row.cancel)

    async def heartbeat(self, run_id: str, token: str, lease_seconds: float) -> bool:
        params = {"b_id": run_id, "b_token": token, **self._times(lease_seconds)}
        done = await self._execute(self._stmts["heartbeat"], params, progress=True)
        return done.row is not None

    async def release(self, run_id: str, token: str) -> bool:
        stmt = (
            update(T)
            .where(self._held(run_id, token))
            .values(owner=None, lease_expires_at=self._now(), updated_at=self._now())
            .returning(T.c.id)
        )
        return (await self._execute(stmt)).row is not None

    async def request_compensation(self, run_id: str) -> Run | None:
        await self._execute(
            update(T)
            .where(T.c.id == run_id, T.c.status.not_in(_TERMINAL))
            .values(cancel=True, updated_at=self._now())
        )
        return await self.get(run_id)

    async def expired(self, limit: int) -> list[Run]:
        stmt = (
            select(T)
            .where(T.c.status.not_in(_TERMINAL), T.c.lease_expires_at < self._now())
            .order_by(T.c.lease_expires_at)
            .limit(limit)
        )
        return [_run(r) for r in (await self._execute(stmt)).rows]

    async def list(
        self, *, status: RunStatus | None = None, saga: str | None = None, limit: int = 100
    ) -> list[Run]:
        stmt = select(T).order_by(T.c.created_at.desc(), T.c.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(T.c.status == status.value)
        if saga is not None:
            stmt = stmt.where(T.c.saga == saga)
        return [_run(r) for r in (await self._execute(stmt)).rows]

    async def counts(self) -> dict[str, int]:
        stmt = select(T.c.status, func.count()).group_by(T.c.status)
        found = {row[0]: int(row[1]) for row in (await self._execute(stmt)).rows}
        return {s.value: found.get(s.value, 0) for s in RunStatus}

    async def purge(self, older_than: datetime) -> int:
        stmt = delete(T).where(
            T.c.status.in_(_TERMINAL), T.c.finished_at < older_than.astimezone(UTC)
        )
        done: _Done = await self._execute(stmt)
        return done.rowcount

    async def close(self) -> None:
        for idle in self._idle.values():
            while idle:
                with contextlib.suppress(Exception):
                    await idle.pop().close()
        self._open = {False: 0, True: 0}
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


class _Done:
    """A statement's result, read before its connection goes back to the pool."""

    def __init__(self, result: Any) -> None:
        self.rowcount = int(result.rowcount or 0)
        self.rows = list(result.all()) if result.returns_rows else []
        self.row = self.rows[0] if self.rows else None
