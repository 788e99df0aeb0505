"""Fenced writes: storage that refuses a write carrying an outdated token.

A lock alone cannot stop a holder that was paused (a GC pause, a stalled
event loop, a suspended VM) past its lease from writing after the next holder
began: it still believes it holds the lock.  Its token, though, is smaller
than the next holder's.  A fence stores the highest token it has let through
for a lock name and refuses any smaller one.

SQL (:func:`fence_sql`), in the caller's own transaction, before its write::

    UPDATE lock_fences SET token = :t WHERE name = :n AND token <= :t

No row updated (and no row to insert) means a newer holder wrote first: the
function raises :class:`StaleToken` and the caller's transaction rolls back.
The updated row stays locked until the caller commits, so a newer holder's
fence waits for this transaction and then goes through; an older one that
comes later is refused.

Redis (:func:`redis_fenced_set`): one Lua script compares the fence key with
the token, raises it, and writes the value, atomically.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table, select, update

from wisp.plugins.locks.api import StaleToken
from wisp.plugins.locks.models import LockFence

__all__ = ["FENCED_SET", "fence_sql", "redis_fenced_set"]


async def fence_sql(session: Any, name: str, token: int) -> None:
    """Raise the fence of ``name`` to ``token`` in ``session``'s transaction, or
    raise :class:`StaleToken` when a larger token already went through.

    ``session``: an ``AsyncSession`` or ``AsyncConnection`` inside a transaction;
    the write it protects must be made in the same transaction.
    """
    table: Table = LockFence.__table__  # type: ignore[assignment]
    stmt = update(table).where(table.c.name == name, table.c.token <= token).values(token=token)
    for _ in range(2):
        if (await session.execute(stmt)).rowcount:
            return
        dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            ins: Any = pg_insert(table)
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            ins = sqlite_insert(table)
        ins = ins.values(name=name, token=token).on_conflict_do_nothing()
        if (await session.execute(ins)).rowcount:
            return
        # Someone inserted the row between our two statements: the UPDATE decides.
    current = (await session.execute(select(table.c.token).where(table.c.name == name))).scalar()
    raise StaleToken(name, token, current)


# KEYS: fence key, target key; ARGV: token, value, px (0: no expiry).
# Returns -1 when written, else the fence's token that refused it.
FENCED_SET = """
local fence = tonumber(redis.call('GET', KEYS[1]) or '0')
local token = tonumber(ARGV[1])
if fence > token then return fence end
if fence < token then redis.call('SET', KEYS[1], ARGV[1]) end
if tonumber(ARGV[3]) > 0 then
  redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
else
  redis.call('SET', KEYS[2], ARGV[2])
end
return -1
"""


async def redis_fenced_set(
    client: Any,
    fence_key: str,
    name: str,
    token: int,
    key: str,
    value: str | bytes | int | float,
    *,
    px: int | None = None,
) -> None:
    """``SET key value`` only if ``token`` is at least the fence's; raise the fence.

    ``client``: a ``redis.asyncio.Redis``; ``px``: expiry in milliseconds.
    """
    script = client.register_script(FENCED_SET)  # EVALSHA; reloaded on NOSCRIPT
    result = int(await script(keys=[fence_key, key], args=[token, value, px or 0]))
    if result != -1:
        raise StaleToken(name, token, result)
