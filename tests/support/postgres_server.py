"""A real, throwaway PostgreSQL server for tests: ``initdb`` into a temp folder, start, use, remove.

Why a real server and not SQLite or a mock: the ledger's behaviour under PostgreSQL (types,
transactions, locking, authentication failures) is what production sees, and only the real server
shows it. Starting one takes a second or two, so a test session starts one server and hands each
test a fresh, empty database of its own (``create_database``).

How it stays harmless:

* Everything lives in one ``tempfile.mkdtemp`` folder (data directory, unix socket, log, password
  file), removed by ``stop()``; nothing touches a system cluster or ``/var/lib/postgresql``.
* The server listens only on 127.0.0.1, on a free port picked by the kernel, and its unix socket
  is inside the temp folder, so parallel test runs and a system PostgreSQL never collide.
* Durability is switched off (``fsync``, ``synchronous_commit``, ``full_page_writes``): the data
  is thrown away anyway, and it makes the server several times faster on slow CI disks.
* TCP connections need the superuser's password (scram-sha-256), so tests can check that a wrong
  password fails; local (unix socket) connections are trusted, which only this process's user and
  the server's own user can reach.

PostgreSQL refuses to run as root. When this process is root (CI containers usually are), the
server's commands run as the ``postgres`` user if it exists (Debian's package creates it), else as
``nobody``, through ``setpriv`` (no PAM session, environment untouched) or, failing that,
``runuser``; the temp folder is handed to that user.

``url()`` returns a plain ``postgresql://`` URL; callers pick the driver themselves (e.g. replace
the scheme with ``postgresql+psycopg://`` for SQLAlchemy with psycopg 3).

Run this file directly for a self-check: ``python tests/support/postgres_server.py``.
"""

from __future__ import annotations

import atexit
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

__all__ = ["PostgresServer", "find_postgres_bindir"]

_TOOLS = ("initdb", "pg_ctl", "postgres")
SUPERUSER = "spotrun"
DEFAULT_DATABASE = "spotrun_test"
_START_ATTEMPTS = 3  # the free port is only free until someone else binds it; retry on a clash
_CMD_TIMEOUT_S = 60.0  # every subprocess call gets a timeout: a hung server must not hang CI
_WAIT_S = 30  # pg_ctl's own -t for start and stop
_LOG_TAIL_LINES = 40


def _has_tools(folder: Path) -> bool:
    return all(os.access(folder / tool, os.X_OK) for tool in _TOOLS)


def _version_key(folder: Path) -> tuple[int, ...]:
    """``/usr/lib/postgresql/15/bin`` -> (15,), so "9.6" sorts below "15" (string order would not)."""
    return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)


def find_postgres_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or None if this machine has none.

    ``initdb`` on PATH wins (the user or CI chose it). PATH often holds only symlinks to a few of
    the tools (e.g. /usr/local/bin/initdb -> /usr/lib/postgresql/15/bin/initdb, with no
    ``postgres`` beside it), so the link's target folder is tried too. Otherwise the newest
    ``/usr/lib/postgresql/*/bin``: Debian's ``postgresql`` package installs the server there, off
    PATH.
    """
    initdb = shutil.which("initdb")
    if initdb:
        for folder in (Path(initdb).parent, Path(initdb).resolve().parent):
            if _has_tools(folder):
                return folder
    candidates = [p for p in Path("/usr/lib/postgresql").glob("*/bin") if _has_tools(p)]
    return max(candidates, key=_version_key) if candidates else None


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This process's environment without PG* variables, which would steer initdb/pg_ctl/libpq
    (PGDATA, PGHOST, PGPORT, PGOPTIONS, ...) to some other cluster or setting. LC_ALL=C keeps
    server messages in English, so log tails in errors are readable and greppable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _world_traversable(folder: Path) -> bool:
    """Whether every folder from / down to ``folder`` lets others through (o+x), which the
    unprivileged server user needs to reach its data directory inside it."""
    for part in (folder, *folder.parents):
        if not part.stat().st_mode & stat.S_IXOTH:
            return False
    return True


class PostgresServer:
    """One throwaway PostgreSQL server. Use as a context manager, or call start() and stop().

    >>> with PostgresServer() as pg:
    ...     url = pg.create_database("test_ledger_1")   # fresh, empty database

    ``database`` is created at start and is what ``url()`` points at by default.
    """

    def __init__(self, database: str = DEFAULT_DATABASE, bindir: Path | None = None) -> None:
        self.database = database
        self.password = secrets.token_urlsafe(18)
        self.port: int | None = None
        self._bindir = bindir
        self._tmp: Path | None = None
        self._run_as: pwd.struct_passwd | None = None  # None: run the tools as ourselves

    # ----------------------------------------------------------------- public API

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def user(self) -> str:
        return SUPERUSER

    @property
    def running(self) -> bool:
        return self._tmp is not None and self.port is not None

    def url(self, database: str | None = None, password: str | None = None) -> str:
        """``postgresql://spotrun:PASSWORD@127.0.0.1:PORT/DATABASE``.

        ``database`` defaults to the one created at start; ``password`` defaults to the real one
        (pass another to test authentication failures). The scheme names no driver: map it,
        e.g. to ``postgresql+psycopg://``, where one is needed.
        """
        if not self.running:
            raise RuntimeError("PostgresServer is not running")
        pw = self.password if password is None else password
        db = self.database if database is None else database
        return f"postgresql://{SUPERUSER}:{quote(pw, safe='')}@{self.host}:{self.port}/{quote(db, safe='')}"

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its ``url()``, so each test can get its own."""
        import psycopg
        from psycopg import sql

        if not self.running:
            raise RuntimeError("PostgresServer is not running")
        with psycopg.connect(
            host=self.host, port=self.port, user=SUPERUSER, password=self.password, dbname="postgres", autocommit=True, connect_timeout=10
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def start(self) -> PostgresServer:
        """initdb into a fresh temp folder, start the server, create ``database``.

        Raises RuntimeError, with the end of the server log, if any of it fails; what was set up
        by then is torn down first.
        """
        if self._tmp is not None:
            raise RuntimeError("PostgresServer already started")
        bindir = self._bindir or find_postgres_bindir()
        if bindir is None:
            raise RuntimeError(
                "no PostgreSQL server binaries (initdb, pg_ctl, postgres) found: "
                "install Debian's `postgresql` package or put initdb on PATH"
            )
        self._bindir = bindir
        self._run_as = self._unprivileged_user() if os.geteuid() == 0 else None
        self._tmp = Path(tempfile.mkdtemp(prefix="spotrun-pg-", dir=self._temp_parent()))
        atexit.register(self.stop)  # a test run that dies without stop() still leaves no server
        try:
            self._initdb()
            self._start_server()
            self.create_database(self.database)
        except BaseException as exc:
            detail = f"{exc}\n--- end of server log ---\n{self._log_tail()}"
            self.stop()
            if isinstance(exc, Exception):
                raise RuntimeError(f"could not start a test PostgreSQL server: {detail}") from exc
            raise
        return self

    def stop(self) -> None:
        """Stop the server at once (``-m immediate``: no clean shutdown, the data is thrown away)
        and remove the temp folder. Safe to call twice, or after a failed start."""
        tmp, self._tmp = self._tmp, None
        atexit.unregister(self.stop)
        if tmp is None:
            return
        if (tmp / "data" / "postmaster.pid").exists():
            try:
                self._run([self._tool("pg_ctl"), "-D", str(tmp / "data"), "-m", "immediate", "-w", "-t", str(_WAIT_S), "stop"], cwd=tmp)
            except (RuntimeError, subprocess.TimeoutExpired):
                self._kill_postmaster(tmp / "data" / "postmaster.pid")
        self.port = None
        shutil.rmtree(tmp, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd:
        """Who runs the server when we are root: ``postgres`` (Debian's package makes it), else
        ``nobody``. Root itself is refused by initdb and postgres."""
        for name in ("postgres", "nobody"):
            try:
                return pwd.getpwnam(name)
            except KeyError:
                continue
        raise RuntimeError(
            "running as root, and neither a `postgres` nor a `nobody` user exists to run PostgreSQL as (it refuses to run as root)"
        )

    def _temp_parent(self) -> str | None:
        """Where mkdtemp puts the folder: the usual temp dir, unless we are root and that dir
        cannot be reached by the server's user (e.g. TMPDIR=/root/tmp), then /tmp. The unix
        socket path (limited to ~107 bytes) lives there too, so a short parent matters."""
        if self._run_as is None:
            return None
        default = Path(tempfile.gettempdir())
        return str(default) if _world_traversable(default) else "/tmp"

    def _tool(self, name: str) -> str:
        assert self._bindir is not None
        return str(self._bindir / name)

    def _as_server_user(self, cmd: list[str]) -> list[str]:
        """Prefix ``cmd`` so it runs as the unprivileged user when we are root. setpriv first: no
        PAM session and nothing in the environment changed; runuser where setpriv is missing."""
        user = self._run_as
        if user is None:
            return cmd
        if shutil.which("setpriv"):
            return ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups", *cmd]
        if shutil.which("runuser"):
            return ["runuser", "-u", user.pw_name, "--", *cmd]
        raise RuntimeError("running as root, but neither setpriv nor runuser is available to drop privileges for PostgreSQL")

    def _chown(self, path: Path) -> None:
        if self._run_as is not None:
            os.chown(path, self._run_as.pw_uid, self._run_as.pw_gid)

    def _run(self, cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run one server tool (as the server's user), with a clean environment and a timeout.

        ``cwd`` is the temp folder: the server user may not be able to enter our working
        directory (e.g. /root), and initdb/postgres complain when they cannot.
        """
        proc = subprocess.run(
            self._as_server_user(cmd),
            cwd=cwd,
            env=_clean_env(),
            text=True,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_CMD_TIMEOUT_S,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{Path(cmd[0]).name} exited with {proc.returncode}:\n{proc.stdout.strip()}\n{proc.stderr.strip()}".rstrip())
        return proc

    def _initdb(self) -> None:
        assert self._tmp is not None
        self._chown(self._tmp)
        pwfile = self._tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        pwfile.chmod(0o600)
        self._chown(pwfile)
        self._run(
            [
                self._tool("initdb"),
                "-D",
                str(self._tmp / "data"),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            cwd=self._tmp,
        )
        pwfile.unlink()
        # Settings go in postgresql.conf, not on pg_ctl's -o (which a shell re-parses, so paths
        # would need quoting). Only the port changes between start attempts, so it stays on -o.
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self._tmp}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "300",  # every test process (controllers, CLI runs) keeps a small pool open
        }
        with (self._tmp / "data" / "postgresql.conf").open("a") as conf:
            conf.write("\n# spotrun test server\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _start_server(self) -> None:
        """pg_ctl start on a free port; on a port clash (another process took the port between
        our pick and the server's bind), try again with a new one."""
        assert self._tmp is not None
        log = self._tmp / "server.log"
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = _free_port()
            size_before = log.stat().st_size if log.exists() else 0
            try:
                self._run(
                    [
                        self._tool("pg_ctl"),
                        "-D",
                        str(self._tmp / "data"),
                        "-l",
                        str(log),
                        "-w",
                        "-t",
                        str(_WAIT_S),
                        "-o",
                        f"-p {port}",
                        "start",
                    ],
                    cwd=self._tmp,
                )
            except RuntimeError:
                new_log = log.read_text(errors="replace")[size_before:] if log.exists() else ""
                if attempt < _START_ATTEMPTS and "could not bind" in new_log:
                    continue
                raise
            self.port = port
            return

    def _log_tail(self) -> str:
        if self._tmp is None or not (self._tmp / "server.log").exists():
            return "(no server log)"
        lines = (self._tmp / "server.log").read_text(errors="replace").splitlines()
        return "\n".join(lines[-_LOG_TAIL_LINES:]) or "(server log is empty)"

    @staticmethod
    def _kill_postmaster(pidfile: Path) -> None:
        """Last resort when pg_ctl stop fails: SIGKILL the postmaster named in its pid file (its
        children exit when it goes)."""
        try:
            pid = int(pidfile.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            pass


if __name__ == "__main__":
    # Self-check: start, connect with SQLAlchemy over psycopg 3, reject a wrong password, stop.
    import sqlalchemy
    from sqlalchemy.exc import OperationalError

    def _engine(url: str) -> sqlalchemy.Engine:
        return sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))

    print("bindir:", find_postgres_bindir())
    t0 = time.monotonic()
    server = PostgresServer().start()
    t_started = time.monotonic()
    try:
        print("url:", server.url(password="***"))
        engine = _engine(server.url())
        with engine.connect() as conn:
            assert conn.execute(sqlalchemy.text("select 1")).scalar_one() == 1
            print("server:", conn.execute(sqlalchemy.text("show server_version")).scalar_one())
        engine.dispose()

        fresh = _engine(server.create_database("self_check_fresh"))
        with fresh.connect() as conn:
            assert conn.execute(sqlalchemy.text("select current_database()")).scalar_one() == "self_check_fresh"
        fresh.dispose()

        bad = _engine(server.url(password="wrong-password"))
        try:
            with bad.connect():
                raise AssertionError("a wrong password was accepted")
        except OperationalError as exc:
            assert "password authentication failed" in str(exc), exc
            print("wrong password: rejected")
        bad.dispose()
        tmp = server._tmp
    finally:
        t_checks = time.monotonic()
        server.stop()
    t_stopped = time.monotonic()
    assert tmp is not None and not tmp.exists(), "temp folder left behind"
    print(f"ok: start {t_started - t0:.2f}s, checks {t_checks - t_started:.2f}s, stop {t_stopped - t_checks:.2f}s")
