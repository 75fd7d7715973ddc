"""Access control and accounting: Globus identities, endpoint CurveZMQ keys and allowlists,
groups, generic grants (sharing), quotas and per-task usage.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    # Plain ADD COLUMN + unique indexes: SQLite does both in place, whereas a unique constraint
    # would make Alembic copy the table, which foreign keys from existing rows forbid.
    op.add_column("users", sa.Column("globus_sub", sa.String(64), nullable=True))
    op.create_index("ix_users_globus_sub", "users", ["globus_sub"], unique=True)
    op.add_column("endpoints", sa.Column("curve_public_key", sa.String(40), nullable=True))
    op.add_column("endpoints", sa.Column("restrict_functions", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_endpoints_curve_public_key", "endpoints", ["curve_public_key"], unique=True)
    op.create_table(
        "groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", name="fk_groups_owner_id"), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_index("ix_groups_owner_id", "groups", ["owner_id"])
    op.create_table(
        "group_members",
        sa.Column("group_id", sa.String(36), sa.ForeignKey("groups.id", ondelete="CASCADE", name="fk_group_members_group_id"), primary_key=True),
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_group_members_user_id"), primary_key=True),
    )
    op.create_index("ix_group_members_user_id", "group_members", ["user_id"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("resource_type", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("grantee_type", sa.String(16), nullable=False),
        sa.Column("grantee_id", sa.String(64), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("resource_type", "resource_id", "grantee_type", "grantee_id", name="uq_grants_resource"),
    )
    op.create_index("ix_grants_resource", "grants", ["resource_type", "resource_id"])
    op.create_table(
        "endpoint_allowed_functions",
        sa.Column("endpoint_id", sa.String(36), sa.ForeignKey("endpoints.id", ondelete="CASCADE", name="fk_endpoint_allowed_functions_endpoint_id"), primary_key=True),
        sa.Column("function_id", sa.String(36), primary_key=True),
    )
    op.create_table(
        "quotas",
        sa.Column("user_id", sa.String(36), sa.ForeignKey("users.id", ondelete="CASCADE", name="fk_quotas_user_id"), primary_key=True),
        sa.Column("period", sa.String(16), nullable=False),
        sa.Column("max_tasks", sa.Integer(), nullable=True),
        sa.Column("max_core_hours", sa.Float(), nullable=True),
    )
    op.create_table(
        "usage",
        sa.Column("task_id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(36), nullable=False),
        sa.Column("function_id", sa.String(64), nullable=False),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("runtime", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("wall_time", sa.Float(), nullable=False),
        sa.Column("cpu_time", sa.Float(), nullable=False),
        sa.Column("max_rss_kb", sa.Float(), nullable=False),
        _ts("submitted_at", nullable=True),
        _ts("finished_at"),
    )
    op.create_index("ix_usage_user_id_finished_at", "usage", ["user_id", "finished_at"])
    op.create_index("ix_usage_endpoint_id_finished_at", "usage", ["endpoint_id", "finished_at"])


def downgrade() -> None:
    for table in ("usage", "quotas", "endpoint_allowed_functions", "grants", "group_members", "groups"):
        op.drop_table(table)
    op.drop_index("ix_endpoints_curve_public_key", "endpoints")
    op.drop_index("ix_users_globus_sub", "users")
    for table, column in (("endpoints", "restrict_functions"), ("endpoints", "curve_public_key"), ("users", "globus_sub")):
        op.drop_column(table, column)  # SQLite >= 3.35 drops unindexed columns in place
