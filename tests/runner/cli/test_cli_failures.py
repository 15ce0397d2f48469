"""What goes wrong around a job (its budget, its store, its checkpoint URL, its reports) is one line and an exit code, never a traceback.

In-process through the Typer app where the exit path allows it, against real SQLite and
PostgreSQL stores, real files, and the real moto S3 server.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from ledger_rows import add_interval
from specs import job_spec
from typer.testing import CliRunner

from checkpoints.progress import Progress, TrainingStatus
from runner.cli.app import app
from runner.errors import JobStateError
from runner.instance.protocol import AgentStatus, Heartbeat
from runner.spec.job_spec import load_spec
from runner.state.store import Attempt, StateStore, open_store

REPO = Path(__file__).resolve().parents[3]
_NO_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


def spotrun(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(app, list(args), env=env)


def one_error_line(result: Result, exit_code: int = 2) -> str:
    """The single ``error:`` line a refused command printed, after checking it exited ``exit_code`` without a traceback."""
    assert result.exit_code == exit_code and isinstance(result.exception, (SystemExit, type(None))), (result.exception, result.output)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def spec_file(folder: Path, name: str = "job", **sections: Any) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "train": {"command": "python train.py"}, **sections}))
    return path


def record(home: Path, name: str = "job", **sections: Any) -> StateStore:
    """A job recorded as `spotrun submit` records it, without the submission's checks."""
    path = spec_file(home.parent, name, **sections)
    spec = load_spec(path)
    store = open_store(home)
    store.create_job(spec, spec_path=str(path))
    return store


# ------------------------------------------------------------------ budgets


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "0", "-5", "1e12"])
def test_resume_refuses_a_budget_that_is_no_budget_and_changes_nothing(spotrun_home: Path, budget: str) -> None:
    store = record(spotrun_home, budget={"max_usd": 5.0})
    store.for_controller("service@elsewhere").acquire_leases(["job"], ttl_s=600)  # a live job another controller drives
    before = store.job("job").spec_json

    line = one_error_line(spotrun("resume", "job", "--budget", budget))

    assert line.startswith("error: --budget: expected a budget in US dollars above 0 and at most 1,000,000,000, got ")
    assert store.job("job").spec_json == before
    assert "budget" not in [event.kind for _, event in store.events("job")]


def _no_constants(constant: str) -> None:
    raise AssertionError(f"{constant} is not JSON")


def test_status_and_jobs_json_stay_json_when_training_diverged(spotrun_home: Path) -> None:
    store = record(spotrun_home)
    now = time.time()
    diverged = Progress(
        status=TrainingStatus.TRAINING, time=now, step=3, epoch=0, loss=float("nan"), metrics={"val_loss": float("inf"), "acc": 0.5}
    )
    store.set_progress("job", Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=now, progress=diverged))

    status = spotrun("status", "job", "--json")
    jobs = spotrun("jobs", "--json", "--all-users")

    assert status.exit_code == 0 and jobs.exit_code == 0, status.output + jobs.output
    shown = json.loads(status.stdout, parse_constant=_no_constants)
    assert shown["loss"] is None and shown["metrics"] == {"val_loss": None, "acc": 0.5} and shown["step"] == 3
    assert json.loads(jobs.stdout, parse_constant=_no_constants)[0]["loss"] is None


def test_checkpoints_json_stays_json_with_a_nan_loss_in_an_older_manifest(spotrun_home: Path, tmp_path: Path) -> None:
    url = tmp_path / "checkpoints"
    record(spotrun_home, checkpoint={"url": str(url)})
    step = url / "step-000000000012"
    step.mkdir(parents=True)
    (step / "model.ckpt").write_bytes(b"x")
    files = {"model.ckpt": {"size_bytes": 1, "sha256": "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}}
    manifest = {"format_version": 1, "step": 12, "epoch": 0, "time": 1.0, "metrics": {"loss": float("nan")}, "files": files}
    (step / "MANIFEST.json").write_text(json.dumps(manifest))  # Python's json writes the NaN that older spotruns left

    result = spotrun("checkpoints", "job", "--json")

    assert result.exit_code == 0, result.output
    assert [info["metrics"] for info in json.loads(result.stdout, parse_constant=_no_constants)] == [{"loss": None}]


# ---------------------------------------------------------------- CSV reports


def test_csv_cells_a_spreadsheet_would_run_are_neutralised_and_numbers_kept(spotrun_home: Path) -> None:
    store = open_store(spotrun_home)
    now = time.time()
    formula = '=HYPERLINK("http://evil.example","click")'
    # cost above the on-demand cost: a negative saving, which must stay a number
    add_interval(store, "a", 1, now - 7200, now - 3600, cost_usd=2.0, on_demand_usd=1.5, team=formula, launched_by="@ana", provider="local")
    add_interval(store, "b", 1, now - 7200, now - 3600, cost_usd=1.0, on_demand_usd=3.0, team="-2+3", launched_by="\tbo", provider="local")

    by_team = list(csv.DictReader(io.StringIO(spotrun("cost", "--by", "team", "--format", "csv").stdout)))
    by_user = list(csv.DictReader(io.StringIO(spotrun("cost", "--by", "user", "--format", "csv").stdout)))
    attempts = list(csv.DictReader(io.StringIO(spotrun("cost", "a", "--format", "csv").stdout)))

    assert {row["team"]: row["savings_usd"] for row in by_team} == {"'" + formula: "-0.5", "'-2+3": "2.0"}
    assert sorted(row["user"] for row in by_user) == ["'\tbo", "'@ana"]
    assert attempts[0]["team"] == "'" + formula and attempts[0]["launched_by"] == "'@ana" and float(attempts[0]["savings_usd"]) == -0.5


# ------------------------------------------------------------ the state store


@pytest.mark.parametrize(
    "url",
    [
        "postgresql//spotrun:PASSWORD@db.internal/spotrun",
        "postgresql://spotrun:PASSWORD@db.internal:port/spotrun",
        "spotrun:PASSWORD@db.internal",
        "postgresql:/spotrun:PA//SS:WORD@db.internal/spotrun",
    ],
)
def test_a_malformed_database_url_is_shown_without_its_password(spotrun_home: Path, url: str) -> None:
    line = one_error_line(spotrun("jobs", env={"SPOTRUN_DB": url}))

    assert "SPOTRUN_DB" in line and "is not a database URL" in line and "***" in line
    assert "PASSWORD" not in line and "WORD" not in line


@pytest.mark.parametrize(
    "url", ["postgresql://spotrun@127.0.0.1:9/spotrun?password=PASSWORD", "postgresql://:PASSWORD@/spotrun?host=/nowhere&Password=PASSWORD"]
)
def test_a_password_in_the_query_of_a_database_url_is_hidden_too(spotrun_home: Path, url: str) -> None:
    line = one_error_line(spotrun("jobs", env={"SPOTRUN_DB": url}))

    assert "SPOTRUN_DB" in line or "database" in line, line
    assert "PASSWORD" not in line and "***" in line, line


@pytest.mark.parametrize(
    "config",
    [
        'db: {url: "postgresql://spotrun:PASSWORD@db.internal/spotrun"}\n',
        'user: ana\ndb: "postgresql://spotrun:PASSWORD@db.internal/spotrun\n',
    ],
)
def test_a_bad_config_file_never_quotes_the_password_in_it(spotrun_home: Path, tmp_path: Path, config: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config)

    line = one_error_line(spotrun("jobs", env={"SPOTRUN_CONFIG": str(path)}))

    assert str(path) in line and "PASSWORD" not in line


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_state_db_is_one_line_and_left_as_it_is(spotrun_home: Path, tmp_path: Path, damage: str) -> None:
    state_db = spotrun_home / "state.db"
    spotrun_home.mkdir()
    if damage == "garbage":
        state_db.write_bytes(b"these are not the bytes of a database\n" * 100)
    else:  # a real store, cut to a third of its pages (a disk that filled up, a copy that stopped)
        record(tmp_path / "elsewhere")
        whole = (tmp_path / "elsewhere" / "state.db").read_bytes()
        state_db.write_bytes(whole[: len(whole) // 3])
    damaged = state_db.read_bytes()

    for command in (["jobs"], ["status", "job"], ["run", str(spec_file(tmp_path))]):
        line = one_error_line(spotrun(*command))
        assert f"state database sqlite:///{state_db}" in line, line
    assert state_db.read_bytes() == damaged


def _read_only(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` is read-only: chmod for a user, a read-only bind mount for root (who ignores modes)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("root needs unshare(1) and a mount namespace for a read-only folder")
    return ["unshare", "--mount", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" || exit 99; exec "$@"', str(folder)]


_COMMANDS_IN_ONE_PROCESS = """
import json, os, sys
from typer.testing import CliRunner
from runner.cli.app import app
results = []
for home, args in json.loads(sys.argv[1]):
    os.environ["SPOTRUN_HOME"] = home
    result = CliRunner().invoke(app, args)
    results.append([result.exit_code, result.stderr, repr(result.exception)])
print(json.dumps(results))
"""


def test_a_read_only_spotrun_home_is_one_line_and_nothing_is_recorded(tmp_path: Path) -> None:
    home = tmp_path / "home"
    record(home, "old")  # a store made while the folder was writable
    elsewhere = tmp_path / "checkpoints"  # writable: the store is what cannot be written
    commands = [
        (str(home), ["run", str(spec_file(tmp_path, "new", checkpoint={"url": str(elsewhere)}))]),
        (str(home), ["run", str(spec_file(tmp_path, "here"))]),  # checkpoints under the read-only home
        (str(home / "sub"), ["jobs"]),
    ]
    prefix = _read_only(home)
    done = subprocess.run(
        [*prefix, sys.executable, "-c", _COMMANDS_IN_ONE_PROCESS, json.dumps(commands)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode == 99:
        pytest.skip(f"no read-only bind mount here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr

    results = json.loads(done.stdout)
    for (exit_code, stderr, exception), expected in zip(
        results, ["readonly database", "checkpoint.url", "cannot create the folder"], strict=True
    ):
        assert exit_code == 2 and exception.startswith("SystemExit"), (exit_code, stderr, exception)
        assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error: ") and expected in stderr, stderr
    assert [job.name for job in open_store(home).jobs()] == ["old"]


def test_two_submissions_of_one_name_at_once_record_exactly_one(database_url: str) -> None:
    StateStore(database_url)  # the schema, before the race
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def submit(index: int) -> None:
        store = StateStore(database_url)
        start.wait()
        try:
            store.create_job(
                job_spec({"tags": {"by": str(index)}}, name="twin"), spec_path=f"{index}.yaml", checkpoint_url="file:///tmp/twin"
            )
            outcomes.append("recorded")
        except JobStateError as error:
            assert "a job named 'twin' already exists (PENDING)" in str(error)
            outcomes.append("refused")

    threads = [threading.Thread(target=submit, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(outcomes) == ["recorded"] + ["refused"] * 5
    store = StateStore(database_url)
    assert [job.name for job in store.jobs()] == ["twin"] and len(store.events("twin")) == 1


# ---------------------------------------------------------- the checkpoint URL


def _forget_s3_sessions(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """No AWS credentials from here on, in new S3 clients and in fsspec's cached ones alike, until the test ends.

    The S3 filesystems made meanwhile (without credentials) are dropped again at the end, or
    fsspec's instance cache would hand them to later tests.
    """
    import s3fs

    for variable in _NO_CREDENTIALS:
        monkeypatch.delenv(variable, raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    request.addfinalizer(s3fs.S3FileSystem.clear_instance_cache)


def test_an_s3_checkpoint_url_without_credentials_is_refused_before_anything_is_recorded(
    spotrun_home: Path, tmp_path: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    _forget_s3_sessions(monkeypatch, request)
    path = spec_file(tmp_path, checkpoint={"url": f"{s3_bucket}/job"})

    line = one_error_line(spotrun("run", str(path)))

    assert line.startswith(f"error: {path}: checkpoint.url: expected storage spotrun can list, write, read and delete in, got ")
    assert "NoCredentialsError" in line
    assert not spotrun_home.exists()  # no store, no job: the name is free for the fixed spec


def test_a_checkpoint_url_in_a_bucket_that_does_not_exist_is_refused_and_no_bucket_is_made(
    spotrun_home: Path, tmp_path: Path, moto_endpoint: str
) -> None:
    import boto3

    path = spec_file(tmp_path, checkpoint={"url": "s3://spotrun-typo-in-the-bucket-name/job"})

    result = spotrun("run", str(path))

    [line] = [line for line in result.output.splitlines() if "werkzeug" not in line and '" 404 -' not in line]  # the moto server's own log
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert line.startswith(f"error: {path}: checkpoint.url: expected storage spotrun can list, write, read and delete in"), line
    assert "bucket does not exist" in line
    buckets = [bucket["Name"] for bucket in boto3.client("s3", endpoint_url=moto_endpoint).list_buckets()["Buckets"]]
    assert "spotrun-typo-in-the-bucket-name" not in buckets  # s3fs's makedirs would have created it
    assert not spotrun_home.exists()


def test_status_and_logs_of_a_job_whose_checkpoint_url_became_unreachable(
    spotrun_home: Path, s3_bucket: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    store = record(spotrun_home, checkpoint={"url": f"{s3_bucket}/job"})
    now = time.time()
    store.start_attempt(
        Attempt(
            job="job",
            number=1,
            token="t-1",
            provider="local",
            instance_type="g5.xlarge",
            zone="local-1a",
            market="spot",
            price_usd_per_hour=0.45,
            on_demand_price_usd_per_hour=1.006,
            instance_id=None,
            requested_at=now - 60,
            launched_at=None,
            ended_at=None,
            end_reason=None,
            outcome=None,
            exit_code=None,
        )
    )
    add_interval(store, "job", 1, now - 50, None, provider="local")
    _forget_s3_sessions(monkeypatch, request)

    status = spotrun("status", "job")
    as_json = spotrun("status", "job", "--json")
    logs = spotrun("logs", "job")

    assert status.exit_code == 0 and "job  PENDING" in status.stdout, status.output
    assert (
        len(status.stderr.strip().splitlines()) == 1
        and status.stderr.startswith("warning: no heartbeats")
        and "NoCredentialsError" in status.stderr
    )
    assert as_json.exit_code == 0 and json.loads(as_json.stdout)["nodes"] == []
    assert "cannot read the logs of job 'job'" in one_error_line(logs, exit_code=1)
