"""Alembic migrations of the state store's schema; ``runner.state.schema`` runs them and checks versions."""
