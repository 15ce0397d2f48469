"""The state store's schema version: Alembic migrations (``runner/state/migrations``), the start-up check, and upgrades.

Every spotrun checks the version before it reads or writes anything. A shared server database is
upgraded only by `spotrun db upgrade`, run once for the team: a laptop with a newer spotrun must
not change the schema under everyone else's controllers. A SQLite file belongs to one person, so
it is upgraded in place when opened. A database at a revision this spotrun does not know was
upgraded by a newer spotrun; nothing is written to it.

Stores made before migrations existed have no version table; their tables tell which revision
they are at (``_unversioned_revision``), and they are stamped with it before upgrading.

Checking reads the version row with plain SQL and takes the revisions from the migration files'
names (``NNNN_what.py``, revision id ``NNNN``, each revising the one before): every command
checks, and importing Alembic would add a sixth of a second to each. Alembic runs the upgrades.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from runner.errors import DatabaseError
from runner.state.database import shown_url

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "spotrun_schema_version"  # not alembic_version: a team database may hold another application's
_MIGRATIONS = Path(__file__).parent / "migrations"


@dataclass(frozen=True)
class SchemaStatus:
    """Where a database stands: its revision (None: empty), the newest this spotrun knows, and what that means."""

    current: str | None
    head: str
    known: bool  # False: a newer spotrun upgraded it past what this one knows

    @property
    def is_current(self) -> bool:
        """Up to date: spotrun may read and write it."""
        return self.current == self.head

    @property
    def is_ahead(self) -> bool:
        """At a revision from a newer spotrun."""
        return self.current is not None and not self.known


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    config.attributes["version_table"] = VERSION_TABLE
    return config


def revisions() -> list[str]:
    """This spotrun's schema revisions, oldest first, from the migration files' names."""
    return sorted(path.name.split("_", 1)[0] for path in (_MIGRATIONS / "versions").glob("[0-9][0-9][0-9][0-9]_*.py"))


def head() -> str:
    """The newest revision this spotrun's migrations reach."""
    return revisions()[-1]


def status(engine: Engine) -> SchemaStatus:
    """Read the database's revision (or infer it, for a store made before migrations); writes nothing."""
    with engine.connect() as connection:
        current = _revision(connection)
    known = current is None or current in revisions()
    return SchemaStatus(current=current, head=head(), known=known)


def upgrade(engine: Engine) -> SchemaStatus:
    """Bring the database to the newest revision, in one transaction; returns where it stood before.

    A database ahead of this spotrun is refused, and nothing is written.
    """
    before = status(engine)
    if before.is_ahead:
        raise DatabaseError(_ahead_message(engine, before))
    if before.is_current:
        return before
    from alembic import command

    with engine.begin() as connection:
        config = _config(connection)
        if not _has_version_table(connection) and before.current is not None:
            command.stamp(config, before.current)  # an unversioned store from before migrations
        command.upgrade(config, "head")
    return before


def check(engine: Engine, *, upgrade_in_place: bool) -> None:
    """Refuse a database this spotrun cannot use as it is, or (``upgrade_in_place``) upgrade one that is behind."""
    found = status(engine)
    if found.is_current:
        return
    if found.is_ahead:
        raise DatabaseError(_ahead_message(engine, found))
    if upgrade_in_place:
        upgrade(engine)
        return
    where = _safe_url(engine)
    if found.current is None:
        raise DatabaseError(
            f"the state database {where} has no spotrun tables yet; create them with `spotrun db upgrade` (once, for everyone)"
        )
    raise DatabaseError(
        f"the state database {where} is at schema revision {found.current}, this spotrun needs {found.head}; "
        "run `spotrun db upgrade` (once, for everyone: stop older spotruns first)"
    )


def _ahead_message(engine: Engine, found: SchemaStatus) -> str:
    return (
        f"the state database {_safe_url(engine)} is at schema revision {found.current}, newer than this spotrun knows "
        f"(its newest is {found.head}); upgrade spotrun (pip install -U spotrun) to use it"
    )


def _safe_url(engine: Engine) -> str:
    return shown_url(engine.url)


def _revision(connection: Connection) -> str | None:
    if _has_version_table(connection):
        return connection.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()
    return _unversioned_revision(connection)


def _has_version_table(connection: Connection) -> bool:
    return sa.inspect(connection).has_table(VERSION_TABLE)


def _unversioned_revision(connection: Connection) -> str | None:
    """The revision of a store made before migrations, from its tables: the ledger came with revision 0002."""
    tables = set(sa.inspect(connection).get_table_names())
    if "jobs" not in tables:
        return None
    return "0002" if "ledger" in tables else "0001"
