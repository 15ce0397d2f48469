"""A 2-node gang on the local provider (2 instances x 1 process, gloo) survives a notice on one node and the loss of another."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from runner.errors import JobNotFoundError
from runner.instance.protocol import AgentStatus
from runner.state.store import JobState, Outcome

from .conftest import Harness, assert_bit_identical, final_weights, newest_heartbeat, step_of, uninterrupted_weights, wait_until

pytestmark = pytest.mark.e2e

EPOCHS = 30  # ~3 s of training per 276 steps here: the interruptions need room to land before the end
STEPS_PER_EPOCH = 23  # ceil(1438 / 32 / 2 nodes)


def gang_spec(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "train": {
            "model": "examples/digits.py:DigitsClassifier",
            "model_args": {"lr": 0.05, "hidden": [512], "dropout": 0.2, "patience": 20},
            "data": "examples/digits.py:DigitsData",
            "data_args": {"batch_size": 32},
            "trainer": {"max_epochs": EPOCHS, "enable_progress_bar": False, "enable_model_summary": False, "logger": False},
            "seed": 0,
        },
        "checkpoint": {"every_steps": 25, "keep": 2},
        "resources": {"provider": "local", "instance_types": ["g5.xlarge"], "nodes": 2, "collective_timeout": "20s"},
        "local": {"preempt_every": 0, "notice": "3s"},
    }


@pytest.fixture(scope="module")
def gang_reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """An uninterrupted 2-node run with the same seed."""
    return uninterrupted_weights(tmp_path_factory.mktemp("gang-reference"), gang_spec("gang-reference"))


def _training(harness: Harness, name: str, *, attempt: int, step: int) -> bool:
    try:
        url = harness.job(name).checkpoint_url
    except JobNotFoundError:
        return False
    heartbeat = newest_heartbeat(url)
    return heartbeat is not None and heartbeat.attempt == attempt and heartbeat.status is AgentStatus.RUNNING and step_of(heartbeat) >= step


def _interrupt(harness: Harness, controller: subprocess.Popen[str], name: str, *, attempt: int, step: int, node: int, notice: bool) -> None:
    def ready() -> bool:
        assert controller.poll() is None, harness.controller_output()[-4000:]
        return _training(harness, name, attempt=attempt, step=step)

    wait_until(ready, timeout_s=180, what=f"attempt {attempt} training past step {step}")
    result = harness.cli("interrupt", name, "--node", str(node), *([] if notice else ["--no-notice"]))
    assert result.exit_code == 0, result.output
    wait_until(lambda: not harness.store.attempts(name)[attempt - 1].is_open, timeout_s=90, what=f"attempt {attempt} to end")


def test_a_gang_survives_a_notice_on_one_node_and_a_lost_node_bit_exactly(harness: Harness, gang_reference: dict) -> None:
    name = "gang"
    controller = harness.start("run", str(harness.write_spec(gang_spec(name))))
    total = EPOCHS * STEPS_PER_EPOCH
    _interrupt(harness, controller, name, attempt=1, step=total // 6, node=1, notice=True)
    _interrupt(harness, controller, name, attempt=2, step=total // 2, node=0, notice=False)
    assert harness.wait_for_exit(controller, 300) == 0, harness.controller_output()[-4000:]

    job = harness.job(name)
    assert job.state is JobState.SUCCEEDED and harness.figures(name).preemptions == 2
    attempts = harness.store.attempts(name)
    assert [attempt.outcome for attempt in attempts] == [Outcome.PREEMPTED, Outcome.PREEMPTED, Outcome.FINISHED]
    rows = harness.store.intervals(name)
    assert sorted((row.attempt, row.node) for row in rows) == [(a, n) for a in (1, 2, 3) for n in (0, 1)]
    assert {(row.attempt, row.node): row.outcome for row in rows if row.outcome == "preempted"}.keys() == {(1, 1), (2, 0)}
    assert all(row.end is not None for row in rows)
    assert all(row.productive_at is not None for row in rows)  # every node's restart time ends when the gang trains
    assert_bit_identical(gang_reference, final_weights(job.checkpoint_url))
