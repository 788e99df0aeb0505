"""cluster generations

Revision ID: 3e5f7a9b1c2d
Revises:
Create Date: 2026-11-25 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e5f7a9b1c2d"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("cluster",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cluster_generations",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("shard_count", sa.Integer(), nullable=False),
        sa.Column("range_size", sa.Integer(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_generations")),
    )


def downgrade() -> None:
    op.drop_table("cluster_generations")
