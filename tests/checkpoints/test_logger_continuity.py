"""Logs survive preemption whole: one version/run, and every metric's (step, value) series equals an uninterrupted run's.

Each logger (CSV, TensorBoard, MLflow with a local file store) trains the toy model once without
interruption, and once preempted four times: emergency stops through the control file (one at an
epoch boundary) and SIGKILLs at random moments shortly after a checkpoint commits, so the lost
attempt has logged past the checkpoint the next one resumes from. Every
series is read back with the logger's own reader (csv rows, TensorBoard's EventAccumulator, MLflow's
``get_metric_history``). Attempts come from a fork server (``logger_worker.py``): a fork, not an
interpreter start, per attempt.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import time
from pathlib import Path

import pytest
from fork_server import ForkServer

from checkpoints import latest
from checkpoints.environment import PREEMPTED_EXIT_CODE
from checkpoints.loggers import IDENTITY_NAME
from checkpoints.store import CheckpointStore

WORKER = Path(__file__).with_name("logger_worker.py")
LOGGERS = ("csv", "tensorboard", "mlflow")
EVERY_STEPS = 4
STEP_DELAY_S = 0.01  # room for a SIGKILL to land mid-training; no effect on the maths

pytestmark = pytest.mark.slow  # training runs from a fork server, killed and resumed

Series = dict[str, list[tuple[int, float]]]


@pytest.fixture(scope="module")
def fork_server() -> ForkServer:
    server = ForkServer(WORKER)
    yield server
    server.close()


def _request(tmp: Path, logger: str, attempt: int, **extra: object) -> dict[str, object]:
    return {
        "url": f"file://{tmp}/ckpts",
        "logger": logger,
        "log_root": str(tmp / "logs"),
        "control": str(tmp / f"control-{attempt}.json"),
        "every_steps": EVERY_STEPS,
        "step_delay": STEP_DELAY_S,
        **extra,
    }


def _run(server: ForkServer, request: dict[str, object]) -> int:
    server.start(**request)
    return server.status()


def _kill_after_a_commit(server: ForkServer, request: dict[str, object], rng: random.Random) -> None:
    """SIGKILL an attempt a random moment (0-60 ms) after it committed a checkpoint past its resume point."""
    url = str(request["url"])
    before = latest(url)
    target = (before.step if before else 0) + EVERY_STEPS * rng.randint(1, 3)
    pid = server.start(**request)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        newest = CheckpointStore(url).latest()
        if newest is not None and newest.step >= target:
            break
        time.sleep(0.005)
    else:
        pytest.fail(f"no checkpoint at or after step {target} within 60 s")
    time.sleep(rng.uniform(0.0, 0.06))
    os.kill(pid, signal.SIGKILL)
    assert server.status() == -signal.SIGKILL, "the attempt ended before it was killed"


def _read(logger: str, log_root: Path) -> Series:
    """Every metric's (step, value) series, as the logger's own reader gives it; asserts one version / run."""
    if logger == "mlflow":
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.entities import ViewType
        from mlflow.tracking import MlflowClient

        client = MlflowClient(f"file:{log_root}/mlruns")
        experiment = client.get_experiment_by_name("toy")
        runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ACTIVE_ONLY)
        assert len(runs) == 1, f"{len(runs)} active runs"
        run_id = runs[0].info.run_id
        return {
            key: sorted((metric.step, metric.value) for metric in client.get_metric_history(run_id, key)) for key in runs[0].data.metrics
        }
    versions = sorted((log_root / "toy").glob("version_*"))
    assert [path.name for path in versions] == ["version_0"], f"versions: {[path.name for path in versions]}"
    if logger == "csv":
        with open(versions[0] / "metrics.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
        keys = sorted({key for row in rows for key, value in row.items() if value and key != "step"})
        return {key: [(int(row["step"]), float(row[key])) for row in rows if row[key]] for key in keys}
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(versions[0]), size_guidance={SCALARS: 0})
    accumulator.Reload()
    return {tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()[SCALARS]}


@pytest.mark.parametrize("logger", LOGGERS)
def test_preempted_run_logs_the_same_series_in_one_version(fork_server: ForkServer, tmp_path: Path, logger: str) -> None:
    reference_dir = tmp_path / "reference"
    assert _run(fork_server, _request(reference_dir, logger, 0)) == 0
    reference = _read(logger, reference_dir / "logs")
    assert {"train_loss", "val_loss"} <= set(reference), sorted(reference)
    assert len(reference["train_loss"]) > 50

    run_dir = tmp_path / "preempted"
    rng = random.Random(f"logger-continuity-{logger}")
    # 16 batches an epoch: the stop at 16 is at an epoch boundary.
    assert _run(fork_server, _request(run_dir, logger, 1, stop_at_step=6)) == PREEMPTED_EXIT_CODE
    assert CheckpointStore(f"file://{run_dir}/ckpts").read_json(IDENTITY_NAME) is not None
    assert _run(fork_server, _request(run_dir, logger, 2, stop_at_step=16)) == PREEMPTED_EXIT_CODE
    _kill_after_a_commit(fork_server, _request(run_dir, logger, 3), rng)  # resumes by step 28
    _kill_after_a_commit(fork_server, _request(run_dir, logger, 4), rng)  # by step 40
    assert _run(fork_server, _request(run_dir, logger, 5, stop_at_step=70)) == PREEMPTED_EXIT_CODE
    assert _run(fork_server, _request(run_dir, logger, 6)) == 0

    resumed = _read(logger, run_dir / "logs")
    assert resumed.keys() == reference.keys()
    for key in reference:
        assert resumed[key] == reference[key], f"{logger}: {key} differs"


@pytest.mark.parametrize("logger", LOGGERS)
def test_attempt_killed_before_its_first_checkpoint_is_continued(fork_server: ForkServer, tmp_path: Path, logger: str) -> None:
    """No checkpoint yet: the next attempt keeps the version/run, and what the lost one logged goes."""
    request = _request(tmp_path, logger, 1, every_steps=10_000, step_delay=0.02)
    pid = fork_server.start(**request)
    deadline = time.monotonic() + 60
    store = CheckpointStore(f"file://{tmp_path}/ckpts")
    while store.read_json(IDENTITY_NAME) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # some steps logged, no checkpoint (every 10,000 steps)
    os.kill(pid, signal.SIGKILL)
    assert fork_server.status() == -signal.SIGKILL
    assert latest(f"file://{tmp_path}/ckpts") is None
    lost = _read(logger, tmp_path / "logs")
    assert lost.get("train_loss"), "the lost attempt logged nothing: kill later"

    assert _run(fork_server, _request(tmp_path, logger, 2, stop_at_step=3)) == PREEMPTED_EXIT_CODE
    steps = sorted(step for step, _ in _read(logger, tmp_path / "logs")["train_loss"])
    assert steps == [0, 1, 2], steps  # one series from step 0, nothing of the lost attempt's left
