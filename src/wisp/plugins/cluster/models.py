"""The cluster plugin's table (its own Alembic branch, ``cluster``).

``cluster_generations`` holds one shard plan per generation.  Rows are written
once and only change state (pending -> active -> draining -> retired), so every
process reads the same plan.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from wisp.plugins.storage.api import Model

__all__ = ["GenerationRow"]


class GenerationRow(Model):
    """One generation's shard plan and its state."""

    __tablename__ = "cluster_generations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    shard_count: Mapped[int] = mapped_column(Integer)
    range_size: Mapped[int] = mapped_column(Integer)
    max_concurrency: Mapped[int] = mapped_column(Integer)
    #: pending, active, draining or retired.
    state: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
