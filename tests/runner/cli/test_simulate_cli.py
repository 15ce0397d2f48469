"""`spotrun simulate`: JSON and table output, and one-line errors with exit code 2 for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from click.testing import Result
from typer.testing import CliRunner

from runner.cli.commands import command_for
from runner.cli.simulate import simulate


def _spotrun(*args: str) -> Result:
    """Run `spotrun simulate ...` as cli.py registers it: command_for(app)(simulate)."""
    app = typer.Typer()
    command_for(app)(simulate)

    @app.command()
    def other() -> None:  # a second command, so typer keeps `simulate` as a subcommand name
        """Nothing."""

    return CliRunner().invoke(app, ["simulate", *args])


@pytest.fixture
def trace_file(tmp_path: Path) -> Path:
    path = tmp_path / "zone-a.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 3600}, "data": [1, 1, 0, 0, 0, 1, 1, 1, 1, 1]}))
    return path


def _job(trace: Path, *extra: str, deadline: str = "6h", spot_price: str = "1") -> list[str]:
    return [
        "--trace",
        str(trace),
        "--work",
        "3h",
        "--deadline",
        deadline,
        "--restart-overhead",
        "30m",
        "--spot-price",
        spot_price,
        "--on-demand-price",
        "4",
        *extra,
    ]


def test_json_prints_one_object_with_the_results(trace_file: Path) -> None:
    result = _spotrun(*_job(trace_file, "--policy", "greedy", "--json"))

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)  # the whole of stdout is one JSON object
    # greedy on this trace, by hand in tests/runner/test_simulate.py: $10, done at 5 h, and that is optimal
    assert data["policy"] == "greedy"
    assert data["cost"] == pytest.approx(10.0)
    assert data["optimal_cost"] == pytest.approx(10.0)
    assert data["cost_ratio"] == pytest.approx(1.0)
    assert data["finish_hours"] == pytest.approx(5.0)
    assert data["deadline_met"] is True
    assert (data["spot_hours"], data["on_demand_hours"], data["preemptions"]) == (pytest.approx(2.0), pytest.approx(2.0), 1)
    assert result.stderr == ""


def test_people_get_a_table(trace_file: Path) -> None:
    result = _spotrun(*_job(trace_file, "--policy", "spot-only"))

    assert result.exit_code == 0, result.output
    for figure in ("cost", "$4.00", "optimum", "$10.00", "preemptions", "deadline met", "no"):
        assert figure in result.stdout


def test_the_traces_prices_are_used_without_a_spot_price(tmp_path: Path) -> None:
    path = tmp_path / "priced.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 3600}, "data": [1, 1, 1, 1], "prices": [2, 3, 5, 7]}))

    result = _spotrun(
        "--trace",
        str(path),
        "--work",
        "2h",
        "--deadline",
        "4h",
        "--restart-overhead",
        "30m",
        "--on-demand-price",
        "9",
        "--policy",
        "spot-only",
        "--json",
    )

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["cost"] == pytest.approx(7.5)  # $2 + $3 + 0.5 h x $5


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--deadline", "3h"),
            "error: --deadline 3h is shorter than --work 3h plus one --restart-overhead 30m: not even on-demand from the start meets it",
        ),
        (("--spot-price", "-1"), "error: --spot-price must be a non-negative price in USD/h, got -1.0"),
        (("--work", "0h"), "error: --work must be more than zero, got '0h'"),
        (("--work", "3 hours"), "error: --work: expected a duration such as 90s, 5m or 2h, got '3 hours'"),
        (("--policy", "cheapest"), "error: unknown policy 'cheapest'; choose one of: auto, greedy, spot-only, on-demand"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(trace_file: Path, args: tuple[str, str], message: str) -> None:
    options = _job(trace_file)
    for name, value in zip(args[::2], args[1::2], strict=True):
        if name in options:
            options[options.index(name) + 1] = value
        else:
            options += [name, value]

    result = _spotrun(*options)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [message]


def test_a_trace_with_a_2_in_it_is_named_with_the_index(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"metadata": {"gap_seconds": 3600}, "data": [1, 0, 2, 1, 1, 1, 1, 1]}))

    result = _spotrun(*_job(path))

    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: trace {path}: data[2] is 2; expected 0 or 1"]


def test_a_trace_shorter_than_the_deadline_is_bad_input(trace_file: Path) -> None:
    result = _spotrun(*_job(trace_file, deadline="11h"))

    assert result.exit_code == 2
    assert "shorter than the deadline" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_trace_without_prices_needs_a_spot_price(trace_file: Path) -> None:
    options = _job(trace_file)
    del options[options.index("--spot-price") : options.index("--spot-price") + 2]

    result = _spotrun(*options)

    assert result.exit_code == 2
    assert result.stderr.strip() == f"error: --spot-price is needed: trace {trace_file} has no prices"
