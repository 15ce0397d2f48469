"""One job's instance cannot change what another job runs or reports, and a budgeted job stops when no controller watches it.

Both run real controllers, agents and local instances; the isolation case keeps its checkpoints in
S3 (the moto server over HTTP), where every instance's role can write every prefix.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

from checkpoints.progress import Progress, TrainingStatus
from checkpoints.store import CheckpointStore
from cloud.local import LocalProvider
from cloud.provider import InstanceState
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import JOB_NAME, AgentStatus, Heartbeat, JobChannel, ProtocolError, StopRequest
from runner.state.store import JobState

from .conftest import REPO, Harness, step_of, wait_until

pytestmark = pytest.mark.e2e

TINY_TRAINING = REPO / "tests" / "e2e" / "tiny_training.py"


def _spec(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "train": {"command": f"{sys.executable} {TINY_TRAINING} 100000 0.05"},
        "checkpoint": {"url": url, "every": "60s"},
        "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
        "local": {"preempt_every": 0, "spot_price": 0.45, "on_demand_price": 1.006},
        **extra,
    }


def _beat(harness: Harness, name: str) -> Heartbeat | None:
    """The job's heartbeat as its own controller reads it (verified with the job's key; a forged one reads as none)."""
    job = harness.job(name)
    try:
        return JobChannel(Mailbox.at(job.checkpoint_url), name, job.key_bytes).read_heartbeat(0)
    except ProtocolError:
        return None


def _training(harness: Harness, name: str, attempt: int, step: int = 1) -> bool:
    try:
        beat = _beat(harness, name)
    except Exception:  # not recorded yet
        return False
    return beat is not None and beat.attempt == attempt and step_of(beat) >= step


def test_another_jobs_instance_cannot_finish_stop_or_reprogram_a_job(
    harness: Harness, s3_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # where the agents' scratch folders go
    marker = tmp_path / "hostile-command-ran"
    assert harness.cli("submit", str(harness.write_spec(_spec("a", f"{s3_bucket}/a"), "a.yaml"))).exit_code == 0
    victim = harness.start("run", str(harness.write_spec(_spec("b", f"{s3_bucket}/b"), "b.yaml")))
    wait_until(lambda: _training(harness, "b", 1, step=3), timeout_s=60, what="job b training")
    b_url = harness.job("b").checkpoint_url
    spec_b = CheckpointStore(b_url).read_json(JOB_NAME)

    # Job a's instance holds a's key; with it (or with none) it writes into b's prefix.
    hostile = JobChannel(Mailbox.at(b_url), "b", harness.job("a").key_bytes)
    hostile.mailbox.write(JOB_NAME, {**spec_b, "train": {"command": f"touch {marker}"}})
    hostile.write_stop(StopRequest(attempt=1, kind="budget", reason="forged", time=time.time()))

    def forged_finish_ignored() -> bool:
        now = time.time()
        finished = Progress(status=TrainingStatus.FINISHED, time=now, step=10**6, epoch=0)
        hostile.write_heartbeat(Heartbeat(status=AgentStatus.FINISHED, attempt=1, time=now, message="forged", progress=finished))
        return any(event.kind == "forged" for _, event in harness.store.events("b"))

    wait_until(forged_finish_ignored, timeout_s=30, what="b's controller to notice and ignore the forged heartbeat")
    step_then = step_of(_beat(harness, "b"))
    wait_until(lambda: step_of(_beat(harness, "b")) >= step_then + 20, timeout_s=30, what="b to keep training after the forged stop")
    assert harness.job("b").state is JobState.RUNNING
    assert len(harness.store.attempts("b")) == 1

    # b's next instance runs b's spec, not the one written over it.
    assert harness.cli("interrupt", "b", "--no-notice").exit_code == 0
    wait_until(lambda: _training(harness, "b", 2, step=3), timeout_s=60, what="b's second attempt training")
    assert not marker.exists()
    assert CheckpointStore(b_url).read_json(JOB_NAME) == spec_b
    assert harness.figures("b").preemptions == 1 and harness.job("b").restarts_on_errors == 0
    assert list(scratch.glob("spotrun-b-2-*"))
    assert harness.cli("cancel", "b").exit_code == 0
    assert harness.wait_for_exit(victim, 60) == 1
    # Terminated (SIGTERM), the agent still cleans up; attempt 1's, killed outright, could not.
    wait_until(lambda: not list(scratch.glob("spotrun-b-2-*")), timeout_s=20, what="the cancelled agent's scratch folder to go")


def test_a_budgeted_job_whose_controller_is_killed_stops_within_one_horizon(
    harness: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))  # the agent's scratch folders go here, and must go again
    spot_usd_per_hour, horizon_s, stop_grace_s = 36.0, 2.0, 5.0  # a cent a second; the local controller's stop grace
    spec = _spec("unwatched", f"file://{tmp_path}/unwatched", budget={"max_usd": 5.0, "horizon": f"{horizon_s:.0f}s"})
    spec["local"].update(spot_price=spot_usd_per_hour, on_demand_price=100.0)
    controller = harness.start("run", str(harness.write_spec(spec)))
    wait_until(lambda: _training(harness, "unwatched", 1, step=3), timeout_s=60, what="training")

    controller.kill()  # SIGKILL: no hand-over, no goodbye; a closed laptop
    killed_at = time.time()
    controller.wait()
    [row] = harness.store.intervals("unwatched")
    provider = LocalProvider(harness.home, preempt_every_s=0, notice_s=0, seed=0, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0)
    status = wait_until(
        lambda: (found := provider.poll([row.instance_id])[row.instance_id]).state is InstanceState.TERMINATED and found,
        timeout_s=60,
        what="the unwatched instance to stop by itself",
    )

    # The training ignores stop requests (no spotrun callback), so it is ended after the stop grace.
    assert status.ended_at is not None and status.ended_at - killed_at <= horizon_s + stop_grace_s + 3.0, status.ended_at - killed_at
    unwatched_usd = (status.ended_at - killed_at) * spot_usd_per_hour / 3600
    assert unwatched_usd <= (horizon_s + stop_grace_s + 3.0) * spot_usd_per_hour / 3600
    log = (
        CheckpointStore(harness.job("unwatched").checkpoint_url)
        .fs.cat_file(CheckpointStore(harness.job("unwatched").checkpoint_url).spotrun_path("logs/attempt-0001.log"))
        .decode()
    )
    assert "spending horizon ran out unrenewed" in log, log[-2000:]
    assert not list(scratch.glob("spotrun-*")), list(scratch.iterdir())
