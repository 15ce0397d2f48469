"""`spotrun cost --by team` over a team's shared store: 5,000 finished jobs, 50,000 closed ledger rows.

The store is made the way spotrun makes one (``StateStore`` runs the migrations; a fresh PostgreSQL
database is upgraded first, as `spotrun db upgrade` does), then filled in bulk: 5,000 finished jobs
of several teams and users, each with 10 closed ledger rows (10 attempts of one instance, or 5 of a
two-node gang) on a mix of instance types, zones and markets, priced by ``cloud.billing``'s rules;
spot attempts before the last are preemptions that lost some work.

Timed, end to end as a user runs them: ``python -m runner cost --by team`` (and ``--by user``,
``--by instance-type``, ``--by job``, ``--by team --format json``) in a fresh process, with
``SPOTRUN_DB`` naming the store; one warm-up, then best and median wall time of ``--runs``. For
comparison: start-up alone (``python -m runner --help``, which lists every command and so imports
every module, and ``cost --help``, what the cost command imports before it reads anything), and
the report alone in this process, as the command makes it (``store.intervals`` + ``group_report``
+ rendering the table). The JSON report's totals are checked against ``SUM(cost_usd)`` of the
ledger, to the cent.

Backends: SQLite (a temp file) always; PostgreSQL when its server binaries are on this machine (a
throwaway server, ``tests/support/postgres_server.py``).

    .venv/bin/python benchmarks/team_cost.py [--jobs 5000] [--rows-per-job 10] [--runs 5] [--backends sqlite,postgresql]

Writes benchmarks/results/team_cost.json (or --output).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from rich.console import Console

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "support")]  # this checkout's spotrun, as `python -m runner` here runs it

from postgres_server import PostgresServer, find_postgres_bindir  # noqa: E402

from cloud.billing import BilledInterval, interval_cost_usd, one_instance_on_demand_usd  # noqa: E402
from cloud.provider import EndReason, Market, PricePoint  # noqa: E402
from runner.cost.queries import report_for  # noqa: E402
from runner.cost.reports import GroupReport, render_table  # noqa: E402
from runner.state import schema  # noqa: E402
from runner.state.database import DatabaseLocation, connect  # noqa: E402
from runner.state.store import JobState, Outcome, StateStore, intervals_table, jobs_table  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "team_cost.json"
COMMANDS: dict[str, list[str]] = {
    "cost --by team": ["cost", "--by", "team"],
    "cost --by user": ["cost", "--by", "user"],
    "cost --by instance-type": ["cost", "--by", "instance-type"],
    "cost --by job": ["cost", "--by", "job"],
    "cost --by team --format json": ["cost", "--by", "team", "--format", "json"],
}
TEAMS = ("vision", "nlp", "speech", "recsys", "research", "platform", "robotics")
FIRST_NAMES = (
    "alice",
    "bruno",
    "chen",
    "dana",
    "emeka",
    "farah",
    "goran",
    "hana",
    "ivan",
    "jules",
    "kofi",
    "lena",
    "mateo",
    "nadia",
    "omar",
    "priya",
    "quinn",
    "rosa",
    "sven",
    "tariq",
    "uma",
    "viktor",
    "wen",
    "ximena",
    "yusuf",
    "zoe",
)
INSTANCE_TYPES = {  # type: (on-demand USD/h in us-east-1, GPUs)
    "g4dn.xlarge": (0.526, 1),
    "g5.xlarge": (1.006, 1),
    "g5.2xlarge": (1.212, 1),
    "g5.12xlarge": (5.672, 4),
    "g6.xlarge": (0.8048, 1),
    "p3.2xlarge": (3.06, 1),
    "p4d.24xlarge": (32.7726, 8),
}
ZONES = ("us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d", "us-east-1f", "us-west-2a", "us-west-2b", "us-west-2c")
DAY_S = 86400.0


# ------------------------------------------------------------------ the store


def fill(url: str, *, jobs: int, rows_per_job: int, seed: int = 7, until: float | None = None) -> dict[str, Any]:
    """Create spotrun's schema at ``url`` and fill it with ``jobs`` finished jobs of ``rows_per_job`` closed ledger rows each."""
    location = DatabaseLocation(url, "benchmark")
    if not location.is_sqlite:
        schema.upgrade(connect(location))  # a shared database is upgraded once, by `spotrun db upgrade`
    store = StateStore(location)  # checks the schema (and upgrades a SQLite file in place)
    rng = random.Random(seed)
    until = time.time() - 3600.0 if until is None else until
    users = [
        (name, TEAMS[index % len(TEAMS)]) for index, name in enumerate(f"{first}.{rng.choice('abcdefghklmnprst')}" for first in FIRST_NAMES)
    ]
    users += [(f"ci-{team}", team) for team in TEAMS[:3]]
    job_rows: list[dict[str, Any]] = []
    ledger_rows: list[dict[str, Any]] = []
    for number in range(jobs):
        user, team = rng.choice(users)
        job_team: str | None = None if rng.random() < 0.04 else (team if rng.random() < 0.9 else rng.choice(TEAMS))
        job, rows = _job(rng, number, user, job_team, rows_per_job, started=until - rng.uniform(2, 120) * DAY_S)
        job_rows.append(job)
        ledger_rows.extend(rows)
    started = time.perf_counter()
    with store.engine.begin() as db:
        db.execute(jobs_table.insert(), job_rows)
        for first in range(0, len(ledger_rows), 5000):
            db.execute(intervals_table.insert(), ledger_rows[first : first + 5000])
    if not location.is_sqlite:
        with store.engine.begin() as db:
            db.execute(sa.text("ANALYZE"))  # what autovacuum does to a table this size soon after
    fill_s = time.perf_counter() - started
    with store.engine.connect() as db:
        counted = db.execute(
            sa.select(sa.func.count(), sa.func.sum(intervals_table.c.cost_usd), sa.func.sum(intervals_table.c.on_demand_usd))
        ).one()
        job_count = db.execute(sa.select(sa.func.count()).select_from(jobs_table)).scalar_one()
    store.engine.dispose()
    return {
        "jobs": job_count,
        "ledger_rows": counted[0],
        "spent_usd": counted[1],
        "on_demand_usd": counted[2],
        "insert_s": round(fill_s, 2),
    }


def _job(
    rng: random.Random, number: int, user: str, team: str | None, rows: int, *, started: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One finished job and its ledger rows: attempts back to back, the last one ends the job."""
    instance_type = rng.choice(list(INSTANCE_TYPES))
    on_demand_price, gpus = INSTANCE_TYPES[instance_type]
    market = rng.choices(("spot", "on-demand", "auto"), weights=(75, 15, 10))[0]
    nodes = 2 if rows % 2 == 0 and rng.random() < 0.25 else 1
    attempts = rows // nodes
    state = rng.choices(list(_FINAL), weights=(85, 8, 5, 2))[0]
    name = f"{team or 'adhoc'}-{rng.choice(('resnet', 'bert', 'whisper', 'dlrm', 'vit', 'llama-ft', 'ppo'))}-{number:05d}"
    project = rng.choice(("search", "ads", "assistant", "maps", "safety"))
    tags = {"project": project, "experiment": f"exp-{rng.randrange(1, 400):03d}"}
    ledger: list[dict[str, Any]] = []
    clock = started
    preemptions = restarts = 0
    worked_s = 0.0  # the job's kept work so far, per node (every node of a gang works alike)
    for attempt in range(1, attempts + 1):
        last = attempt == attempts
        on_spot = market == "spot" or (market == "auto" and rng.random() < 0.6)
        if not last:
            outcome = Outcome.PREEMPTED if on_spot else rng.choice((Outcome.FAILED, Outcome.STOPPED))
        else:
            outcome = _FINAL[state]
        preemptions += outcome is Outcome.PREEMPTED
        restarts += outcome is Outcome.FAILED and not last
        zone = rng.choice(ZONES)
        requested_at = clock + rng.uniform(5, 120)
        start = requested_at + rng.uniform(20, 240)
        end = start + (rng.uniform(0.1, 6.0) if not last else rng.uniform(0.5, 12.0)) * 3600.0
        if on_spot:
            spot = round(on_demand_price * rng.uniform(0.28, 0.45), 4)
            points = [PricePoint(start, spot)]
            for _ in range(rng.randrange(0, 3)):
                points.append(PricePoint(rng.uniform(points[-1].time, end), round(spot * rng.uniform(0.9, 1.15), 4)))
        else:
            points = [PricePoint(start, on_demand_price)]
        end_reason = {
            Outcome.PREEMPTED: EndReason.SPOT_INTERRUPTION,
            Outcome.CANCELLED: EndReason.TERMINATED_BY_USER,
            Outcome.STOPPED: EndReason.TERMINATED_BY_USER,
        }.get(outcome, EndReason.AGENT_EXITED)
        billed = BilledInterval(Market.SPOT if on_spot else Market.ON_DEMAND, start, end, tuple(points), end_reason)
        productive_at = start + rng.uniform(60, 420)
        lost = rng.uniform(0, 900) if outcome is Outcome.PREEMPTED else None
        # The row's share of one uninterrupted on-demand instance: its kept training, and the first start's boot.
        kept_s = max(0.0, end - productive_at - (lost or 0.0)) + (productive_at - start if attempt == 1 else 0.0)
        cost, equivalent = interval_cost_usd(billed), one_instance_on_demand_usd(worked_s, kept_s, on_demand_price)
        worked_s += kept_s
        for node in range(nodes):
            ledger.append(
                {
                    "job": name,
                    "attempt": attempt,
                    "node": node,
                    "instance_id": f"i-{rng.getrandbits(68):017x}",
                    "address": f"10.0.{rng.randrange(256)}.{rng.randrange(1, 255)}",
                    "provider": "aws",
                    "instance_type": instance_type,
                    "zone": zone,
                    "market": billed.market.value,
                    "gpus": gpus,
                    "price_usd_per_hour": points[0].usd_per_hour,
                    "on_demand_price_usd_per_hour": on_demand_price,
                    "requested_at": requested_at,
                    "start": start,
                    "end": end,
                    "end_reason": end_reason.value,
                    "outcome": outcome.value,
                    "cost_usd": cost,
                    "on_demand_usd": equivalent,
                    "prices_json": json.dumps([[point.time, point.usd_per_hour] for point in points]),
                    "productive_at": productive_at,
                    "work_lost_s": lost,
                    "steps_lost": None if lost is None else int(lost / 0.35),
                    "team": team,
                    "tags_json": json.dumps(tags),
                    "launched_by": user,
                }
            )
        clock = end
    spec = {
        "name": name,
        "team": team,
        "tags": tags,
        "workdir": f"/home/{user}/src/{project}",
        "train": {
            "model": "train.model:Model",
            "model_args": {"lr": 3e-4, "width": 1024},
            "data": "train.data:Data",
            "data_args": {"batch_size": 64},
            "trainer": {"max_epochs": 20, "precision": "bf16-mixed"},
            "seed": 0,
            "command": None,
        },
        "checkpoint": {
            "url": f"s3://ml-{team or 'adhoc'}-checkpoints/{name}",
            "every_s": 600.0,
            "every_steps": None,
            "keep": 3,
            "keep_every": None,
        },
        "resources": {
            "provider": "aws",
            "instance_types": [instance_type],
            "nodes": nodes,
            "devices": gpus,
            "market": market,
            "max_restarts_on_errors": 3,
            "gang_timeout_s": 600.0,
            "collective_timeout_s": 300.0,
            "placement_group": None,
        },
        "budget": {"max_usd": round(rng.uniform(50, 2000), 0), "deadline_at": None, "expected_runtime_s": None, "restart_overhead_s": None},
        "local": None,
    }
    job = {
        "name": name,
        "state": state.value,
        "spec_json": json.dumps(spec),
        "spec_path": f"/home/{user}/src/{project}/{name}.yaml",
        "checkpoint_url": spec["checkpoint"]["url"],
        "created_at": started,
        "updated_at": clock,
        "preemptions": preemptions,
        "restarts_on_errors": restarts,
        "cancel_requested": state is JobState.CANCELLED,
        "progress_json": json.dumps(
            {"step": rng.randrange(1000, 90000), "epoch": rng.randrange(1, 20), "loss": round(rng.uniform(0.1, 2), 4)}
        ),
        "message": None if state is JobState.SUCCEEDED else f"ended {state.value.lower()}",
        "launched_by": user,
        "stop_requested": None,
        "stop_requested_at": None,
        "budget_alerted_pct": 0,
        "lease_owner": None,
        "lease_expires_at": None,
    }
    return job, ledger


_FINAL = {  # how a finished job's last attempt ended
    JobState.SUCCEEDED: Outcome.FINISHED,
    JobState.FAILED: Outcome.FAILED,
    JobState.CANCELLED: Outcome.CANCELLED,
    JobState.BUDGET_EXHAUSTED: Outcome.STOPPED,
}


# ------------------------------------------------------------------ timing


def timed(action: Callable[[], Any], runs: int) -> tuple[dict[str, float], Any]:
    """One warm-up, then ``runs`` timed calls: best and median seconds, and the last result."""
    result = action()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - started)
    return {"best_s": round(min(times), 3), "median_s": round(statistics.median(times), 3)}, result


def cli(args: list[str], env: dict[str, str]) -> str:
    """``python -m runner ARGS`` in a fresh process, as a user runs it; its stdout."""
    done = subprocess.run([sys.executable, "-m", "runner", *args], env=env, cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"spotrun {' '.join(args)} exited {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def cli_env(url: str, home: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SPOTRUN_")}
    return {**env, "SPOTRUN_DB": url, "SPOTRUN_HOME": str(home), "COLUMNS": "160"}


def measure(url: str, home: Path, runs: int, expected_spent_usd: float) -> dict[str, Any]:
    """Every command end to end, then the report alone in this process."""
    env = cli_env(url, home)
    figures: dict[str, Any] = {}
    for label, args in COMMANDS.items():
        figures[label], output = timed(lambda args=args: cli(args, env), runs)
        if "--format" in args:
            spent = json.loads(output)["totals"]["spent_usd"]
            if abs(spent - expected_spent_usd) >= 0.005:
                raise AssertionError(f"the report's total ${spent:.2f} does not match the ledger's ${expected_spent_usd:.2f}")
            figures["report_agrees_with_ledger"] = True
    store = StateStore(url)

    def report() -> GroupReport:
        return report_for(store, None, "team", now=time.time(), since=None, charts=False)  # what `cost --by team` builds

    def render(built: GroupReport) -> None:
        Console(file=io.StringIO(), width=160).print(render_table(built))

    report_s, built = timed(report, runs)
    render_s, _ = timed(lambda: render(built), runs)
    whole_s, _ = timed(lambda: render(report()), runs)
    store.engine.dispose()
    figures["in-process --by team"] = {"report_s": report_s, "render_s": render_s, "total_s": whole_s}
    return figures


def run_backend(name: str, url: str, home: Path, args: argparse.Namespace) -> dict[str, Any]:
    print(f"[{name}] filling {args.jobs} jobs x {args.rows_per_job} ledger rows ...", flush=True)
    store = fill(url, jobs=args.jobs, rows_per_job=args.rows_per_job)
    print(
        f"[{name}] {store['jobs']} jobs, {store['ledger_rows']} ledger rows, ${store['spent_usd']:,.2f} spent (inserted in {store['insert_s']} s)"
    )
    return {"store": store, **measure(url, home, args.runs, store["spent_usd"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rows-per-job", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlalchemy": sa.__version__,
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "jobs": args.jobs,
        "rows_per_job": args.rows_per_job,
        "runs": args.runs,
        "backends": {},
    }
    with tempfile.TemporaryDirectory(prefix="spotrun-team-cost-") as scratch:
        home = Path(scratch, "home")
        home.mkdir()
        env = cli_env(f"sqlite:///{scratch}/unused.db", home)
        results["startup"] = {
            label: timed(lambda label=label: cli(label.split(), env), args.runs)[0] for label in ("--help", "cost --help")
        }
        if "sqlite" in backends:
            results["backends"]["sqlite"] = run_backend("sqlite", f"sqlite:///{scratch}/state.db", home, args)
        if "postgresql" in backends:
            if find_postgres_bindir() is None:
                results["backends"]["postgresql"] = {"skipped": "no PostgreSQL server binaries on this machine"}
            else:
                server = PostgresServer().start()
                try:
                    url = server.create_database("team_cost")
                    with sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1)).connect() as db:
                        results["postgresql_server"] = db.execute(sa.text("SHOW server_version")).scalar_one()
                    results["backends"]["postgresql"] = run_backend("postgresql", url, home, args)
                finally:
                    server.stop()
    print_table(results)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


def print_table(results: dict[str, Any]) -> None:
    backends = [name for name, figures in results["backends"].items() if "skipped" not in figures]
    print(f"\n{'wall s, best / median of ' + str(results['runs']):<34}" + "".join(f"{name:>18}" for name in backends))
    for label, figures in results["startup"].items():
        print(f"{label + ' (start-up only)':<34}" + f"{figures['best_s']:>9.3f} / {figures['median_s']:.3f}" * len(backends))
    for label in [*COMMANDS, "in-process --by team"]:
        cells = []
        for name in backends:
            figures = results["backends"][name][label]
            figures = figures.get("total_s", figures)
            cells.append(f"{figures['best_s']:>9.3f} / {figures['median_s']:.3f}")
        print(f"{label:<34}" + "".join(cells))
    for part in ("report_s", "render_s"):
        print(
            f"{'  ' + part:<34}"
            + "".join(
                f"{results['backends'][name]['in-process --by team'][part]['best_s']:>9.3f} / "
                f"{results['backends'][name]['in-process --by team'][part]['median_s']:.3f}"
                for name in backends
            )
        )
    for name, figures in results["backends"].items():
        if "skipped" in figures:
            print(f"{name}: skipped ({figures['skipped']})")


if __name__ == "__main__":
    main()
