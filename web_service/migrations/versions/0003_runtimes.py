"""Runtimes: a registry of container images and Python environments, and a function's default.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runtimes",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", name="fk_runtimes_owner_id"), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("image", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_runtimes_owner_id", "runtimes", ["owner_id"])
    # Plain ADD COLUMN (no foreign key): SQLite adds it in place; the service checks the id.
    op.add_column("functions", sa.Column("runtime_id", sa.String(36), nullable=True))


def downgrade() -> None:
    op.drop_column("functions", "runtime_id")
    op.drop_index("ix_runtimes_owner_id", "runtimes")
    op.drop_table("runtimes")
