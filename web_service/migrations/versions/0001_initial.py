"""Initial registry: users, tokens, functions, endpoints.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(255), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_tokens_user_id"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("label", sa.String(255), nullable=True),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.UniqueConstraint("token_hash", name="uq_tokens_token_hash"),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    for table in ("functions", "endpoints"):
        specific = (
            [
                sa.Column("strategy", sa.String(32), nullable=False),
                sa.Column("python", sa.String(16), nullable=False),
                sa.Column("body", sa.LargeBinary(), nullable=False),
                sa.Column("body_sha256", sa.String(64), nullable=False),
            ]
            if table == "functions"
            else [sa.Column("secret_hash", sa.String(64), nullable=False)]
        )
        op.create_table(
            table,
            sa.Column("id", sa.String(36), primary_key=True),
            sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", name=f"fk_{table}_owner_id"), nullable=False),
            sa.Column("name", sa.String(255), nullable=False),
            sa.Column("description", sa.Text(), nullable=False),
            *specific,
            _ts("created_at"),
            _ts("deleted_at", nullable=True),
        )
        op.create_index(f"ix_{table}_owner_id", table, ["owner_id"])


def downgrade() -> None:
    for table in ("endpoints", "functions", "tokens", "users"):
        op.drop_table(table)
