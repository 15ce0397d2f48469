"""Which database holds spotrun's state, and opening it with errors a user can act on.

A SQLite file under ``SPOTRUN_HOME`` is the default, for one person. ``$SPOTRUN_DB`` (or ``db:``
in the user config) names any SQLAlchemy URL; ``postgresql://...`` is a team's shared store.
Opening connects once at once, so an unreachable server or a refused password is one line naming
the database (password hidden) and where its URL came from, before anything is read or written.
A database that fails later (a SQLite file that is damaged or read-only, a server that goes away)
is one line too: every engine turns such errors into a ``DatabaseError`` (``_explain_failures``).
A URL is shown only through ``hide_password``, which hides the password of malformed URLs too.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from runner.errors import DatabaseError
from runner.state.user_config import load_user_config

DB_VARIABLE = "SPOTRUN_DB"
CONNECT_TIMEOUT_S = 10  # an unreachable host fails in seconds, not after the OS's TCP timeout
SQLITE_BUSY_TIMEOUT_S = 30  # several controllers on one SQLite file take turns writing


@dataclass(frozen=True)
class DatabaseLocation:
    """A database URL and where it was configured (for error messages)."""

    url: str
    source: str

    @property
    def is_sqlite(self) -> bool:
        """A file for one person (upgraded in place), not a shared server."""
        return self.url.startswith("sqlite")


def default_database_url(home: Path) -> str:
    """SQLite file under ``SPOTRUN_HOME``."""
    return f"sqlite:///{home / 'state.db'}"


def database_location(home: Path) -> DatabaseLocation:
    """``$SPOTRUN_DB``, else the config file's ``db``, else the SQLite file in ``home``."""
    if os.environ.get(DB_VARIABLE):
        return DatabaseLocation(os.environ[DB_VARIABLE], DB_VARIABLE)
    config = load_user_config(home)
    if config.db:
        return DatabaseLocation(config.db, f"db: in {config.path}")
    return DatabaseLocation(default_database_url(home), "the default under SPOTRUN_HOME")


_SCHEME = re.compile(r"^[\w+.-]+:?/+")  # how a URL starts, however mistyped: postgresql://, postgresql//, postgresql:/
_engines: dict[str, Engine] = {}  # one connection pool per database per process, however many stores are opened on it


def connect(location: DatabaseLocation) -> Engine:
    """The engine for the location, tried once when first made: DatabaseError (exit 2) when it is malformed, unreachable or refuses us."""
    if location.url in _engines:
        return _engines[location.url]
    url = _parse(location)
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            folder = Path(url.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise DatabaseError(
                    f"cannot create the folder {folder} of the state database ({location.source}): {error.strerror or error}"
                ) from None
        connect_args["timeout"] = SQLITE_BUSY_TIMEOUT_S
    elif url.get_backend_name() == "postgresql":
        connect_args.update(connect_timeout=CONNECT_TIMEOUT_S, application_name="spotrun")
    try:
        engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=url.get_backend_name() != "sqlite")
    except sa.exc.NoSuchModuleError:
        raise DatabaseError(
            f"{location.source}: {url.drivername!r} is not a database SQLAlchemy knows; use postgresql:// or sqlite:///"
        ) from None
    except ImportError as missing:
        raise DatabaseError(
            f"{location.source}: the {url.get_backend_name()} driver ({missing.name}) is not installed; "
            "for PostgreSQL: pip install 'spotrun[postgres]'"
        ) from None
    try:
        with engine.connect() as connection:
            if url.get_backend_name() == "sqlite":
                connection.exec_driver_sql("PRAGMA schema_version")  # reads the header: a file that is not SQLite fails here
    except sa.exc.DBAPIError as error:
        engine.dispose()
        raise DatabaseError(f"cannot open the state database {shown_url(url)} ({location.source}): {_first_line(error)}") from None
    sa.event.listen(engine, "handle_error", functools.partial(_explain_failures, f"{shown_url(url)} ({location.source})"))
    _engines[location.url] = engine
    return engine


def _explain_failures(database: str, context: sa.engine.ExceptionContext) -> None:
    """A failure of the database itself, at any statement, as one DatabaseError line instead of a traceback.

    What fails there is not spotrun's logic but the database: a SQLite file damaged or cut short
    ("database disk image is malformed"), read-only, locked past the busy timeout, or a server
    that went away. Constraint violations and other errors a caller handles pass unchanged, and
    so do failed pre-pings, which the pool answers by reconnecting.
    """
    error = context.sqlalchemy_exception
    failed = isinstance(error, sa.exc.OperationalError) or type(error) is sa.exc.DatabaseError
    if isinstance(error, sa.exc.DBAPIError) and failed and not context.is_pre_ping:
        raise DatabaseError(f"the state database {database} failed: {_first_line(error)}") from None


_PASSWORD_QUERY = re.compile(r"([?&](?:password|passwd|pwd)=)[^&]*", re.IGNORECASE)


def hide_password(url: str) -> str:
    """``url`` fit to show: its password replaced by ``***``, whether or not it parses as a URL.

    A malformed URL still holds the password its user typed (``postgresql//user:PASSWORD@host/db``),
    and the message that calls it malformed shows it: there, in the part before the last ``@``,
    everything after the first ``:`` that follows the scheme (up to its slashes) is hidden.
    """
    try:
        shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    except (sa.exc.ArgumentError, ValueError):
        credentials, at, rest = url.rpartition("@")
        scheme = _SCHEME.match(credentials)
        prefix = scheme.group(0) if scheme else ""
        user, colon, _ = credentials[len(prefix) :].partition(":")
        shown = f"{prefix}{user}:***@{rest}" if at and colon else url
    return _PASSWORD_QUERY.sub(r"\1***", shown)  # libpq also takes ?password=...


def _parse(location: DatabaseLocation) -> URL:
    try:
        url = sa.engine.make_url(location.url)
    except (sa.exc.ArgumentError, ValueError) as error:
        reason = " (its port is not a number)" if isinstance(error, ValueError) else ""  # the text could be the password, misplaced
        raise DatabaseError(
            f"{location.source}: {hide_password(location.url)!r} is not a database URL{reason}; "
            "expected e.g. postgresql://user:password@host:5432/spotrun or sqlite:////path/state.db"
        ) from None
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # psycopg 3: `postgresql://` would mean psycopg2 to SQLAlchemy
    return url


def shown_url(url: URL) -> str:
    """A database URL fit to show: the backend's name, no password (in the user part or the query)."""
    return hide_password(url.set(drivername=url.get_backend_name()).render_as_string(hide_password=False))


def _first_line(error: sa.exc.DBAPIError) -> str:
    """The driver's own reason, on one line (psycopg adds hints on further lines)."""
    lines = [line.strip() for line in str(error.orig).splitlines() if line.strip()]
    return " ".join(lines[0].split()) if lines else type(error.orig).__name__
