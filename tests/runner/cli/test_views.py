"""What `spotrun run` prints at the end of a job that did not succeed."""

from __future__ import annotations

import json
import time
from pathlib import Path

from specs import job_spec

from checkpoints.progress import CheckpointReport, Progress, TrainingStatus
from checkpoints.store import CheckpointStore
from runner.cli.summaries import job_summary
from runner.cli.views import final_report
from runner.instance.protocol import AgentStatus, Heartbeat
from runner.spec.job_spec import stored_form
from runner.state.store import Attempt, Job, JobState, Outcome

TRACEBACK = """\
Epoch 3:  40%|████      | 18/45
[spotrun agent 10:00:01] attempt 2: training started (pid 4242)
Traceback (most recent call last):
  File "train.py", line 88, in training_step
    logits = self.net(batch)
ValueError: expected a batch of shape (32, 64), got (32, 63)
[spotrun agent 10:00:09] training failed with exit code 1: ValueError: expected a batch of shape (32, 64), got (32, 63)
"""


def _attempt(number: int, outcome: Outcome) -> Attempt:
    return Attempt(
        job="digits",
        number=number,
        token=f"t{number}",
        provider="local",
        instance_type="local",
        zone="local",
        market="spot",
        price_usd_per_hour=0.3,
        on_demand_price_usd_per_hour=1.0,
        instance_id=f"i-{number}",
        requested_at=0.0,
        launched_at=1.0,
        ended_at=2.0,
        end_reason="agent-exited",
        outcome=outcome,
        exit_code=1,
    )


def test_a_failed_job_ends_with_its_training_error_the_logs_command_and_no_stale_step(tmp_path: Path) -> None:
    checkpoints = CheckpointStore(f"file://{tmp_path}/ckpt")
    data = tmp_path / "model.ckpt"
    data.write_bytes(b"weights")
    committed = checkpoints.commit(data, step=100, epoch=2, reason="periodic")
    checkpoints.write_bytes("logs/attempt-0002.log", TRACEBACK.encode())
    reported_at = time.time() - 3600  # attempt 1's last report; attempt 2 failed before reporting a step
    job = Job(
        name="digits",
        state=JobState.FAILED,
        spec_json=json.dumps(stored_form(job_spec(name="digits"))),
        spec_path="-",
        checkpoint_url=checkpoints.url,
        created_at=0.0,
        updated_at=0.0,
        restarts_on_errors=0,
        cancel_requested=False,
        progress=Heartbeat(
            status=AgentStatus.RUNNING,
            attempt=1,
            time=reported_at,
            progress=Progress(
                status=TrainingStatus.TRAINING,
                time=reported_at,
                step=120,
                epoch=2,
                checkpoint=CheckpointReport.of(committed),
            ),
        ),
        message="training failed with exit code 1",
    )
    attempts = [_attempt(1, Outcome.PREEMPTED), _attempt(2, Outcome.FAILED)]

    lines = final_report(job_summary(job, attempts, []), attempts, checkpoints)

    text = "\n".join(lines)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(reported_at))
    assert f"last reported step 120 at {stamp} by attempt 1; the newest checkpoint holds step 100" in text
    assert "the training output of attempt 2 ends with:" in text
    assert "ValueError: expected a batch of shape (32, 64), got (32, 63)" in text and 'File "train.py", line 88' in text
    assert "[spotrun agent" not in text  # the agent's own notes are not the training's error
    assert "`spotrun logs digits` (`--attempt 2` for this attempt only)" in text
