"""The ``audit_log`` table (the audit plugin's own Alembic branch)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import JSONDocument, Model

__all__ = ["AuditEntry"]

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite numbers INTEGER keys only


class AuditEntry(Model):
    """One audited action; rows are only ever added (see docs/observability.md)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    #: The user who acted; NULL for the shell or the bot itself.
    actor_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    #: Dotted: ``policy.set``, ``ratelimit.reset``, ``command.ban``.
    action: Mapped[str] = mapped_column(String(200), index=True)
    #: What the action was done to (``rule:12``, a command name, a plugin).
    target: Mapped[str | None] = mapped_column(String(200), nullable=True)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    #: ``ok``, ``denied`` or ``error`` for audited commands; NULL for changes.
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    before: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
    after: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
    detail: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
