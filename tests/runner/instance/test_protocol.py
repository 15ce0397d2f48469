"""The agent <-> controller messages: what one job's key signed is the only thing another job's instance cannot fake."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from specs import job_spec

from checkpoints import signing
from checkpoints.progress import Progress, TrainingStatus
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import (
    JOB_NAME,
    AgentStatus,
    ForgedMessageError,
    Heartbeat,
    JobChannel,
    LaunchCredentials,
    ProtocolError,
    SpendingHorizon,
    StopRequest,
    write_spec,
)
from runner.spec.job_spec import stored_form

REPO = Path(__file__).resolve().parents[3]


def _channel(tmp_path: Path, job: str = "b", key: bytes | None = None) -> JobChannel:
    return JobChannel(Mailbox.at(f"file://{tmp_path}/{job}"), job, key)


def test_messages_signed_with_another_jobs_key_or_unsigned_are_rejected_and_the_real_ones_read(tmp_path: Path) -> None:
    b_key, a_key = bytes.fromhex(signing.new_key()), bytes.fromhex(signing.new_key())
    controller = _channel(tmp_path, key=b_key)
    hostile = _channel(tmp_path, key=a_key)  # job A's instance writing into B's prefix with what it holds

    hostile.write_heartbeat(Heartbeat(status=AgentStatus.FINISHED, attempt=1, time=1.0))
    with pytest.raises(ForgedMessageError, match="not signed with job 'b'"):
        controller.read_heartbeat(0)
    controller.mailbox.write("heartbeat.json", {"status": "finished", "attempt": 1, "time": 1.0})  # no MAC at all
    with pytest.raises(ForgedMessageError):
        controller.read_heartbeat(0)

    diverged = Progress(status=TrainingStatus.TRAINING, time=2.0, step=5, epoch=0, loss=float("nan"))  # a diverged loss is still reported
    controller.write_heartbeat(Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=2.0, progress=diverged))
    read = controller.read_heartbeat(0)
    assert read is not None and read.status is AgentStatus.RUNNING and read.progress is not None and math.isnan(read.progress.loss or 0.0)

    # A valid heartbeat copied over the stop request is not a stop request: the MAC names its purpose.
    heartbeat = controller.mailbox.read("heartbeat.json")
    assert heartbeat is not None
    controller.mailbox.write("stop.json", {**heartbeat, "spotrun_message": "stop"})
    with pytest.raises(ForgedMessageError):
        controller.read_stop()
    request = StopRequest(attempt=2, kind="budget", reason="budget spent", time=5.0)
    controller.write_stop(request)
    assert controller.read_stop() == request


def test_a_message_of_another_job_or_another_version_or_with_wrong_types_is_refused(tmp_path: Path) -> None:
    key = bytes.fromhex(signing.new_key())
    other = JobChannel(Mailbox.at(f"file://{tmp_path}/b"), "a", key)  # same key, another job's name
    other.write_heartbeat(Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=1.0))
    with pytest.raises(ForgedMessageError, match="job 'a'"):
        _channel(tmp_path, key=key).read_heartbeat(0)

    unsigned = _channel(tmp_path)  # a job recorded before keys: read unsigned, as before
    unsigned.mailbox.write("horizon.json", {"spotrun_protocol": 99, "spotrun_message": "horizon", "spotrun_job": "b"})
    with pytest.raises(ProtocolError, match="protocol version 99"):
        unsigned.read_horizon()
    unsigned.mailbox.write("horizon.json", {"spotrun_protocol": 1, "spotrun_message": "horizon", "spotrun_job": "b", "attempt": "1"})
    with pytest.raises(ProtocolError, match="attempt is '1', expected int"):
        unsigned.read_horizon()


def test_a_horizon_lapses_by_the_controllers_deadline_or_by_the_agents_own_clock() -> None:
    horizon = SpendingHorizon(attempt=1, until=1000.0, duration_s=60.0, granted_at=940.0, stop_grace_s=5.0, reason="")
    assert not horizon.lapsed(now=950.0, first_seen=945.0)
    assert horizon.lapsed(now=1000.0, first_seen=990.0)  # the deadline
    assert horizon.lapsed(now=900.0, first_seen=840.0)  # a clock behind the controller's: 60 s since it was first seen


def _agent(tmp_path: Path, url: str, credentials: LaunchCredentials) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **credentials.to_env(), "SPOTRUN_IMDS_ENDPOINT": "http://127.0.0.1:9", "TMPDIR": str(tmp_path)}
    return subprocess.run(
        [sys.executable, "-m", "runner", "agent", "--checkpoint-url", url, "--attempt", "1"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow  # a real `spotrun agent` process
def test_an_agent_runs_only_the_spec_its_launch_names_and_reports_a_tampered_one_signed(tmp_path: Path) -> None:
    marker = tmp_path / "hostile-command-ran"
    url = f"file://{tmp_path}/b"
    mailbox = Mailbox.at(url)
    spec_b = job_spec({"checkpoint": {"keep": 2, "every_s": 60}}, name="b", workdir=str(tmp_path))
    key = signing.new_key()
    credentials = LaunchCredentials(job="b", spec_sha256=write_spec(mailbox, spec_b), key=key)
    # Another job's instance rewrites B's spec after the launch: its command, B's name.
    mailbox.write(JOB_NAME, {**stored_form(spec_b), "train": {"command": f"touch {marker}"}})

    refused = _agent(tmp_path, url, credentials)

    assert refused.returncode == 3, refused.stderr
    assert "is not the spec job 'b' launched this instance with" in refused.stderr and "Traceback" not in refused.stderr
    assert not marker.exists()
    heartbeat = JobChannel(mailbox, "b", bytes.fromhex(key)).read_heartbeat(0)
    assert heartbeat is not None and heartbeat.status is AgentStatus.REFUSED and heartbeat.attempt == 1
    assert not list(tmp_path.glob("spotrun-*")), "the agent left scratch folders behind"


def test_an_attempt_whose_agent_refused_the_spec_is_relaunched_not_counted_as_the_users_failure() -> None:
    from cloud.provider import EndReason, InstanceState, InstanceStatus
    from runner.control.controller import classify
    from runner.state.store import Outcome

    ended = InstanceStatus("i-1", InstanceState.TERMINATED, 0.0, 5.0, EndReason.AGENT_EXITED, exit_code=3)
    refused = Heartbeat(status=AgentStatus.REFUSED, attempt=1, time=4.0, message="job.json is not the spec job 'b' launched")
    outcome, message = classify(ended, refused)
    assert outcome is Outcome.PREEMPTED and "not the spec" in message
