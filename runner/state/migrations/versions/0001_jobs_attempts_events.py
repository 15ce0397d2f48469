"""Jobs, their attempts, settings and events: the schema of spotrun before the ledger (issues 1 to 4).

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


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("spec_json", sa.Text, nullable=False),
        sa.Column("spec_path", sa.Text, nullable=False),
        sa.Column("checkpoint_url", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("preemptions", sa.Integer, nullable=False),
        sa.Column("restarts_on_errors", sa.Integer, nullable=False),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("progress_json", sa.Text, nullable=True),
        sa.Column("message", sa.Text, nullable=True),
    )
    op.create_table(
        "attempts",
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("token", sa.String(128), nullable=False, unique=True),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("market", sa.String(16), nullable=False),
        sa.Column("price_usd_per_hour", sa.Float, nullable=False),
        sa.Column("on_demand_price_usd_per_hour", sa.Float, nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=True),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("launched_at", sa.Float, nullable=True),
        sa.Column("ended_at", sa.Float, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("exit_code", sa.Integer, nullable=True),
    )
    op.create_table(
        "settings",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("data_json", sa.Text, nullable=True),
    )
    op.create_index("ix_events_job", "events", ["job"])
