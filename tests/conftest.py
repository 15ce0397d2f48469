"""Test-session safety and shared fixtures.

Every test process, and every Python process it starts, gets fake AWS credentials, no instance
metadata probing, and a socket guard that allows only loopback connections.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

NETGUARD = Path(__file__).parent / "netguard"
_SAFE_ENVIRONMENT = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}

os.environ.update(_SAFE_ENVIRONMENT)
for _variable in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_EC2"):
    os.environ.pop(_variable, None)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(NETGUARD), os.environ.get("PYTHONPATH")]))
sys.path.insert(0, str(NETGUARD))
sys.path.insert(0, str(Path(__file__).parent / "support"))  # shared test helpers (fault_proxy, aws_support)
import sitecustomize  # noqa: E402,F401  - the guard, in this process too
from fault_proxy import FaultProxy  # noqa: E402
from postgres_server import PostgresServer, find_postgres_bindir  # noqa: E402

REQUIRE_POSTGRES = "SPOTRUN_TEST_REQUIRE_POSTGRES"  # set by .ci/run: a missing server fails the run instead of skipping


@pytest.fixture
def spotrun_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh SPOTRUN_HOME for one test."""
    home = tmp_path / "spotrun-home"
    monkeypatch.setenv("SPOTRUN_HOME", str(home))
    return home


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real S3/EC2 HTTP endpoint (moto in server mode) on 127.0.0.1, started once per session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    try:
        yield endpoint
    finally:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        server.stop()


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A new empty bucket on the moto server; returns its s3:// URL."""
    import uuid

    import boto3

    name = f"spotrun-test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy on 127.0.0.1 in front of the session's moto server."""
    proxy = FaultProxy(moto_endpoint)
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on 127.0.0.1, started once per session in a temporary folder (as an unprivileged user)."""
    bindir = find_postgres_bindir()
    if bindir is None:
        message = "no PostgreSQL server binaries (Debian: apt-get install postgresql)"
        if os.environ.get(REQUIRE_POSTGRES):
            pytest.fail(f"{message}, and {REQUIRE_POSTGRES} is set")
        pytest.skip(message)
    server = PostgresServer(bindir=bindir).start()
    try:
        yield server
    finally:
        server.stop()


# The PostgreSQL half starts a real server (once per session) and migrates a database per test: `slow`, so
# `make check` runs every store test on SQLite and needs no PostgreSQL install.
@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty state store at the newest schema: a SQLite file, or a fresh database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'state.db'}"
    from runner.state import schema
    from runner.state.database import DatabaseLocation, connect

    server: PostgresServer = request.getfixturevalue("postgres_server")
    url = server.create_database(f"test_{uuid.uuid4().hex[:12]}")
    schema.upgrade(connect(DatabaseLocation(url, "test")))
    return url
