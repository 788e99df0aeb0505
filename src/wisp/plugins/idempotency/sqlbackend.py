"""Idempotency keys in the storage plugin's database: SQLite or PostgreSQL.

A claim is ``INSERT ... ON CONFLICT DO NOTHING``.  When it inserts nothing
the key exists, and a read finds what it holds.  On PostgreSQL the claim
statement also returns the existing row as its own snapshot sees it, so a
repeat is one round trip; but that snapshot predates a conflicting insert
committed while the statement waited on it (why the single-statement form
alone misses rows under concurrency), so when nothing comes back a separate
``SELECT``, with a new snapshot, reads the row.  A failed key, or one whose
claim or retention expired, is taken over with one conditional ``UPDATE``
whose ``WHERE`` re-checks that state, so of several callers exactly one gets
the row.  No transaction is held while the operation runs.

Times come from the database on PostgreSQL (``now()``, one clock for every
machine); SQLite lives on one machine and uses its clock.  On PostgreSQL each
statement runs alone in autocommit on a pool without pre-ping: a claim and a
repeat cost one round trip each.  SQLite runs the insert and the read in one
transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from loguru import logger
from sqlalchemy import (
    Float,
    Table,
    bindparam,
    delete,
    false,
    func,
    literal,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError

from wisp.plugins.idempotency.api import ClaimOutcome, ClaimResult, Record, State
from wisp.plugins.idempotency.models import IdempotencyRow

__all__ = ["SQLBackend"]

T: Table = IdempotencyRow.__table__  # type: ignore[assignment]
_COLUMNS = tuple(T.columns)
#: Rounds of insert / read / take-over a claim tries while the key changes under it.
_ROUNDS = 5


def _utc(value: datetime) -> datetime:
    # SQLite hands datetimes back without their zone; they were stored in UTC.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _record(row: Any) -> Record:
    return Record(
        key=row.key,
        state=State(row.state),
        owner=row.owner,
        attempts=row.attempts,
        result=row.result,
        error=row.error,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        expires_at=_utc(row.expires_at),
    )


class SQLBackend:
    """:class:`~wisp.plugins.idempotency.api.IdempotencyBackend` on the ``db`` service."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.pg = db.dialect == "postgresql"
        self._fast: Any = None  # PostgreSQL: the autocommit pool
        self._built: dict[str, Any] | None = None

    # -- clock ------------------------------------------------------------------------

    def _now(self) -> Any:
        return func.now() if self.pg else literal(datetime.now(UTC), T.c.expires_at.type)

    # -- one statement ----------------------------------------------------------------

    async def _one(self, stmt: Any, params: dict[str, Any] | None = None) -> Any:
        """Run ``stmt`` alone and return its first row (``None`` if none) or, for a
        statement without rows, its rowcount."""
        if not self.pg:
            async with self.db.transaction() as s:
                result = await s.execute(stmt, params)
                return result.first() if result.returns_rows else result.rowcount
        if self._fast is None:
            # Statements are short and never span an operation: pool_size
            # connections (no overflow) serve any number of concurrent claims.
            self._fast = self.db.make_engine(pre_ping=False, pool_size=self.db.config.pool_size)
        for attempt in (1, 2):
            try:
                async with self._fast.connect() as conn:
                    auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    result = await auto.execute(stmt, params)
                    return result.first() if result.returns_rows else result.rowcount
            except DBAPIError as exc:
                # Every statement here may run twice: a repeated insert finds its own
                # row (same owner), a repeated update matches the same owner again.
                if attempt == 2 or not exc.connection_invalidated:
                    raise
                logger.info("idempotency: a pooled connection was dropped; running again")
        raise AssertionError("unreachable")  # pragma: no cover

    # -- claims -----------------------------------------------------------------------

    def _statements(self) -> dict[str, Any]:
        """Every hot statement, built once: only their parameters change per call,
        so SQLAlchemy neither rebuilds nor re-keys them.  Parameters: ``p_key``,
        ``p_owner``, ``p_seconds`` (from now to the new ``expires_at``), and per
        statement ``p_result`` or ``p_error``."""
        key = bindparam("p_key", type_=T.c.key.type)
        owner = bindparam("p_owner", type_=T.c.owner.type)
        if self.pg:
            now: Any = func.now()
            expires: Any = now + func.make_interval(
                0, 0, 0, 0, 0, 0, bindparam("p_seconds", type_=Float())
            )
        else:  # _params() turns seconds into these two
            now = bindparam("p_now", type_=T.c.expires_at.type)
            expires = bindparam("p_expires", type_=T.c.expires_at.type)
        insert = (
            (postgresql.insert if self.pg else sqlite.insert)(T)
            .values(
                key=key,
                state=State.IN_PROGRESS.value,
                owner=owner,
                attempts=1,
                result=null(),
                error=None,
                created_at=now,
                updated_at=now,
                expires_at=expires,
            )
            .on_conflict_do_nothing()
        )
        read = select(*_COLUMNS, func.now().label("now_")) if self.pg else select(*_COLUMNS)
        mine = update(T).where(
            T.c.key == key, T.c.owner == owner, T.c.state == State.IN_PROGRESS.value
        )
        out: dict[str, Any] = {
            "read": read.where(T.c.key == key),
            # A failed or expired key, taken over unless someone else just did.
            "take_over": update(T)
            .where(T.c.key == key, or_(T.c.state == State.FAILED.value, T.c.expires_at < now))
            .values(
                state=State.IN_PROGRESS.value,
                owner=owner,
                attempts=T.c.attempts + 1,
                result=null(),
                error=None,
                updated_at=now,
                expires_at=expires,
            )
            .returning(T.c.key),
            "complete": mine.values(
                state=State.COMPLETED.value,
                result=bindparam("p_result", type_=T.c.result.type),
                error=None,
                updated_at=now,
                expires_at=expires,
            ),
            "fail": mine.values(
                state=State.FAILED.value,
                error=bindparam("p_error", type_=T.c.error.type),
                updated_at=now,
                expires_at=expires,
            ),
            "extend": mine.values(updated_at=now, expires_at=expires),
        }
        if not self.pg:
            out["insert"] = insert.returning(T.c.key)
            return out
        # One round trip for a claim and for a repeat: the inserted row, or else
        # the row as this statement's snapshot sees it (never both: a statement
        # does not see its own CTE's insert).  A row inserted concurrently is not
        # in that snapshot either: then nothing comes back, and claim() reads again.
        inserted = insert.returning(*_COLUMNS, now.label("now_"), true().label("won")).cte("ins")
        existing = select(*_COLUMNS, now.label("now_"), false().label("won")).where(T.c.key == key)
        out["claim"] = union_all(select(*inserted.c), existing)
        return out

    @property
    def _stmts(self) -> dict[str, Any]:
        if self._built is None:
            self._built = self._statements()
        return self._built

    def _params(self, seconds: float, **params: Any) -> dict[str, Any]:
        if self.pg:
            params["p_seconds"] = float(seconds)
        else:
            now = datetime.now(UTC)
            params.update(p_now=now, p_expires=now + timedelta(seconds=seconds))
        return params

    async def _claim_or_read(self, params: dict[str, Any]) -> tuple[bool, Any]:
        """Insert the claim; if the key exists, its row when it can be seen at once."""
        stmts = self._stmts
        if self.pg:
            row = await self._one(stmts["claim"], params)
            return (row is not None and bool(row.won)), row
        # SQLite: both statements in one transaction (one writer at a time anyway).
        async with self.db.transaction() as s:
            if (await s.execute(stmts["insert"], params)).first() is not None:
                return True, None
            return False, (await s.execute(stmts["read"], {"p_key": params["p_key"]})).first()

    async def claim(self, key: str, owner: str, lease_seconds: float) -> ClaimResult:
        stmts = self._stmts
        for _ in range(_ROUNDS):
            params = self._params(lease_seconds, p_key=key, p_owner=owner)
            won, row = await self._claim_or_read(params)
            if won:
                return ClaimResult(ClaimOutcome.WON)
            if row is None:
                # Nothing came back: a separate read (a new snapshot) sees the row.
                row = await self._one(stmts["read"], {"p_key": key})
            if row is None:
                continue  # deleted between the two statements: insert again
            record = _record(row)
            now_ = _utc(row.now_) if self.pg else datetime.now(UTC)
            if record.owner == owner and record.state is State.IN_PROGRESS:
                return ClaimResult(ClaimOutcome.WON)  # our insert, sent again after a lost reply
            if record.expires_at > now_ and record.state is State.COMPLETED:
                return ClaimResult(ClaimOutcome.COMPLETED, record)
            if record.expires_at > now_ and record.state is State.IN_PROGRESS:
                return ClaimResult(ClaimOutcome.IN_PROGRESS, record)
            params = self._params(lease_seconds, p_key=key, p_owner=owner)
            if await self._one(stmts["take_over"], params) is not None:
                return ClaimResult(ClaimOutcome.WON)
        raise RuntimeError(
            f"idempotency key {key!r}: could not claim or read it in {_ROUNDS} rounds "
            "(it keeps changing; is cleanup running with a tiny ttl?)"
        )

    async def complete(self, key: str, owner: str, result: Any, ttl_seconds: float) -> bool:
        params = self._params(ttl_seconds, p_key=key, p_owner=owner, p_result=result)
        return bool(await self._one(self._stmts["complete"], params))

    async def fail(self, key: str, owner: str, error: str, ttl_seconds: float) -> bool:
        params = self._params(ttl_seconds, p_key=key, p_owner=owner, p_error=error)
        return bool(await self._one(self._stmts["fail"], params))

    async def extend(self, key: str, owner: str, lease_seconds: float) -> bool:
        params = self._params(lease_seconds, p_key=key, p_owner=owner)
        return bool(await self._one(self._stmts["extend"], params))

    # -- reading and operating ----------------------------------------------------------

    async def get(self, key: str) -> Record | None:
        row = await self._one(select(*_COLUMNS).where(T.c.key == key))
        return None if row is None else _record(row)

    async def delete(self, key: str) -> bool:
        return bool(await self._one(delete(T).where(T.c.key == key)))

    async def cleanup(self) -> int:
        return int(await self._one(delete(T).where(T.c.expires_at < self._now())) or 0)

    async def counts(self) -> dict[str, int]:
        out = {state.value: 0 for state in State}
        out["expired"] = 0
        expired = (T.c.expires_at < self._now()).label("expired")
        async with self.db.session() as s:
            rows = await s.execute(
                select(T.c.state, expired, func.count()).group_by(T.c.state, expired)
            )
            for state, is_expired, n in rows:
                name = "expired" if is_expired else state
                out[name] = out.get(name, 0) + int(n)
        return out

    async def close(self) -> None:
        if self._fast is not None:
            await self._fast.dispose()
            self._fast = None
