"""Jobs in the storage plugin's database: SQLite or PostgreSQL.

A claim is one ``UPDATE ... WHERE id IN (SELECT ... LIMIT n) RETURNING``:
PostgreSQL adds ``FOR UPDATE SKIP LOCKED`` so concurrent workers take
different rows without waiting on each other; SQLite runs one writer at a
time, so the statement is atomic as it is.  Times come from the database on
PostgreSQL (``now()``, one clock for every machine); SQLite lives on one
machine and uses its clock.  PostgreSQL wakes idle workers with
``LISTEN/NOTIFY``; on SQLite they poll (and a worker in the enqueuing
process is woken at once).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import (
    ColumnElement,
    and_,
    bindparam,
    cast,
    column,
    delete,
    func,
    literal,
    or_,
    select,
    update,
    values,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from wisp.plugins.jobs.api import Job, JobStatus, NewJob, dumps_payload
from wisp.plugins.jobs.models import JobRow

__all__ = ["SQLBackend"]

CHANNEL = "wisp_jobs"


def _utc(value: datetime | None) -> datetime | None:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _stored(value: datetime) -> datetime:
    # SQLite keeps a datetime's wall clock and drops its zone: store UTC.
    return value.astimezone(UTC)


def _job(row: Any) -> Job:
    return Job(
        id=row.id,
        type=row.type,
        payload=row.payload,
        queue=row.queue,
        priority=row.priority,
        status=JobStatus(row.status),
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        run_at=_utc(row.run_at),  # type: ignore[arg-type]
        created_at=_utc(row.created_at),  # type: ignore[arg-type]
        updated_at=_utc(row.updated_at),  # type: ignore[arg-type]
        idempotency_key=row.idempotency_key,
        lease_owner=row.lease_owner,
        lease_expires_at=_utc(row.lease_expires_at),
        lease_token=row.lease_token,
        error=row.error,
        result=row.result,
        finished_at=_utc(row.finished_at),
    )


class SQLBackend:
    """:class:`~wisp.plugins.jobs.api.JobsBackend` on the ``db`` service."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.pg = db.dialect == "postgresql"
        self._work = asyncio.Event()
        self._listener: Any = None
        self._insert: Any = None
        self._fast: Any = None  # the autocommit pool (PostgreSQL)

    # -- clock and tokens ---------------------------------------------------------

    def _now(self) -> Any:
        return func.now() if self.pg else literal(datetime.now(UTC), JobRow.run_at.type)

    def _in(self, seconds: float) -> Any:
        if self.pg:
            return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
        return literal(datetime.now(UTC) + timedelta(seconds=seconds), JobRow.run_at.type)

    def _new_token(self) -> Any:
        # One new token per row of a claim, made by the database.
        if self.pg:
            return func.substr(func.md5(func.random().cast(postgresql.TEXT) + JobRow.id), 1, 32)
        return func.lower(func.hex(func.randomblob(16)))

    # -- writing ------------------------------------------------------------------

    def _insert_statement(self) -> Any:
        """The enqueue statement, built once: only its parameters change per call,
        so SQLAlchemy neither rebuilds nor re-keys it (most of an enqueue's CPU)."""
        columns = JobRow.__table__.columns
        now = func.now() if self.pg else bindparam("now", type_=JobRow.run_at.type)
        values = {
            name: bindparam(name, type_=columns[name].type)
            for name in ("id", "queue", "type", "payload", "priority", "max_attempts")
        }
        values["idempotency_key"] = bindparam(
            "idempotency_key", type_=columns["idempotency_key"].type
        )
        insert = (postgresql.insert if self.pg else sqlite.insert)(JobRow).values(
            **values,
            status=JobStatus.PENDING.value,
            attempts=0,
            run_at=func.coalesce(bindparam("run_at", type_=JobRow.run_at.type), now),
            created_at=now,
            updated_at=now,
        )
        # Any conflict, the key's or the id's: NULL keys never conflict, so one
        # statement serves keyed and unkeyed jobs, and an insert retried after
        # its connection dropped finds its own row instead of failing.
        returning: Any = insert.on_conflict_do_nothing().returning(*columns)
        if self.pg:
            # One statement: the row, and the notification (sent at commit).
            inserted = returning.cte("inserted")
            returning = select(
                inserted, func.pg_notify(CHANNEL, func.current_schema()).label("notified")
            )
        return returning

    async def enqueue(self, job: NewJob) -> tuple[Job, bool]:
        params: dict[str, Any] = {
            "id": job.id,
            "queue": job.queue,
            "type": job.type,
            "payload": job.payload,
            "priority": job.priority,
            "max_attempts": job.max_attempts,
            "idempotency_key": job.idempotency_key,
            "run_at": _stored(job.run_at) if job.run_at is not None else None,
        }
        if self._insert is None:
            self._insert = self._insert_statement()
        if self.pg:
            rows = await self._autocommit(self._insert, params)
            row = rows[0] if rows else None
        else:
            params["now"] = datetime.now(UTC)
            async with self.db.transaction() as s:
                row = (await s.execute(self._insert, params)).first()
        if row is not None:
            self._work.set()
            return _job(row), True
        mine = await self.get(job.id)
        if mine is not None:  # written by an attempt whose reply was lost
            self._work.set()
            return mine, True
        # The key was taken: a separate read finds the job it names (a single
        # statement would miss rows under concurrency on PostgreSQL).
        found = await self._by_key(job.idempotency_key or "")
        if found is None:  # pragma: no cover - purged between the two statements
            raise RuntimeError(f"the job of idempotency key {job.idempotency_key!r} vanished")
        return found, False

    async def _autocommit(self, stmt: Any, params: dict[str, Any]) -> list[Any]:
        """Run one statement alone, outside a transaction (no BEGIN and COMMIT
        round trips), on a pool of our own without pre-ping (no ping round trip
        per checkout); return its rows.  A dropped connection is retried once on
        a fresh one: the statements sent here are safe to repeat (an enqueue
        retried conflicts on its id and ``enqueue`` reads that row back; a
        completion repeated finds the lease already released and changes
        nothing)."""
        if self._fast is None:
            self._fast = self.db.make_engine(pre_ping=False)
        for attempt in (1, 2):
            async with self._fast.connect() as conn:
                try:
                    auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    return list((await auto.execute(stmt, params)).all())
                except Exception as exc:
                    # Not always a DBAPIError: older SQLAlchemy lets some driver
                    # errors through as they are, with the connection invalidated.
                    dropped = conn.invalidated or (
                        isinstance(exc, DBAPIError) and exc.connection_invalidated
                    )
                    if attempt == 2 or not dropped:
                        raise
            logger.info("jobs: a pooled connection was dropped; enqueueing again")
        raise AssertionError("unreachable")  # pragma: no cover

    async def _by_key(self, key: str) -> Job | None:
        async with self.db.session() as s:
            row = (
                await s.execute(select(JobRow).where(JobRow.idempotency_key == key))
            ).scalar_one_or_none()
            return None if row is None else _job(row)

    async def claim(
        self,
        worker: str,
        queues: Sequence[str],
        types: Sequence[str],
        limit: int,
        lease_seconds: float,
    ) -> list[Job]:
        if not queues or not types or limit <= 0:
            return []
        now = self._now()
        pending = and_(
            JobRow.status.in_([JobStatus.PENDING.value, JobStatus.FAILED.value]),
            JobRow.run_at <= now,
        )
        lapsed = and_(
            JobRow.status == JobStatus.RUNNING.value,
            JobRow.lease_expires_at < now,
            JobRow.attempts < JobRow.max_attempts,
        )
        due = (
            select(JobRow.id)
            .where(or_(pending, lapsed), JobRow.queue.in_(queues), JobRow.type.in_(types))
            .order_by(JobRow.priority.desc(), JobRow.run_at, JobRow.id)
            .limit(limit)
        )
        if self.pg:
            due = due.with_for_update(skip_locked=True)
        stmt = (
            update(JobRow)
            .where(JobRow.id.in_(due.scalar_subquery()))
            .values(
                status=JobStatus.RUNNING.value,
                attempts=JobRow.attempts + 1,
                lease_owner=worker,
                lease_token=self._new_token(),
                lease_expires_at=self._in(lease_seconds),
                updated_at=now,
            )
            .returning(JobRow)
            .execution_options(synchronize_session=False)
        )
        async with self.db.transaction() as s:
            await self._bury_lapsed(s)
            rows = (await s.execute(stmt)).scalars().all()
            return sorted((_job(r) for r in rows), key=lambda j: (-j.priority, j.run_at, j.id))

    async def _bury_lapsed(self, s: Any) -> None:
        """Dead-letter running jobs whose last attempt's worker was lost."""
        now = self._now()
        await s.execute(
            update(JobRow)
            .where(
                JobRow.status == JobStatus.RUNNING.value,
                JobRow.lease_expires_at < now,
                JobRow.attempts >= JobRow.max_attempts,
            )
            .values(
                status=JobStatus.DEAD_LETTER.value,
                error="the worker running its last attempt was lost (lease expired)",
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                finished_at=now,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )

    def _held(self, job_id: str, token: str) -> ColumnElement[bool]:
        return and_(
            JobRow.id == job_id,
            JobRow.lease_token == token,
            JobRow.status == JobStatus.RUNNING.value,
        )

    async def _write(self, where: ColumnElement[bool], **values: Any) -> bool:
        stmt = update(JobRow).where(where).values(**values, updated_at=self._now())
        async with self.db.transaction() as s:
            result = await s.execute(stmt.execution_options(synchronize_session=False))
            return bool(result.rowcount)

    async def heartbeat(
        self, worker: str, leases: Mapping[str, str], lease_seconds: float
    ) -> set[str]:
        kept: set[str] = set()
        if not leases:
            return kept
        async with self.db.transaction() as s:
            for job_id, token in leases.items():
                result = await s.execute(
                    update(JobRow)
                    .where(self._held(job_id, token))
                    .values(lease_expires_at=self._in(lease_seconds), updated_at=self._now())
                    .execution_options(synchronize_session=False)
                )
                if result.rowcount:
                    kept.add(job_id)
        return kept

    async def complete(self, job_id: str, token: str, result: Any) -> bool:
        return job_id in await self.complete_many([(job_id, token, result)])

    async def complete_many(self, done: Sequence[tuple[str, str, Any]]) -> set[str]:
        if not done:
            return set()
        finished = {
            "status": JobStatus.COMPLETED.value,
            "error": None,
            "lease_owner": None,
            "lease_token": None,
            "lease_expires_at": None,
        }
        if not self.pg:
            # SQLite: the commit is the cost (a local file, no round trips), so
            # one transaction with a statement per job.
            completed: set[str] = set()
            async with self.db.transaction() as s:
                for job_id, token, result in done:
                    now = self._now()
                    stmt = (
                        update(JobRow)
                        .where(self._held(job_id, token))
                        .values(**finished, result=result, finished_at=now, updated_at=now)
                        .execution_options(synchronize_session=False)
                    )
                    if (await s.execute(stmt)).rowcount:
                        completed.add(job_id)
            return completed
        # PostgreSQL: one ``UPDATE ... FROM (VALUES ...)`` sent alone (autocommit):
        # one round trip for the batch; the lease check is per row, in the join.
        rows = values(
            column("id", JobRow.id.type),
            column("token", JobRow.lease_token.type),
            column("result", postgresql.TEXT),
            name="done",
        ).data([(job_id, token, dumps_payload(result)) for job_id, token, result in done])
        stmt = (
            update(JobRow)
            .where(
                JobRow.id == rows.c.id,
                JobRow.lease_token == rows.c.token,
                JobRow.status == JobStatus.RUNNING.value,
            )
            .values(
                **finished,
                result=cast(rows.c.result, postgresql.JSONB),
                finished_at=func.now(),
                updated_at=func.now(),
            )
            .returning(JobRow.id)
            .execution_options(synchronize_session=False)
        )
        return {row[0] for row in await self._autocommit(stmt, {})}

    async def fail(self, job_id: str, token: str, error: str, retry_at: datetime | None) -> bool:
        if retry_at is None:
            return await self._write(
                self._held(job_id, token),
                status=JobStatus.DEAD_LETTER.value,
                error=error,
                lease_owner=None,
                lease_token=None,
                lease_expires_at=None,
                finished_at=self._now(),
            )
        return await self._write(
            self._held(job_id, token),
            status=JobStatus.FAILED.value,
            error=error,
            run_at=_stored(retry_at),
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
        )

    async def release(self, job_id: str, token: str) -> bool:
        released = await self._write(
            self._held(job_id, token),
            status=JobStatus.PENDING.value,
            attempts=JobRow.attempts - 1,
            run_at=self._now(),
            lease_owner=None,
            lease_token=None,
            lease_expires_at=None,
        )
        if released and self.pg:
            async with self.db.transaction() as s:
                await s.execute(select(func.pg_notify(CHANNEL, func.current_schema())))
        return released

    # -- reading and operating ------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        async with self.db.session() as s:
            row = await s.get(JobRow, job_id, populate_existing=True)
            return None if row is None else _job(row)

    async def list(
        self,
        *,
        status: JobStatus | None = None,
        queue: str | None = None,
        type: str | None = None,
        limit: int = 100,
    ) -> list[Job]:
        stmt = select(JobRow).order_by(JobRow.created_at.desc(), JobRow.id.desc()).limit(limit)
        if status is not None:
            stmt = stmt.where(JobRow.status == status.value)
        if queue is not None:
            stmt = stmt.where(JobRow.queue == queue)
        if type is not None:
            stmt = stmt.where(JobRow.type == type)
        async with self.db.session() as s:
            return [_job(r) for r in (await s.execute(stmt)).scalars()]

    async def retry(self, job_id: str) -> Job | None:
        await self._write(
            and_(
                JobRow.id == job_id,
                JobRow.status.in_([JobStatus.DEAD_LETTER.value, JobStatus.FAILED.value]),
            ),
            status=JobStatus.PENDING.value,
            attempts=0,
            run_at=self._now(),
            finished_at=None,
        )
        self._work.set()
        return await self.get(job_id)

    async def purge(self, *, status: JobStatus, older_than: datetime | None = None) -> int:
        if status not in (JobStatus.COMPLETED, JobStatus.DEAD_LETTER):
            raise ValueError(
                f"only finished jobs are purged (completed, dead_letter), not {status}"
            )
        stmt = delete(JobRow).where(JobRow.status == status.value)
        if older_than is not None:
            stmt = stmt.where(JobRow.updated_at < _stored(older_than))
        async with self.db.transaction() as s:
            return int((await s.execute(stmt)).rowcount or 0)

    async def counts(self) -> dict[str, int]:
        async with self.db.session() as s:
            rows = await s.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            out = {status.value: 0 for status in JobStatus}
            out.update({status: int(n) for status, n in rows})
            return out

    # -- waking -----------------------------------------------------------------------

    async def wait_for_work(self, timeout: float) -> None:
        if self.pg and self._listener is None:
            await self._listen()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._work.wait()
        self._work.clear()

    async def _listen(self) -> None:
        import asyncpg  # the driver SQLAlchemy uses

        url = make_url(self.db.url).set(drivername="postgresql")
        try:
            # The channel is the database's: wake only for jobs in our schema.
            async with self.db.session() as s:
                schema = (await s.execute(select(func.current_schema()))).scalar_one()

            def notified(conn: Any, pid: int, channel: str, payload: str) -> None:
                if payload == schema:
                    self._work.set()

            conn = await asyncpg.connect(url.render_as_string(hide_password=False))
            await conn.add_listener(CHANNEL, notified)
        except Exception as exc:  # polling still works
            logger.warning("jobs: cannot LISTEN for new jobs ({}); polling instead", exc)
            self._listener = False
            return
        self._listener = conn

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.dispose()
            self._fast = None
        if self._listener:
            with contextlib.suppress(Exception):
                await self._listener.close()
        self._listener = None
