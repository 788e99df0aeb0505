"""The ``reminders`` table (the plugin's own Alembic branch, ``reminders``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import Model

__all__ = ["PENDING", "Reminder"]

PENDING, SENT, CANCELLED = "pending", "sent", "cancelled"
#: Discord will never take it: the channel is gone, or the bot may not post there.
UNDELIVERABLE = "undeliverable"


class Reminder(Model):
    """One reminder: who asked, where to say it, what and when.

    ``status`` moves ``pending`` -> ``sent``, ``cancelled`` or ``undeliverable``
    exactly once; the
    job that fires it checks the status, so a cancelled reminder whose job
    still runs says nothing, and a job run twice says it once.
    """

    __tablename__ = "reminders"
    __table_args__ = (Index("ix_reminders_user_status", "user_id", "status"),)

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    guild_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    channel_id: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    job_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: When it was sent (or found undeliverable).
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
