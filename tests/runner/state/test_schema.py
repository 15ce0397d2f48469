"""The state store's schema: migrations match the store's tables, old stores upgrade with their data, and databases
spotrun cannot use are refused with one line (exit 2) before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from specs import job_spec

from runner.errors import DatabaseError
from runner.state import schema
from runner.state.database import DatabaseLocation, connect
from runner.state.store import StateStore, _metadata, jobs_table

REPO = Path(__file__).resolve().parents[3]


def _spotrun(*args: str, env: dict[str, str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


def _engine(url: str) -> sa.Engine:
    return connect(DatabaseLocation(url, "test"))


def _at_revision(url: str, revision: str) -> None:
    """Build a database at an older revision, as an older spotrun left it."""
    with _engine(url).begin() as connection:
        config = schema._config(connection)
        command.upgrade(config, revision)


def _fresh_postgres(postgres_server) -> str:
    return postgres_server.create_database(f"schema_{uuid.uuid4().hex[:12]}")


def test_the_revisions_read_from_file_names_are_alembics_chain() -> None:
    from alembic.script import ScriptDirectory

    chain = [script.revision for script in ScriptDirectory.from_config(schema._config()).walk_revisions()]
    assert schema.revisions() == list(reversed(chain)) and schema.head() == chain[0]


def test_the_migrations_build_exactly_the_tables_the_store_uses(database_url: str) -> None:
    StateStore(database_url)  # a SQLite file is created here; the PostgreSQL database was upgraded by the fixture
    with _engine(database_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), _metadata)
    unexpected = [diff for diff in differences if not (diff[0] == "remove_table" and diff[1].name == schema.VERSION_TABLE)]
    assert unexpected == []
    assert schema.status(_engine(database_url)).current == schema.head()


@pytest.mark.parametrize("revision", ["0001", "0002"])
def test_a_store_made_before_migrations_is_upgraded_in_place_with_its_jobs(tmp_path: Path, revision: str) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    _at_revision(url, revision)
    with _engine(url).begin() as connection:  # what an old spotrun wrote: its rows, and no version table
        connection.exec_driver_sql(
            "INSERT INTO jobs (name, state, spec_json, spec_path, checkpoint_url, created_at, updated_at, preemptions, "
            "restarts_on_errors, cancel_requested) VALUES ('old', 'SUCCEEDED', '{}', 'old.yaml', 'file:///tmp/old', 1.0, 2.0, 3, 0, 0)"
        )
        connection.exec_driver_sql(f"DROP TABLE {schema.VERSION_TABLE}")
    assert schema.status(_engine(url)).current == revision

    store = StateStore(url)

    job = store.job("old")
    [kept] = store.read(sa.select(jobs_table.c.preemptions).where(jobs_table.c.name == "old"))  # no reader left, the old value kept
    assert (job.state.value, kept.preemptions, job.launched_by, job.lease_owner) == ("SUCCEEDED", 3, "", None)
    assert schema.status(store.engine).is_current


@pytest.mark.slow  # the session's PostgreSQL server
def test_a_shared_database_behind_is_refused_until_spotrun_db_upgrade(postgres_server, tmp_path: Path) -> None:
    url = _fresh_postgres(postgres_server)
    _at_revision(url, "0002")
    with pytest.raises(DatabaseError, match=r"revision 0002, this spotrun needs 0004; run `spotrun db upgrade`"):
        StateStore(url)
    assert schema.status(_engine(url)).current == "0002"  # refused, not upgraded behind the team's back

    env = {"SPOTRUN_DB": url, "SPOTRUN_HOME": str(tmp_path / "home")}
    upgraded = _spotrun("db", "upgrade", env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded from schema revision 0002 to 0004" in upgraded.stdout
    again = _spotrun("db", "upgrade", env=env)
    assert "already at schema revision 0004" in again.stdout
    status = json.loads(_spotrun("db", "status", "--json", env=env).stdout)
    assert (status["revision"], status["status"], status["source"]) == ("0004", "current", "SPOTRUN_DB")
    assert "secret" not in json.dumps(status) and postgres_server.password not in status["url"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the probe is closed


def _assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]


@pytest.mark.slow  # the session's PostgreSQL server, and `spotrun` processes
def test_an_unreachable_database_or_wrong_credentials_is_one_line_and_exit_2(postgres_server, tmp_path: Path) -> None:
    home = tmp_path / "home"
    spec = tmp_path / "job.yaml"
    spec.write_text("name: nothing-written\ntrain: {command: 'true'}\nresources: {provider: local}\n")
    unreachable = f"postgresql://spotrun:pw@127.0.0.1:{_closed_port()}/spotrun"
    _assert_refused(
        _spotrun("run", str(spec), env={"SPOTRUN_DB": unreachable, "SPOTRUN_HOME": str(home)}),
        "cannot open the state database",
        "SPOTRUN_DB",
        "refused",
    )

    wrong_password = postgres_server.url(password="not-the-password")
    result = _spotrun("jobs", env={"SPOTRUN_DB": wrong_password, "SPOTRUN_HOME": str(home)})
    _assert_refused(result, "password authentication failed", "***")
    assert "not-the-password" not in result.stderr

    _assert_refused(_spotrun("jobs", env={"SPOTRUN_DB": "not a url", "SPOTRUN_HOME": str(home)}), "SPOTRUN_DB", "is not a database URL")
    config = home / "config.yaml"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(f"db: {unreachable}\n")
    _assert_refused(_spotrun("jobs", env={"SPOTRUN_HOME": str(home)}), f"db: in {config}", "cannot open the state database")
    config.write_text("database: sqlite:///x.db\n")
    _assert_refused(_spotrun("jobs", env={"SPOTRUN_HOME": str(home)}), str(config), "unknown key 'database'")
    assert not (home / "state.db").exists()  # no store was made anywhere instead
    assert not (home / "local").exists()


def test_a_database_at_a_newer_schema_is_refused_and_left_untouched(database_url: str, tmp_path: Path) -> None:
    StateStore(database_url).create_job(job_spec(name="theirs"), spec_path="-", checkpoint_url="file:///tmp/theirs", launched_by="ana")
    with _engine(database_url).begin() as connection:  # what a newer spotrun leaves behind
        connection.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '0099'"))
    sqlite_file = Path(database_url.removeprefix("sqlite:///")) if database_url.startswith("sqlite") else None
    before = hashlib.sha256(sqlite_file.read_bytes()).hexdigest() if sqlite_file else None
    spec = tmp_path / "job.yaml"
    spec.write_text("name: mine\ntrain: {command: 'true'}\nresources: {provider: local}\n")
    env = {"SPOTRUN_DB": database_url, "SPOTRUN_HOME": str(tmp_path / "home")}

    for args in (("run", str(spec)), ("db", "upgrade"), ("jobs", "--all-users")):
        _assert_refused(_spotrun(*args, env=env), "schema revision 0099, newer than this spotrun knows", "upgrade spotrun")

    with _engine(database_url).connect() as connection:
        names = [row.name for row in connection.execute(sa.text("SELECT name FROM jobs"))]
        assert names == ["theirs"]
        assert connection.execute(sa.text(f"SELECT version_num FROM {schema.VERSION_TABLE}")).scalar_one() == "0099"
    if sqlite_file:
        assert hashlib.sha256(sqlite_file.read_bytes()).hexdigest() == before
