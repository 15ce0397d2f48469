"""Each job's key, which signs the messages between its controller and its instances (issue 14).

Jobs recorded before keys existed keep none and are read unsigned, as before.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as jobs:
        jobs.add_column(sa.Column("secret", sa.String(64), nullable=True))
