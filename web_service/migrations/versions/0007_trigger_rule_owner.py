"""Shared triggers: a rule remembers who bound it (its tasks run as that user).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trigger_rules") as batch:
        batch.add_column(sa.Column("owner_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_trigger_rules_owner_id", "users", ["owner_id"], ["id"])
        batch.create_index("ix_trigger_rules_owner_id", ["owner_id"])


def downgrade() -> None:
    with op.batch_alter_table("trigger_rules") as batch:
        batch.drop_index("ix_trigger_rules_owner_id")
        batch.drop_constraint("fk_trigger_rules_owner_id", type_="foreignkey")
        batch.drop_column("owner_id")
