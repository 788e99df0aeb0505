"""saga_runs table

Revision ID: 5a9a0c1d7e21
Revises:
Create Date: 2026-11-25 19:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from wisp.plugins.storage.api import JSONDocument

revision: str = "5a9a0c1d7e21"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("sagas",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "saga_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("saga", sa.String(length=200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=True),
        sa.Column("input", JSONDocument(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("steps", JSONDocument(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("cancel", sa.Boolean(), nullable=False),
        sa.Column("owner", sa.String(length=200), nullable=True),
        sa.Column("token", sa.String(length=32), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_saga_runs")),
        sa.UniqueConstraint("key", name=op.f("uq_saga_runs_key")),
    )
    with op.batch_alter_table("saga_runs", schema=None) as batch_op:
        batch_op.create_index("ix_saga_runs_lease", ["status", "lease_expires_at"], unique=False)
        batch_op.create_index("ix_saga_runs_finished", ["finished_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_saga_runs_saga"), ["saga"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("saga_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_saga_runs_saga"))
        batch_op.drop_index("ix_saga_runs_finished")
        batch_op.drop_index("ix_saga_runs_lease")
    op.drop_table("saga_runs")
