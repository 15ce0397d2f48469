"""Alembic's entry point: migrations run on the connection ``runner.state.schema`` hands over, never from a config file.

On PostgreSQL a transaction-scoped advisory lock makes two ``spotrun db upgrade`` started at once
run one after the other: the second finds the schema current and does nothing.
"""

from __future__ import annotations

from alembic import context

MIGRATION_LOCK_KEY = 0x5907_2C4E  # any constant: spotrun's own advisory lock

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table=context.config.attributes["version_table"],
    render_as_batch=True,  # SQLite alters a table by copying it; batch mode does that for us
)
with context.begin_transaction():
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
    context.run_migrations()
