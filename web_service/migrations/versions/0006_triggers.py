"""Triggers: schedules and webhooks that fire rules (a function on an endpoint); their events
and the tasks each event's rules made.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "triggers",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner_id", sa.String(36), sa.ForeignKey("users.id", name="fk_triggers_owner_id"), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_scheduled_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_triggers_owner_id", "triggers", ["owner_id"])
    op.create_table(
        "trigger_rules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("trigger_id", sa.String(36), sa.ForeignKey("triggers.id", name="fk_trigger_rules_trigger_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("function_id", sa.String(36), nullable=False),
        sa.Column("endpoint_id", sa.String(36), nullable=False),
        sa.Column("args_template", sa.Text(), nullable=False),
        sa.Column("filters", sa.Text(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_trigger_rules_trigger_id", "trigger_rules", ["trigger_id"])
    op.create_table(
        "trigger_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("trigger_id", sa.String(36), sa.ForeignKey("triggers.id", name="fk_trigger_events_trigger_id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event_key", sa.String(200), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("trigger_id", "event_key", name="uq_trigger_events_key"),
    )
    op.create_index("ix_trigger_events_trigger_id_received_at", "trigger_events", ["trigger_id", "received_at"])
    op.create_table(
        "trigger_firings",
        sa.Column("event_id", sa.String(36), sa.ForeignKey("trigger_events.id", name="fk_trigger_firings_event_id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("rule_id", sa.String(36), primary_key=True),
        sa.Column("task_id", sa.String(36), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("task_id", name="uq_trigger_firings_task_id"),
    )
    op.create_index("ix_trigger_firings_rule_id", "trigger_firings", ["rule_id"])
    op.create_index("ix_trigger_firings_state_created_at", "trigger_firings", ["state", "created_at"])


def downgrade() -> None:
    op.drop_table("trigger_firings")
    op.drop_table("trigger_events")
    op.drop_table("trigger_rules")
    op.drop_table("triggers")
