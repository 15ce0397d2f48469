"""A gang member whose peer vanishes ends within the collective timeout instead of hanging.

Two real training processes (the model-mode worker, DDP over gloo, one per "node"); mid-training
rank 0 is either SIGKILLed (its sockets close: the survivor's collective fails at once) or
SIGSTOPped (a host that froze or dropped off the network: its sockets stay open and only the
timeout can end the survivor's wait). Either way rank 1 must exit non-zero, within
``resources.collective_timeout`` plus the time to tear down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from specs import job_spec

from checkpoints.progress import read_progress
from runner.spec.job_spec import stored_form

REPO = Path(__file__).resolve().parents[3]
TIMEOUT_S = 8.0
TEARDOWN_S = 20.0  # after the timeout fires: the error unwinds through Lightning and the process exits

pytestmark = pytest.mark.slow  # two real DDP training processes, and a wait for the collective timeout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _worker(tmp_path: Path, node: int, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    job = job_spec(
        {
            "train": {
                "model": f"{REPO}/examples/digits.py:DigitsClassifier",
                "model_args": {"hidden": [64]},
                "data": f"{REPO}/examples/digits.py:DigitsData",
                "data_args": {"batch_size": 8},
                "trainer": {"max_epochs": 1000, "enable_progress_bar": False, "enable_model_summary": False, "logger": False},
                "seed": 0,
            },
            "resources": {"nodes": 2, "devices": 1, "collective_timeout_s": TIMEOUT_S},
        },
        name="gang",
        workdir=str(REPO),
    )
    root = tmp_path / f"node-{node}"
    root.mkdir()
    (root / "job.json").write_text(json.dumps(stored_form(job)))
    progress = root / "progress.json"
    env = {
        **os.environ,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "NODE_RANK": str(node),
        "WORLD_SIZE": "2",
        "SPOTRUN_CHECKPOINT_URL": f"file://{tmp_path}/checkpoints",
        "SPOTRUN_CHECKPOINT_EVERY_STEPS": "1000000",
        "SPOTRUN_CHECKPOINT_KEEP": "1",
        "SPOTRUN_PROGRESS_FILE": str(progress),
        "SPOTRUN_CONTROL_FILE": str(root / "control.json"),
    }
    log = open(root / "log", "wb")  # owned by the process
    process = subprocess.Popen(
        [sys.executable, "-m", "runner.instance.train_worker", str(root / "job.json"), str(root / "trainer")],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return process, progress


def _reported_step(progress_file: Path) -> int:
    """The step rank 0's callback last reported reaching; 0 before its first report."""
    report = read_progress(progress_file)
    return report.step if report is not None else 0


def _wait(predicate: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.parametrize("lost_as", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "frozen"])
def test_a_lost_peer_ends_training_within_the_collective_timeout(tmp_path: Path, lost_as: signal.Signals) -> None:
    port = _free_port()
    rank0, progress = _worker(tmp_path, 0, port)
    rank1, _ = _worker(tmp_path, 1, port)
    try:
        _wait(lambda: _reported_step(progress) > 5, 120, "both ranks training")
        rank0.send_signal(lost_as)
        lost_at = time.monotonic()
        code = rank1.wait(timeout=TIMEOUT_S + TEARDOWN_S)  # raises (fails the test) if the survivor hangs
        print(f"survivor exited {code} after {time.monotonic() - lost_at:.1f} s")
        assert code != 0, "the survivor must not report success"
    finally:
        for process in (rank0, rank1):
            if process.poll() is None:
                process.kill()  # SIGKILL ends a stopped process too
                process.wait()
