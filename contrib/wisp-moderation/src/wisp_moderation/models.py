"""The ``moderation_cases`` table (the plugin's own Alembic branch, ``moderation``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import Model

__all__ = ["ACTIONS", "Case"]

#: What a case records; ``unban`` is the automatic end of a timed ban.
ACTIONS = ("warn", "timeout", "kick", "ban", "unban")


class Case(Model):
    """One moderation action in a guild's log, numbered per guild from 1."""

    __tablename__ = "moderation_cases"
    __table_args__ = (
        UniqueConstraint("guild_id", "number"),
        Index("ix_moderation_cases_guild_user", "guild_id", "user_id"),
    )

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    guild_id: Mapped[int] = mapped_column(BigInteger)
    #: The case number users see: 1, 2, 3 ... in each guild.
    number: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[int] = mapped_column(BigInteger)
    #: Who acted; None for the bot itself (a timed ban running out).
    moderator_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    #: End of a timeout or of a timed ban.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: When a timed ban was lifted.
    lifted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: The case this one follows from (an automatic unban names its ban).
    ref_number: Mapped[int | None] = mapped_column(Integer, nullable=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "guild_id": self.guild_id,
            "number": self.number,
            "action": self.action,
            "user_id": self.user_id,
            "moderator_id": self.moderator_id,
            "reason": self.reason,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "lifted_at": _iso(self.lifted_at),
            "ref_number": self.ref_number,
        }


def _iso(when: datetime | None) -> str | None:
    from wisp_moderation.when import utc

    return utc(when).isoformat() if when is not None else None
