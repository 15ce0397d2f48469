"""Harness for end-to-end runs: the real `spotrun` CLI as the controller process, real local instances."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from checkpoints import latest
from runner.cli.app import app
from runner.cost.figures import JobFigures, job_figures
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import HEARTBEAT_NAME, Heartbeat
from runner.state.store import Job, JobState, StateStore, open_store

REPO = Path(__file__).resolve().parents[2]


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, what: str, interval_s: float = 0.1) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail the test with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def newest_heartbeat(checkpoint_url: str) -> Heartbeat | None:
    """Rank 0's newest heartbeat under ``checkpoint_url``, parsed as written (not verified: these tests only watch)."""
    written = Mailbox.at(checkpoint_url).read(HEARTBEAT_NAME)
    return None if written is None else Heartbeat.from_json(written, where=HEARTBEAT_NAME)


def step_of(heartbeat: Heartbeat | None) -> int:
    """The step a heartbeat's training report reached; 0 before the first report."""
    return heartbeat.progress.step if heartbeat is not None and heartbeat.progress is not None else 0


@dataclass
class Harness:
    """Drives spotrun the way a user does, from the repository root."""

    home: Path
    tmp: Path

    def write_spec(self, spec: dict[str, Any], name: str = "job.yaml") -> Path:
        path = self.tmp / name
        path.write_text(yaml.safe_dump(spec))
        return path

    def start(self, *args: str) -> subprocess.Popen[str]:
        """`spotrun ARGS` as its own process (the controller), output kept in a file for failure reports."""
        log = open(self.tmp / f"controller-{time.monotonic_ns()}.log", "w")  # owned by the process
        return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True)

    def cli(self, *args: str) -> Any:
        """`spotrun ARGS` in this process (quick commands: status, interrupt, ...)."""
        previous = os.getcwd()
        os.chdir(REPO)
        try:
            return CliRunner().invoke(app, list(args), catch_exceptions=False)
        finally:
            os.chdir(previous)

    @property
    def store(self) -> StateStore:
        """The store spotrun itself uses: SQLite under the home, or SPOTRUN_DB."""
        return open_store(self.home)

    def job(self, name: str) -> Job:
        return self.store.job(name)

    def figures(self, name: str) -> JobFigures:
        """The job's attempts and preemptions as every display shows them."""
        store = self.store
        return job_figures(store.attempts(name), store.intervals(name), time.time())

    def controller_output(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.tmp.glob("controller-*.log")))

    def wait_for_exit(self, process: subprocess.Popen[str], timeout_s: float) -> int:
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            raise AssertionError(f"controller did not finish in {timeout_s}s:\n{self.controller_output()[-4000:]}") from None


@pytest.fixture
def harness(spotrun_home: Path, tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(home=spotrun_home, tmp=tmp_path)
    yield harness
    _terminate_leftover_instances(spotrun_home)


def _terminate_leftover_instances(home: Path) -> None:
    """A failed test must not leave instance processes running."""
    from cloud.local import LocalProvider

    instances = home / "local" / "instances"
    if instances.exists():
        provider = LocalProvider(home, preempt_every_s=0, notice_s=0, seed=0, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0)
        provider.terminate([path.name for path in instances.iterdir()])


def final_weights(checkpoint_url: str) -> dict[str, torch.Tensor]:
    """The model weights of a job's final committed checkpoint."""
    final = latest(checkpoint_url)
    assert final is not None and final.final, f"no final checkpoint at {checkpoint_url}: {final}"
    return torch.load(final.data_url.removeprefix("file://"), weights_only=True)["state_dict"]


def assert_bit_identical(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), f"{name} differs"


# The digits job every end-to-end test runs, and its uninterrupted result. The wide MLP paces training at
# ~50 ms a step, so an interruption lands within ~30 steps of the one a test aims at (heartbeats come every
# second); 6 epochs (270 steps) leave room for four of them and for a budget stop, and no more.
TRAINER = {
    "max_epochs": 6,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "logger": False,
}
MODEL_ARGS = {"lr": 0.05, "hidden": [2048, 2048], "dropout": 0.2, "patience": 4}
DATA_ARGS = {"batch_size": 32}
STEPS_PER_EPOCH = 45  # ceil(1438 training digits / 32)
# The same model, data and seed through the user's own script: the same weights are expected.
COMMAND = (
    f"python examples/custom_script/train.py --max-epochs {TRAINER['max_epochs']} --batch-size 32 --hidden 2048 2048 --patience 4 --lr 0.05"
)


def digits_spec(name: str, *, command: bool = False) -> dict[str, Any]:
    train: dict[str, Any]
    if command:
        train = {"command": COMMAND}
    else:
        train = {
            "model": "examples/digits.py:DigitsClassifier",
            "model_args": MODEL_ARGS,
            "data": "examples/digits.py:DigitsData",
            "data_args": DATA_ARGS,
            "trainer": TRAINER,
            "seed": 0,
        }
    return {
        "name": name,
        "train": train,
        "checkpoint": {"every_steps": 40, "keep": 2},
        "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
        "local": {"preempt_every": 0, "notice": "2s", "spot_price": 0.45, "on_demand_price": 1.006},
    }


def uninterrupted_weights(tmp: Path, spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Run ``spec`` start to end, never interrupted, under its own SPOTRUN_HOME in ``tmp``: its final weights."""
    previous = os.environ.get("SPOTRUN_HOME")
    os.environ["SPOTRUN_HOME"] = str(tmp / "home")
    try:
        harness = Harness(home=tmp / "home", tmp=tmp)
        process = harness.start("run", str(harness.write_spec(spec)))
        assert harness.wait_for_exit(process, 300) == 0, harness.controller_output()[-4000:]
        job = harness.job(spec["name"])
        assert job.state is JobState.SUCCEEDED and harness.figures(spec["name"]).preemptions == 0
        return final_weights(job.checkpoint_url)
    finally:
        if previous is None:
            os.environ.pop("SPOTRUN_HOME", None)
        else:
            os.environ["SPOTRUN_HOME"] = previous


@pytest.fixture(scope="session")
def reference_weights(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted run of the digits job and seed, once per session: what every interrupted run must reproduce."""
    return uninterrupted_weights(tmp_path_factory.mktemp("reference"), digits_spec("reference"))
