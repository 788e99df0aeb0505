"""Shard plans per generation, in SQL: written once, read by every process.

The first generation is inserted with a fixed id, so when several processes
start at once the first writer wins and the others read its row.  Later
generations come from ``wisp cluster reshard`` and only change state:
pending -> active (the flip) -> draining -> retired.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from wisp.plugins.cluster.models import GenerationRow

__all__ = [
    "STATES",
    "Plan",
    "PlanError",
    "all_plans",
    "create_pending",
    "ensure_first",
    "flip",
    "get_plan",
    "retire",
]

STATES = ("pending", "active", "draining", "retired")


class PlanError(Exception):
    """The shard plan does not allow what was asked; the message says why."""


@attrs.frozen
class Plan:
    """One generation's shard plan."""

    generation: int
    shard_count: int
    range_size: int
    max_concurrency: int
    state: str
    created_at: datetime

    def ranges(self) -> list[tuple[int, int]]:
        """The ranges processes own, ``(first, last)`` inclusive, in order."""
        size = self.range_size
        return [
            (first, min(first + size, self.shard_count) - 1)
            for first in range(0, self.shard_count, size)
        ]

    def describe(self) -> str:
        n = len(self.ranges())
        return (
            f"generation {self.generation} ({self.state}): {self.shard_count} shards in "
            f"{n} range{'s' if n != 1 else ''} of {self.range_size}, "
            f"max concurrency {self.max_concurrency}"
        )

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["ranges"] = [f"{a}-{b}" for a, b in self.ranges()]
        return out


def _plan(row: GenerationRow) -> Plan:
    created = row.created_at
    if created.tzinfo is None:  # SQLite hands back naive datetimes
        created = created.replace(tzinfo=UTC)
    return Plan(row.id, row.shard_count, row.range_size, row.max_concurrency, row.state, created)


def _check(shard_count: int, range_size: int, max_concurrency: int) -> None:
    for name, value in (
        ("shard_count", shard_count),
        ("range_size", range_size),
        ("max_concurrency", max_concurrency),
    ):
        if value < 1:
            raise PlanError(f"{name} must be at least 1, not {value}")


async def all_plans(db: Any) -> list[Plan]:
    """Every generation, oldest first."""
    async with db.session() as session:
        rows = (await session.scalars(select(GenerationRow).order_by(GenerationRow.id))).all()
    return [_plan(r) for r in rows]


async def get_plan(db: Any, generation: int | None = None) -> Plan | None:
    """Generation ``generation``, or the active one when ``None``."""
    query = select(GenerationRow)
    if generation is None:
        query = query.where(GenerationRow.state == "active")
    else:
        query = query.where(GenerationRow.id == generation)
    async with db.session() as session:
        row = (await session.scalars(query)).first()
    return _plan(row) if row is not None else None


async def ensure_first(
    db: Any, shard_count: int, range_size: int, max_concurrency: int
) -> tuple[Plan, bool]:
    """The active plan; when no generation exists yet, write generation 1 from
    these numbers (the first writer wins, the others read its row).  The flag
    says whether this call wrote it."""
    found = await get_plan(db)
    if found is not None:
        return found, False
    _check(shard_count, range_size, max_concurrency)
    now = datetime.now(UTC)
    try:
        async with db.transaction() as session:
            existing = await session.scalar(select(func.count()).select_from(GenerationRow))
            if existing:
                raise _Written
            session.add(
                GenerationRow(
                    id=1,
                    shard_count=shard_count,
                    range_size=range_size,
                    max_concurrency=max_concurrency,
                    state="active",
                    created_at=now,
                    updated_at=now,
                )
            )
    except (IntegrityError, _Written):
        pass  # another process wrote it between our two reads, or first: read theirs
    else:
        return (await get_plan(db, 1)) or _missing(1), True
    found = await get_plan(db)
    if found is None:
        raise PlanError(
            "there is no active shard generation, but older ones exist: see "
            "`wisp cluster status` (a pending generation becomes active once all "
            "its shards are READY)"
        )
    return found, False


class _Written(Exception):
    """Generation rows appeared after the first read: another process wrote them."""


def _missing(generation: int) -> Plan:
    raise PlanError(f"generation {generation} vanished right after it was written")


async def create_pending(db: Any, shard_count: int, range_size: int, max_concurrency: int) -> Plan:
    """A new pending generation beside the active one (``wisp cluster reshard``)."""
    _check(shard_count, range_size, max_concurrency)
    plans = await all_plans(db)
    if not any(p.state == "active" for p in plans):
        raise PlanError(
            "no active shard generation yet: start `wisp run` once (it writes generation 1 "
            "from Discord's recommendation or [cluster] shard_count)"
        )
    busy = [p for p in plans if p.state in ("pending", "draining")]
    if busy:
        raise PlanError(
            f"generation {busy[0].generation} is still {busy[0].state}; wait until it is "
            "active or retired before resharding again"
        )
    now = datetime.now(UTC)
    generation = max(p.generation for p in plans) + 1
    try:
        async with db.transaction() as session:
            session.add(
                GenerationRow(
                    id=generation,
                    shard_count=shard_count,
                    range_size=range_size,
                    max_concurrency=max_concurrency,
                    state="pending",
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise PlanError(
            f"generation {generation} was written by someone else at the same time"
        ) from None
    return (await get_plan(db, generation)) or _missing(generation)


async def flip(db: Any, generation: int) -> bool:
    """Make pending ``generation`` active and the active one draining, in one
    transaction; False when it was not pending (someone flipped it first)."""
    now = datetime.now(UTC)
    async with db.transaction() as session:
        result: Any = await session.execute(
            update(GenerationRow)
            .where(GenerationRow.id == generation, GenerationRow.state == "pending")
            .values(state="active", updated_at=now)
        )
        if result.rowcount != 1:
            return False
        await session.execute(
            update(GenerationRow)
            .where(GenerationRow.state == "active", GenerationRow.id != generation)
            .values(state="draining", updated_at=now)
        )
    return True


async def retire(db: Any, generation: int) -> bool:
    """A draining generation whose processes are all gone becomes retired."""
    async with db.transaction() as session:
        result: Any = await session.execute(
            update(GenerationRow)
            .where(GenerationRow.id == generation, GenerationRow.state == "draining")
            .values(state="retired", updated_at=datetime.now(UTC))
        )
    return bool(result.rowcount == 1)
