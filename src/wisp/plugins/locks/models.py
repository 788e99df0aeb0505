"""The locks plugin's tables (its own Alembic branch, ``locks``).

``locks`` holds the PostgreSQL backend's leases and token counters;
``lock_fences`` holds, per lock name, the highest fencing token a fenced SQL
write has carried (any backend's tokens: see ``fencing.fence_sql``).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import Model

__all__ = ["LockFence", "LockRow"]


class LockRow(Model):
    """One lock name: its last token and, while held, holder and expiry."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    holder: Mapped[str | None] = mapped_column(String(200), nullable=True)
    #: NULL or past: free.  The database's clock decides.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class LockFence(Model):
    """The highest token a fenced write for ``name`` carried."""

    __tablename__ = "lock_fences"

    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
