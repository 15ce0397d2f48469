"""Team mode: a controller's lease on each live job, who wrote each event, and indexes for team-wide listings (issue 7).

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
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("lease_owner", sa.String(128), nullable=True))
        jobs.add_column(sa.Column("lease_expires_at", sa.Float, nullable=True))
    with op.batch_alter_table("events") as events:
        events.add_column(sa.Column("actor", sa.String(128), nullable=False, server_default=""))
    op.create_index("ix_jobs_state", "jobs", ["state"])
    op.create_index("ix_jobs_launched_by", "jobs", ["launched_by"])
