"""The ``idempotency_keys`` table (the idempotency plugin's own Alembic branch)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import JSONDocument, Model

__all__ = ["IdempotencyRow"]


class IdempotencyRow(Model):
    """One key; see :class:`wisp.plugins.idempotency.api.Record`."""

    __tablename__ = "idempotency_keys"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    state: Mapped[str] = mapped_column(String(20))
    owner: Mapped[str | None] = mapped_column(String(200), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    result: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: In progress: the claim's end; completed or failed: when cleanup may delete it.
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
