"""`spotrun cost` through Typer, registered as cli.py will register it, with real exit codes and a real state store."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import pytest
import typer
from click.testing import Result
from cost_explorer import ce_day, ce_page, seed_cost_explorer
from ledger_rows import add_interval
from typer.testing import CliRunner

from runner.cli.commands import command_for
from runner.cli.cost import cost, write_atomically
from runner.cost.reports import utc_day
from runner.state.database import default_database_url
from runner.state.store import Outcome, StateStore

HOUR = 3600.0
DAY = 86400.0


def _spotrun(*args: str, columns: int = 80) -> Result:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """spotrun, with only the cost command."""

    command_for(app)(cost)
    return CliRunner().invoke(app, ["cost", *args], env={"COLUMNS": str(columns)})


@pytest.fixture
def ledger(spotrun_home: Path) -> StateStore:
    """Two teams' jobs on the local provider in the store `spotrun cost` opens; all closed, so figures do not move with the clock."""
    store = StateStore(default_database_url(spotrun_home))
    now = time.time()
    add_interval(
        store,
        "a",
        1,
        now - 5 * HOUR,
        now - 3 * HOUR,
        cost_usd=1.0,
        on_demand_usd=3.0,
        team="ml",
        outcome=Outcome.PREEMPTED,
        work_lost_s=300,
        provider="local",
    )
    add_interval(store, "a", 2, now - 3 * HOUR, now - 2 * HOUR, cost_usd=0.5, on_demand_usd=1.5, team="ml", provider="local")
    add_interval(store, "b", 1, now - 6 * HOUR, now - 2 * HOUR, cost_usd=2.0, on_demand_usd=6.0, team="vision", gpus=4, provider="local")
    add_interval(store, "old", 1, now - 41 * DAY, now - 40 * DAY, cost_usd=7.0, on_demand_usd=7.0, team="ml", provider="local")
    return store


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--by", "color"), "--by: expected one of job, team, instance-type, zone, day, user; got 'color'"),
        (("--format", "pdf"), "--format: expected one of table, json, csv, html; got 'pdf'"),
        (("--since", "last week"), "--since: expected a duration such as 90s, 5m or 2h, got 'last week'"),
        (("--since", "0d"), "--since: expected a window longer than zero"),
        (("a", "--by", "day"), "--by groups every job's spend; leave it out to see job 'a' attempt by attempt"),
        (("--reconcile", "--by", "team"), "--by does not apply to --reconcile"),
        (("--reconcile", "--format", "html"), "--format html is not available with --reconcile"),
    ],
)
def test_bad_options_exit_2_with_what_is_accepted(spotrun_home: Path, args: tuple[str, ...], message: str) -> None:
    result = _spotrun(*args)

    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {message}") and len(result.stderr.strip().splitlines()) == 1
    assert not spotrun_home.exists()  # refused before the store was opened


def test_unknown_job_names_the_jobs_there_are(ledger: StateStore) -> None:
    result = _spotrun("nope")

    assert result.exit_code == 2
    assert "no job named 'nope'" in result.stderr and "a, b, old" in result.stderr


def test_json_by_team_since_30_days(ledger: StateStore) -> None:
    result = _spotrun("--by", "team", "--since", "30d", "--format", "json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["by"] == "team" and document["since"] is not None
    groups = {group["key"]: group for group in document["groups"]}
    assert set(groups) == {"ml", "vision"}  # "old" ended 40 days ago
    assert (groups["ml"]["spent_usd"], groups["ml"]["on_demand_usd"], groups["ml"]["savings_usd"]) == (1.5, 4.5, 3.0)
    assert (groups["ml"]["preemptions"], groups["ml"]["work_lost_s"], groups["ml"]["jobs"]) == (1, 300.0, 1)
    assert (groups["vision"]["gpu_hours"], groups["vision"]["instance_hours"]) == (16.0, 4.0)
    assert (document["totals"]["spent_usd"], document["totals"]["jobs"], document["totals"]["savings_pct"]) == (3.5, 2, 66.67)


def test_table_by_default_groups_by_job_with_totals(ledger: StateStore) -> None:
    result = _spotrun(columns=160)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "spend by job" in lines[0]
    assert [line.split()[:2] for line in lines if line.split()[:1] in (["a"], ["b"], ["old"], ["total"])] == [
        ["old", "$7.00"],
        ["b", "$2.00"],
        ["a", "$1.50"],
        ["total", "$10.50"],
    ]


def test_one_job_attempt_by_attempt_as_csv_to_a_file(ledger: StateStore, tmp_path: Path) -> None:
    target = tmp_path / "a.csv"

    result = _spotrun("a", "--format", "csv", "-o", str(target))

    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and f"wrote {target}" in result.stderr
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(row["attempt"], row["outcome"], float(row["spent_usd"]), float(row["savings_usd"])) for row in rows] == [
        ("1", "preempted", 1.0, 2.0),
        ("2", "finished", 0.5, 1.0),
    ]


def test_html_replaces_an_existing_report(ledger: StateStore, tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("last week's report")

    result = _spotrun("--by", "day", "--format", "html", "-o", str(target))

    assert result.exit_code == 0, result.stderr
    page = target.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "https://" not in page
    assert sorted(path.name for path in tmp_path.iterdir()) == ["report.html", "spotrun-home"]  # no temporary file left


def test_a_failed_write_leaves_the_old_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "report.csv"
    target.write_text("old,report\n")

    with pytest.raises(UnicodeEncodeError):
        write_atomically(target, "half a report then \ud800 a lone surrogate")

    assert target.read_text() == "old,report\n"
    assert [path.name for path in tmp_path.iterdir()] == ["report.csv"]


def test_output_into_a_missing_folder_is_bad_input(ledger: StateStore, tmp_path: Path) -> None:
    result = _spotrun("--format", "json", "-o", str(tmp_path / "missing" / "report.json"))

    assert result.exit_code == 2
    assert f"-o: the folder {tmp_path / 'missing'} does not exist" in result.stderr


def test_reconcile_against_cost_explorer_as_json(ledger: StateStore, moto_endpoint: str) -> None:
    now = time.time()
    add_interval(ledger, "aws-job", 1, now - 2 * HOUR, now - HOUR, cost_usd=1.0, on_demand_usd=3.0)
    seed_cost_explorer(moto_endpoint, ce_page(ce_day(utc_day(now - 2 * HOUR), {"aws-job": 1.25, "": 3.0})))

    result = _spotrun("--reconcile", "--since", "2h", "--format", "json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["jobs"] == [
        {"job": "aws-job", "ledger_usd": 1.0, "cost_explorer_usd": 1.25, "difference_usd": 0.25, "difference_pct": 25.0, "seen_in": "both"},
    ]
    assert document["untagged_usd"] == 3.0
