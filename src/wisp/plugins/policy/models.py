"""``policy_rules`` and ``policy_audit``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import JSONDocument, Model

ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite numbers INTEGER keys only


def _now() -> datetime:
    return datetime.now(UTC)


class PolicyRule(Model):
    """One rule: allow or deny a capability at a scope, with a priority."""

    __tablename__ = "policy_rules"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    #: The guild whose rule this is; NULL for a global rule.
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    capability: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(10))
    scope: Mapped[str] = mapped_column(String(10))
    scope_id: Mapped[int | None] = mapped_column(BigInteger)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class PolicyAudit(Model):
    """Rule changes as recorded before the audit plugin; no longer written.

    The audit plugin's first migration copies these rows into ``audit_log``,
    where rule changes go now.  The table stays so no earlier record is lost.
    """

    __tablename__ = "policy_audit"

    id: Mapped[int] = mapped_column(ID, primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    actor_id: Mapped[int | None] = mapped_column(BigInteger)
    guild_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    change: Mapped[str] = mapped_column(String(10))
    before: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
    after: Mapped[Any] = mapped_column(JSONDocument(), nullable=True)
