"""Alembic migrations of the state store's schema; ``runner.schema`` runs them and checks versions."""
