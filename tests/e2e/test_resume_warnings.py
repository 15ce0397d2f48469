"""A job that cannot resume exactly says so where its user looks: `spotrun logs` and `status --json`."""

from __future__ import annotations

import json

import pytest

from runner.state.store import JobState

from .conftest import Harness, step_of, wait_until
from .test_local_preemption import _running_attempt_at

pytestmark = pytest.mark.e2e


def test_a_stateless_iterable_dataset_resumes_at_the_step_with_a_warning(harness: Harness) -> None:
    spec = {
        "name": "stream",
        "train": {
            "model": "tests/e2e/stream_training.py:StreamModel",
            "data": "tests/e2e/stream_training.py:StreamData",
            "trainer": {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False, "logger": False},
            "seed": 0,
        },
        "checkpoint": {"every_steps": 5, "keep": 2},
        "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
        "local": {"preempt_every": 0, "notice": "2s", "spot_price": 0.45, "on_demand_price": 1.006},
    }
    controller = harness.start("run", str(harness.write_spec(spec)))
    wait_until(lambda: _running_attempt_at(harness, "stream", 12), timeout_s=120, what="stream training past step 12")
    assert harness.cli("interrupt", "stream").exit_code == 0
    assert harness.wait_for_exit(controller, 240) == 0, harness.controller_output()[-4000:]

    job = harness.job("stream")
    assert job.state is JobState.SUCCEEDED and harness.figures("stream").preemptions == 1
    assert step_of(job.progress) == 80  # 2 epochs of 40 batches: the resumed epoch did not restart its stream
    logs = harness.cli("logs", "stream").output
    assert "RESUME IS NOT EXACT" in logs and "IterableDataset (Stream)" in logs
    status = json.loads(harness.cli("status", "stream", "--json").output)
    assert status["resume_exact"] is False
    assert "IterableDataset (Stream) without state_dict()/load_state_dict()" in status["resume_inexact_reason"]
