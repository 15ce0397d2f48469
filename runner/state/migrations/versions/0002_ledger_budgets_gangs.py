"""The ledger (one row per billed instance interval, every node of a gang), budgets and who submitted each job (issues 5 and 6).

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


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("launched_by", sa.String(64), nullable=False, server_default=""))
        jobs.add_column(sa.Column("stop_requested", sa.String(16), nullable=True))
        jobs.add_column(sa.Column("stop_requested_at", sa.Float, nullable=True))
        jobs.add_column(sa.Column("budget_alerted_pct", sa.Integer, nullable=False, server_default="0"))
    with op.batch_alter_table("attempts") as attempts:
        attempts.add_column(sa.Column("gpus", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "ledger",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("node", sa.Integer, nullable=False),
        sa.Column("instance_id", sa.String(64), nullable=False),
        sa.Column("address", sa.String(64), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("instance_type", sa.String(64), nullable=False),
        sa.Column("zone", sa.String(64), nullable=False),
        sa.Column("market", sa.String(16), nullable=False),
        sa.Column("gpus", sa.Integer, nullable=False),
        sa.Column("price_usd_per_hour", sa.Float, nullable=False),
        sa.Column("on_demand_price_usd_per_hour", sa.Float, nullable=False),
        sa.Column("requested_at", sa.Float, nullable=False),
        sa.Column("start", sa.Float, nullable=False),
        sa.Column("end", sa.Float, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=True),
        sa.Column("on_demand_usd", sa.Float, nullable=True),
        sa.Column("prices_json", sa.Text, nullable=True),
        sa.Column("productive_at", sa.Float, nullable=True),
        sa.Column("work_lost_s", sa.Float, nullable=True),
        sa.Column("steps_lost", sa.Integer, nullable=True),
        sa.Column("team", sa.String(64), nullable=True),
        sa.Column("tags_json", sa.Text, nullable=False),
        sa.Column("launched_by", sa.String(64), nullable=False),
        sa.UniqueConstraint("job", "attempt", "node"),
    )
    op.create_index("ix_ledger_job", "ledger", ["job"])
    op.create_index("ix_ledger_start", "ledger", ["start"])
