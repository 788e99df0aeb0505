"""The ``audit`` service: appends records to ``audit_log`` and reads them back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select

import wisp
from wisp.plugins.audit.api import AuditRecord
from wisp.plugins.audit.models import AuditEntry

__all__ = ["AuditService"]


def _utc(when: datetime) -> datetime:
    # SQLite keeps no zone; Wisp writes UTC.
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _row(record: AuditRecord) -> AuditEntry:
    return AuditEntry(
        at=record.at,
        actor_id=record.actor_id,
        action=record.action,
        target=record.target,
        guild_id=record.guild_id,
        request_id=record.request_id,
        outcome=record.outcome,
        before=record.before,
        after=record.after,
        detail=record.detail,
    )


def entry_dict(row: AuditEntry) -> dict[str, Any]:
    """A stored record as JSON-ready data (``at`` in ISO 8601 UTC)."""
    return {
        "id": row.id,
        "at": _utc(row.at).isoformat(),
        "actor_id": row.actor_id,
        "action": row.action,
        "target": row.target,
        "guild_id": row.guild_id,
        "request_id": row.request_id,
        "outcome": row.outcome,
        "before": row.before,
        "after": row.after,
        "detail": row.detail,
    }


class AuditService(wisp.BaseService):
    """Append-only: it adds and lists records and offers no way to change one."""

    name = "audit"
    requires: Sequence[str] = ("db", "migrations")

    def __init__(self, app: wisp.Wisp) -> None:
        super().__init__()
        self.app = app
        self.db: Any = None

    async def start(self) -> None:
        self.db = self.app.services.get("db")
        await super().start()

    async def write(self, record: AuditRecord, session: Any = None) -> None:
        """Append ``record``: in ``session`` (committed with the caller's
        change) or in a transaction of its own."""
        if session is not None:
            session.add(_row(record))
            return
        if self.db is None:
            raise RuntimeError("the audit service is not started")
        async with self.db.transaction() as s:
            s.add(_row(record))

    async def list(
        self,
        *,
        guild_id: int | None = None,
        since: datetime | None = None,
        action: str | None = None,
        request_id: str | None = None,
        limit: int | None = 100,
        newest_first: bool = False,
    ) -> list[dict[str, Any]]:
        """Records matching every filter given; ``action`` ending in ``.``
        matches a prefix (``policy.``).  ``limit`` keeps the newest ones."""
        query = select(AuditEntry).order_by(AuditEntry.id.desc())
        if guild_id is not None:
            query = query.where(AuditEntry.guild_id == guild_id)
        if since is not None:
            query = query.where(AuditEntry.at >= since)
        if action is not None:
            if action.endswith("."):
                query = query.where(AuditEntry.action.startswith(action, autoescape=True))
            else:
                query = query.where(AuditEntry.action == action)
        if request_id is not None:
            query = query.where(AuditEntry.request_id == request_id)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.session() as s:
            rows = (await s.scalars(query)).all()
        out = [entry_dict(r) for r in rows]
        return out if newest_first else out[::-1]
