"""One controller cycle over many live jobs: wall time, CPU time and SQL statements, on the local provider and on aws (moto).

A fresh SQLite store is filled through ``StateStore`` with N RUNNING jobs, each as a launch leaves it
(``tests/support/running_jobs.py``): one open attempt, one open ledger row, a budget with a spending
horizon, and the signed heartbeat its agent wrote. The instances exist but train nothing. On the
local provider each has the files a local host keeps (``cloud.local_files``: its spec, and a running
state whose host is one idle process of this script), so ``poll`` reads real files and finds a live
host. On aws they are instances of a moto server this script starts on 127.0.0.1 (a process of its
own, so its CPU is not counted, with fake credentials), launched with the store's tag; the
heartbeats are objects in that server's S3.

Timed: ``ControllerService.cycle``, what `spotrun controller` runs every polling interval (list the
live jobs, group them by provider, one ``Controller.cycle_many`` per group: leases, one batched
poll, heartbeats, prices, budgets, horizons), after two warm-up cycles that grant the horizons and
note the first heartbeats. ``SPOTRUN_POLL_INTERVAL_S`` is set tiny so that every cycle is due and
fetches prices again, as cycles a polling interval apart do. Median of ``--repeats``: wall time,
this process's CPU time (``time.process_time``), and the SQL statements sent (a
``before_cursor_execute`` listener on the store's engine), of which SELECTs.

    .venv/bin/python benchmarks/controller_cycle.py                                   # local 10/100/1000, aws 10/100, ~3 min
    .venv/bin/python benchmarks/controller_cycle.py --aws-jobs 10,100,1000            # and 1,000 on moto, ~15 min
    .venv/bin/python benchmarks/controller_cycle.py --local-jobs 10 --aws-jobs 10     # quick

Writes benchmarks/results/controller_cycle.json (or --output).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import boto3
import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "support")]  # this checkout's spotrun, and the tests' running jobs

from running_jobs import ON_DEMAND_USD_PER_HOUR, SPOT_USD_PER_HOUR, RunningInstance, idle_host, local_instance, record_running  # noqa: E402

from cloud.provider import TAG_JOB, TAG_STORE  # noqa: E402
from runner.control.providers import POLL_INTERVAL_ENV  # noqa: E402
from runner.control.service import ControllerService  # noqa: E402
from runner.spec.job_spec import JobSpec  # noqa: E402
from runner.state.paths import infra_outputs_file  # noqa: E402
from runner.state.store import JobState, StateStore  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "controller_cycle.json"
REGION = "us-east-1"
AWS_TYPE = "g5.xlarge"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


# ------------------------------------------------------------------ the jobs


def spec_of(name: str, provider: str, checkpoint_url: str, workdir: Path) -> JobSpec:
    """The digits example's job, budgeted (with the default 5 min horizon), on ``provider``."""
    data: dict[str, Any] = {
        "name": name,
        "team": "ml-research",
        "tags": {"project": "controller-cycle"},
        "workdir": str(workdir),
        "train": {
            "model": f"{REPO}/examples/digits.py:DigitsClassifier",
            "data": f"{REPO}/examples/digits.py:DigitsData",
            "trainer": {"max_epochs": 150},
        },
        "checkpoint": {"url": checkpoint_url, "every_s": 15.0},
        "resources": {"provider": provider, "instance_types": [AWS_TYPE] if provider == "aws" else [], "market": "spot"},
        "budget": {"max_usd": 50.0},
    }
    if provider == "local":
        data["local"] = {"notice_s": 5.0, "spot_price": SPOT_USD_PER_HOUR, "on_demand_price": ON_DEMAND_USD_PER_HOUR}
    return JobSpec.model_validate(data)


def fill_local(store: StateStore, home: Path, *, jobs: int, host: subprocess.Popen[bytes]) -> list[str]:
    """``jobs`` local jobs, each running on an instance whose host is ``host``."""
    names = []
    for number in range(jobs):
        name = f"local-{number:04d}"
        spec = spec_of(name, "local", f"file://{home}/checkpoints/{name}", home)
        names.append(record_running(store, spec, lambda job: local_instance(home, job, host)).job.name)
    return names


# ---------------------------------------------------------------- aws (moto)


@contextmanager
def moto_server() -> Iterator[str]:
    """A moto server (S3 and EC2) on 127.0.0.1 in a process of its own; this process's AWS clients all point at it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **FAKE_AWS},
    )
    previous = {key: os.environ.get(key) for key in (*FAKE_AWS, "AWS_ENDPOINT_URL")}
    os.environ.update({**FAKE_AWS, "AWS_ENDPOINT_URL": endpoint})
    try:
        deadline = time.monotonic() + 30.0
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("the moto server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait()
        for key, value in previous.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def fill_aws(store: StateStore, home: Path, *, jobs: int, endpoint: str) -> list[str]:
    """``jobs`` instances launched in moto with this store's tag, the infra outputs the aws provider reads, and the jobs."""
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint)
    template = ec2.create_launch_template(
        LaunchTemplateName=f"spotrun-bench-{jobs}",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "MetadataOptions": {"HttpTokens": "required"}},
    )["LaunchTemplate"]["LaunchTemplateId"]
    infra_outputs_file(home).parent.mkdir(parents=True, exist_ok=True)
    infra_outputs_file(home).write_text(json.dumps({"region": REGION, "launch_template_id": template, "subnet_ids": []}))
    bucket = f"spotrun-bench-{jobs}"
    boto3.client("s3", region_name=REGION, endpoint_url=endpoint).create_bucket(Bucket=bucket)
    instances: list[dict[str, Any]] = []
    while len(instances) < jobs:
        count = min(500, jobs - len(instances))
        instances += ec2.run_instances(
            ImageId="ami-12c6146b",
            InstanceType=AWS_TYPE,
            MinCount=count,
            MaxCount=count,
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": [{"Key": TAG_STORE, "Value": store.store_id()}, {"Key": TAG_JOB, "Value": "bench"}]}
            ],
        )["Instances"]
    names = []
    for number, described in enumerate(instances):
        name = f"aws-{number:04d}"
        zone = described["Placement"]["AvailabilityZone"]
        instance = RunningInstance(described["InstanceId"], AWS_TYPE, zone, described["LaunchTime"].timestamp())
        names.append(
            record_running(store, spec_of(name, "aws", f"s3://{bucket}/{name}", home), lambda job, instance=instance: instance).job.name
        )
    return names


# ------------------------------------------------------------------ timing


class StatementCounter:
    """Every SQL statement the store's engine sends, and how many of them are SELECTs."""

    def __init__(self, engine: sa.Engine) -> None:
        self.statements = self.selects = 0
        sa.event.listen(engine, "before_cursor_execute", self._count)

    def _count(self, connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        self.statements += 1
        self.selects += statement.lstrip().upper().startswith("SELECT")


def measure(cycle: Callable[[], Any], counter: StatementCounter, repeats: int) -> dict[str, Any]:
    """Two warm-up cycles, then ``repeats`` timed ones: the median (and each run) of wall, CPU and statements."""
    cycle()
    cycle()
    runs = []
    for _ in range(repeats):
        counter.statements = counter.selects = 0
        wall, cpu = time.perf_counter(), time.process_time()
        cycle()
        runs.append(
            {
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "statements": counter.statements,
                "selects": counter.selects,
            }
        )
    median = {key: round(statistics.median(run[key] for run in runs), 4) for key in runs[0]}
    return {**median, "runs": runs}


def run_one(provider: str, jobs: int, repeats: int, scratch: Path, fill: Callable[[StateStore, Path], list[str]]) -> dict[str, Any]:
    """``fill`` a fresh store with ``jobs`` running jobs, then time the service's cycles over them."""
    home = scratch / f"{provider}-{jobs}"
    store = StateStore(f"sqlite:///{home}/state.db")
    started = time.perf_counter()
    names = fill(store, home)
    fill_s = time.perf_counter() - started
    print(f"[{provider} {jobs}] recorded {len(names)} running jobs in {fill_s:.1f} s; timing {repeats} cycles ...", flush=True)
    counter = StatementCounter(store.engine)
    reported: list[str] = []
    service = ControllerService(store, home, report=reported.append)
    try:
        figures = measure(service.cycle, counter, repeats)
    finally:
        service.release()
    jobs_now = store.jobs()
    if [line for line in reported if line.startswith("error:")] or {job.state for job in jobs_now} != {JobState.RUNNING}:
        raise AssertionError(
            f"{provider} {jobs}: the cycles did not watch running jobs: {reported[-3:]}, {sorted({job.state.value for job in jobs_now})}"
        )
    if any(job.progress is None for job in jobs_now):
        raise AssertionError(f"{provider} {jobs}: some job's heartbeat was never noted: its cycle did not reach it")
    store.engine.dispose()
    return {"provider": provider, "jobs": jobs, "fill_s": round(fill_s, 1), **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-jobs", default="10,100,1000")
    parser.add_argument("--aws-jobs", default="10,100")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    os.environ[POLL_INTERVAL_ENV] = "0.001"
    local_jobs, aws_jobs = ([int(count) for count in text.split(",") if count.strip()] for text in (args.local_jobs, args.aws_jobs))
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "repeats": args.repeats,
        "cycles": [],
    }
    with tempfile.TemporaryDirectory(prefix="spotrun-controller-cycle-") as scratch:
        with idle_host() as host:
            for jobs in local_jobs:
                fill = functools.partial(fill_local, jobs=jobs, host=host)
                results["cycles"].append(run_one("local", jobs, args.repeats, Path(scratch), fill))
        if aws_jobs:
            with moto_server() as endpoint:
                for jobs in aws_jobs:
                    fill = functools.partial(fill_aws, jobs=jobs, endpoint=endpoint)
                    results["cycles"].append(run_one("aws", jobs, args.repeats, Path(scratch), fill))
    print_table(results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


def print_table(results: dict[str, Any]) -> None:
    print(f"\none cycle, median of {results['repeats']}")
    print(f"{'provider':<10}{'jobs':>6}{'wall s':>10}{'CPU s':>10}{'statements':>12}{'SELECTs':>10}")
    for cycle in results["cycles"]:
        print(
            f"{cycle['provider']:<10}{cycle['jobs']:>6}{cycle['wall_s']:>10.3f}{cycle['cpu_s']:>10.3f}{cycle['statements']:>12.0f}{cycle['selects']:>10.0f}"
        )


if __name__ == "__main__":
    main()
