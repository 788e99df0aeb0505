"""The ``saga_runs`` table (the sagas plugin's own Alembic branch).

One row per run; its steps' journal (status, attempts, output, error,
deadlines, compensation) is a JSON document rewritten whole by each fenced
write, so a write is one ``UPDATE ... WHERE id = ? AND token = ?``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import JSONDocument, Model

__all__ = ["SagaRunRow"]


class SagaRunRow(Model):
    """One saga run; see :class:`wisp.plugins.sagas.api.Run`."""

    __tablename__ = "saga_runs"
    __table_args__ = (
        # What recovery scans: non-terminal runs by lease expiry.
        Index("ix_saga_runs_lease", "status", "lease_expires_at"),
        Index("ix_saga_runs_finished", "finished_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    saga: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[int] = mapped_column(Integer)
    key: Mapped[str | None] = mapped_column(String(200), nullable=True, unique=True)
    input: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
    status: Mapped[str] = mapped_column(String(20))
    steps: Mapped[Any] = mapped_column(JSONDocument())
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    cancel: Mapped[bool] = mapped_column(Boolean, default=False)
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    token: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), nullable=True
    )
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
