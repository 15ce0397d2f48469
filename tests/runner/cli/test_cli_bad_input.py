"""Bad input gets one clear line and exit code 2, before anything is launched or written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]

pytestmark = pytest.mark.slow  # every test runs `spotrun` as a process of its own, as a user does (seconds each)

GOOD = {
    "name": "digits",
    "train": {
        "model": "examples/digits.py:DigitsClassifier",
        "data": "examples/digits.py:DigitsData",
        "trainer": {"max_epochs": 1},
    },
    "resources": {"provider": "local"},
}


def _spec(**changes: object) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(GOOD))
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node = spec
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return spec


CASES = {
    "unknown key": (_spec(train__epochs=3), "train.epochs"),
    "wrong type": (_spec(checkpoint__keep="three"), "checkpoint.keep"),
    "bad duration": (_spec(checkpoint__every="soon"), "checkpoint.every"),
    "model does not import": (_spec(train__model="examples/digits.py:NoSuchModel"), "train.model"),
    "model file missing": (_spec(train__model="examples/nowhere.py:Model"), "train.model"),
    "unknown checkpoint protocol": (_spec(checkpoint__url="nosuchproto://bucket/run"), "checkpoint.url"),
    "bad market": (_spec(resources__market="cheap"), "resources.market"),
    "bad name": (_spec(name="Digits_Job"), "name"),
    "auto market without a deadline": (_spec(resources__market="auto"), "budget.deadline"),
    "negative budget": (_spec(budget__max_usd=-5), "budget.max_usd"),
    "spot trace that is not there": (_spec(local__spot_trace="no-such-trace.json"), "local.spot_trace"),
}


def _run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**__import__("os").environ, "SPOTRUN_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "runner", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_is_refused_before_anything_happens(case: str, tmp_path: Path) -> None:
    spec, field = CASES[case]
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"

    result = _run_cli(home, "run", str(spec_file))

    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    assert str(spec_file) in message or "bad.yaml" in message
    assert field in message
    assert not home.exists(), f"{case}: something was written under SPOTRUN_HOME: {list(home.rglob('*'))}"


def test_missing_spec_file(tmp_path: Path) -> None:
    result = _run_cli(tmp_path / "home", "run", str(tmp_path / "absent.yaml"))
    assert result.returncode == 2 and "absent.yaml" in result.stderr
    assert not (tmp_path / "home").exists()


def test_unknown_job_names_what_exists(tmp_path: Path) -> None:
    result = _run_cli(tmp_path / "home", "status", "nosuchjob")
    assert result.returncode == 2
    assert "no job named 'nosuchjob'" in result.stderr


def test_help_everywhere(tmp_path: Path) -> None:
    for command in ("run", "resume", "status", "jobs", "logs", "cancel", "checkpoints", "interrupt", "agent", "cost", "simulate"):
        result = _run_cli(tmp_path / "home", command, "--help")
        assert result.returncode == 0 and "Usage" in result.stdout, command


def test_a_spot_trace_with_values_other_than_0_and_1_is_refused(tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    trace.write_text('{"metadata": {"gap_seconds": 60}, "data": [1, 0, 2]}')
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(local__spot_trace=str(trace))))
    result = _run_cli(tmp_path / "home", "run", str(spec_file))
    assert result.returncode == 2 and "local.spot_trace" in result.stderr and "data[2]" in result.stderr, result.stderr
    assert not (tmp_path / "home").exists()


def test_a_budget_that_cannot_pay_for_a_start_is_refused_and_no_job_is_recorded(tmp_path: Path) -> None:
    spec_file = tmp_path / "poor.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(budget__max_usd=0.0001)))
    result = _run_cli(tmp_path / "home", "run", str(spec_file))
    assert result.returncode == 2 and "budget" in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no jobs yet" in _run_cli(tmp_path / "home", "jobs").stdout


def test_a_forecast_beyond_the_budget_is_refused_with_its_figures(tmp_path: Path) -> None:
    # 10 h of training at the local default spot price $0.45/h is $4.50, well over $1
    spec_file = tmp_path / "tight.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(budget__max_usd=1.0, budget__expected_runtime="10h")))
    result = _run_cli(tmp_path / "home", "run", str(spec_file))
    assert result.returncode == 2, result.stderr
    assert "forecast $4.5" in result.stderr and "exceeds the $1.00 budget" in result.stderr and "--force" in result.stderr
    assert "no jobs yet" in _run_cli(tmp_path / "home", "jobs").stdout


def test_a_gang_forecast_counts_every_node(tmp_path: Path) -> None:
    # 10 h on each of 2 instances at $0.45/h: $9.00, not $4.50
    spec_file = tmp_path / "gang.yaml"
    spec_file.write_text(yaml.safe_dump(_spec(budget__max_usd=5.0, budget__expected_runtime="10h", resources__nodes=2)))
    result = _run_cli(tmp_path / "home", "run", str(spec_file))
    assert result.returncode == 2 and "forecast $9.0" in result.stderr, result.stderr
