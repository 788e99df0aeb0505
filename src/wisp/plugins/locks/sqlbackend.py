"""Locks in PostgreSQL: a row per name for the lease and token, an advisory
lock for waiting.

The ``locks`` row is the truth: one ``INSERT ... ON CONFLICT DO UPDATE ...
WHERE expires_at <= now() RETURNING token`` takes a free or expired lock and
issues the next token in the same statement, by the server's clock.  While
it holds the lock, the holder also holds a session advisory lock (a hash of
schema, prefix and name) on a connection kept for it; a waiter blocks in
``pg_advisory_lock`` on its own connection, so the release (which frees the
row and unlocks in one statement) wakes the next waiter in the server, with
no polling.  Only the first waiter of each process waits in the server; the
others queue in the process.

A holder that stalls past its lease keeps its advisory lock, but not the
lock: the waiter's ``lock_timeout`` is bounded by the lease it saw, after
which it takes the expired row without the advisory lock.  A holder whose
connection drops loses its advisory lock; its row still guards the lock
until the lease ends.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import asyncpg
import attrs
from sqlalchemy.engine import make_url

from wisp.plugins.locks.api import LockInfo
from wisp.plugins.locks.backend import Attempt, Wake

__all__ = ["PostgresBackend"]

# Times are clock_timestamp(), not now(): a statement may wait for the
# advisory lock, and now() is when it began.

# $1 name, $2 holder, $3 ttl ms, $4 lock_timeout ms, $5 advisory key.  One
# round trip: wait for the advisory lock (the timeout is local to this
# statement's transaction; the lock is the session's and outlives it; CASE
# keeps the order and says whether we waited), then take the row if it is
# free or expired, issuing the next token.  ON CONFLICT DO UPDATE sees the
# latest row version, whatever the statement's snapshot.
ACQUIRE_WAIT = """
WITH w AS MATERIALIZED (
  SELECT CASE WHEN set_config('lock_timeout', $4, true) IS NULL THEN NULL
              WHEN pg_try_advisory_lock($5) THEN 0
              WHEN pg_advisory_lock($5)::text = '' THEN 1 ELSE 1 END AS waited
)
INSERT INTO locks AS l (name, token, holder, expires_at)
SELECT $1, 1, $2, clock_timestamp() + $3::float8 * interval '1 millisecond' FROM w
ON CONFLICT (name) DO UPDATE
  SET token = l.token + 1, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
  WHERE l.expires_at IS NULL OR l.expires_at <= clock_timestamp()
RETURNING token, (SELECT waited FROM w)
"""

# Without the advisory lock (it is free to try, or a holder keeps it while
# stalled): take only a lease that ran out.  A row released by an advisory
# holder (expires_at NULL) belongs to the next advisory waiter, which that
# release woke; one released by a holder without it is marked expired.
TAKEOVER = """
UPDATE locks SET token = token + 1, holder = $2,
       expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
WHERE name = $1 AND expires_at <= clock_timestamp()
RETURNING token
"""

LEASE = """
SELECT extract(epoch FROM expires_at - clock_timestamp())::float8
FROM locks WHERE name = $1
"""

# $4 false: expires_at NULL, free for the next advisory waiter (which the
# unlock wakes); true: expired now, free to all.
RELEASE = """
WITH u AS (
  UPDATE locks SET holder = NULL,
                   expires_at = CASE WHEN $4::boolean THEN clock_timestamp() END
  WHERE name = $1 AND token = $2 AND expires_at > clock_timestamp()
  RETURNING 1
)
SELECT (SELECT count(*) FROM u), CASE WHEN $3::bigint IS NULL THEN NULL
                                      ELSE pg_advisory_unlock($3::bigint) END
"""

EXTEND = """
UPDATE locks SET expires_at = clock_timestamp() + $3::float8 * interval '1 millisecond'
WHERE name = $1 AND token = $2 AND expires_at > clock_timestamp()
RETURNING 1
"""

INFO = """
SELECT name, token, coalesce(holder, ''),
       greatest(extract(epoch FROM expires_at - clock_timestamp()), 0)::float8
FROM locks WHERE expires_at > clock_timestamp() AND ($1::text IS NULL OR name = $1)
ORDER BY name
"""

#: A connection the server ended (terminated, restarted) or that broke.
_DROPPED = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
    OSError,
)


@attrs.define
class _Held:
    conn: Any
    advisory: bool
    busy: asyncio.Lock = attrs.field(factory=asyncio.Lock)


class _Pool:
    """Connections kept without a reset between uses (asyncpg's pool would run
    ``pg_advisory_unlock_all()`` and more on every return)."""

    def __init__(self, dsn: str, server_settings: dict[str, str], size: int) -> None:
        self.dsn = dsn
        self.server_settings = server_settings
        self.idle: list[Any] = []
        self.made: set[Any] = set()
        self.slots = asyncio.Semaphore(size)

    async def get(self) -> Any:
        await self.slots.acquire()
        try:
            while self.idle:
                conn = self.idle.pop()
                if not conn.is_closed():
                    return conn
            conn = await asyncpg.connect(self.dsn, server_settings=self.server_settings)
            self.made.add(conn)
            return conn
        except BaseException:
            self.slots.release()
            raise

    def put(self, conn: Any, *, clean: bool) -> None:
        """Return a connection; one in an unknown state (an advisory lock that may
        still be held, a cancelled statement) is closed, which frees its locks."""
        if clean and not conn.is_closed():
            self.idle.append(conn)
        else:
            conn.terminate()
            self.made.discard(conn)
        self.slots.release()

    async def close(self) -> None:
        """Close every connection, those of locks still held too (which frees
        their advisory locks; their rows stay until their leases end)."""
        self.idle.clear()
        while self.made:
            conn = self.made.pop()
            try:
                await asyncio.wait_for(conn.close(), 5)
            except Exception:
                conn.terminate()


class PostgresBackend:
    kind = "sql"
    waits_in_server = True

    def __init__(self, url: str, schema: str, prefix: str, pool_size: int) -> None:
        dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.schema = schema
        self.prefix = prefix
        self._pool = _Pool(dsn, {"search_path": schema} if schema else {}, pool_size)

    def advisory_key(self, name: str) -> int:
        digest = hashlib.blake2b(
            f"{self.schema}\0{self.prefix}\0{name}".encode(), digest_size=8
        ).digest()
        return int.from_bytes(digest, "big", signed=True)

    async def open(self, wake: Wake) -> None:
        conn = await self._pool.get()
        self._pool.put(conn, clean=True)

    def abandon(self, name: str) -> None:
        return None

    def waiting(self, name: str) -> None:
        return None

    async def close(self) -> None:
        await self._pool.close()

    async def acquire(
        self, name: str, holder: str, ttl: float, block: float, queued: bool = False
    ) -> Attempt:
        for retry in (True, False):
            try:
                async with asyncio.timeout(block if block > 0 else None):
                    conn = await self._pool.get()
            except TimeoutError:
                return Attempt(None)
            try:
                return await self._acquire_on(conn, name, holder, ttl, block)
            except _DROPPED:
                # An idle connection the server (or a proxy) closed: one more try
                # on a new one.  Its session, and any advisory lock, are gone.
                if not retry:
                    raise
        raise AssertionError("unreachable")

    async def _acquire_on(
        self, conn: Any, name: str, holder: str, ttl: float, block: float
    ) -> Attempt:
        key = self.advisory_key(name)
        held = clean = False
        try:
            advisory = waited = False
            row = None
            if block > 0:
                try:
                    row = await conn.fetchrow(
                        ACQUIRE_WAIT,
                        name,
                        holder,
                        ttl * 1000,
                        str(max(1, round(block * 1000))),
                        key,
                    )
                    advisory = True
                except asyncpg.LockNotAvailableError:
                    waited = True
            else:
                advisory = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", key))
                if advisory:
                    row = await conn.fetchrow(ACQUIRE_WAIT, name, holder, ttl * 1000, "1", key)
            if row is not None:
                held = True
                return Attempt(
                    int(row[0]), handle=_Held(conn, advisory), waited=waited or bool(row[1])
                )
            if not advisory:
                token = await conn.fetchval(TAKEOVER, name, holder, ttl * 1000)
                if token is not None:
                    held = True
                    return Attempt(int(token), handle=_Held(conn, False), waited=waited)
            else:
                # We have the advisory lock but a holder without it (one that took
                # over a stalled holder's lease) has the row: give the lock back.
                await conn.execute("SELECT pg_advisory_unlock($1)", key)
            left = await conn.fetchval(LEASE, name)
            clean = True
            lease = max(float(left), 0.0) if left is not None else None
            return Attempt(
                None,
                retry_after=(lease or 0.0) if advisory else 0.0,
                lease_left=lease,
                waited=waited,
            )
        finally:
            if not held:
                self._pool.put(conn, clean=clean)

    async def extend(self, name: str, token: int, holder: str, handle: Any, ttl: float) -> bool:
        held: _Held = handle
        async with held.busy:
            try:
                done = await held.conn.fetchval(EXTEND, name, token, ttl * 1000)
            except _DROPPED:
                conn = await self._pool.get()
                ok = False
                try:
                    done = await conn.fetchval(EXTEND, name, token, ttl * 1000)
                    ok = True
                finally:
                    self._pool.put(conn, clean=ok)
        return done is not None

    async def release(self, name: str, token: int, holder: str, handle: Any) -> bool:
        held: _Held = handle
        clean = False
        async with held.busy:
            try:
                count = await held.conn.fetchval(*self._release_args(name, token, held.advisory))
                clean = True
            except _DROPPED:
                # The session is gone, and its advisory lock with it; the row may
                # still be ours.
                count = await self._release_elsewhere(name, token)
            finally:
                self._pool.put(held.conn, clean=clean)
        return bool(count)

    def _release_args(self, name: str, token: int, advisory: bool) -> tuple[Any, ...]:
        if advisory:
            return (RELEASE, name, token, self.advisory_key(name), False)
        # No advisory lock to hand over: leave the row expired, so that waiters
        # (which time out of their advisory wait) may take it.
        return (RELEASE, name, token, None, True)

    async def _release_elsewhere(self, name: str, token: int) -> int:
        conn = await self._pool.get()
        ok = False
        try:
            count = int(await conn.fetchval(*self._release_args(name, token, False)))
            ok = True
            return count
        finally:
            self._pool.put(conn, clean=ok)

    async def _query(self, name: str | None) -> list[LockInfo]:
        conn = await self._pool.get()
        ok = False
        try:
            rows = await conn.fetch(INFO, name)
            ok = True
        finally:
            self._pool.put(conn, clean=ok)
        return [LockInfo(r[0], int(r[1]), r[2], float(r[3])) for r in rows]

    async def info(self, name: str) -> LockInfo | None:
        found = await self._query(name)
        return found[0] if found else None

    async def held(self) -> list[LockInfo]:
        return await self._query(None)

    async def ping(self) -> str:
        conn = await self._pool.get()
        ok = False
        try:
            await conn.fetchval("SELECT 1")
            ok = True
        finally:
            self._pool.put(conn, clean=ok)
        return "PostgreSQL answered"
