"""Operators: a flag on users that opens the dashboard's Operators page, and an index for its
service-wide error rates (usage by finish time).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN with a server default: SQLite adds it in place, existing users are not operators.
    op.add_column("users", sa.Column("is_operator", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_usage_finished_at", "usage", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_finished_at", "usage")
    op.drop_column("users", "is_operator")
