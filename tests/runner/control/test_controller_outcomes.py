"""How the controller tells an attempt's end apart, and how it follows the deadline policy, on real local instances.

The agent is the fake one (it never checkpoints nor reads stop requests); the test writes the
heartbeats a real agent would, so each case is exactly the one it names.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from checkpoints.progress import CheckpointReport, Progress, TrainingStatus
from cloud.local import LocalProvider
from cloud.provider import EndReason, InstanceState, InstanceStatus
from runner.control.controller import Controller, ControllerSettings, classify
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import AgentStatus, Heartbeat, JobChannel
from runner.state.database import default_database_url
from runner.state.store import JobState, Outcome, StateStore

SETTINGS = ControllerSettings(poll_interval_s=0.2, stop_grace_s=1.0)


def _job(store: StateStore, tmp_path: Path, **resources: Any) -> tuple[str, JobChannel]:
    spec = {
        "name": "job",
        "resources": {
            "provider": "local",
            "instance_types": [],
            "market": "spot",
            "max_restarts_on_errors": 0,
            **resources.pop("resources", {}),
        },
        "local": {"preempt_every_s": 0.0},
        "budget": resources.pop("budget", {}),
        "workdir": str(tmp_path),
    }
    job = store.create_job(job_spec(spec, name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")
    return job.name, JobChannel(Mailbox.at(job.checkpoint_url), job.name, job.key_bytes)


def _cycle_until(controller: Controller, name: str, done: Callable[[], Any], what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := done()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {[e.message for _, e in controller.store.events(name)]}"
        controller.cycle(name)
        time.sleep(SETTINGS.poll_interval_s)
    return value


def test_an_agent_killed_alone_is_a_lost_host_relaunched_without_counting_against_restarts(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    agent = fake_agent("agent")
    store = StateStore(default_database_url(home))
    controller = Controller(store, make_provider(), agent_command=lambda job, attempt: agent.command(), settings=SETTINGS)
    name, _ = _job(store, tmp_path)  # max_restarts_on_errors 0: one failure of the training would end the job FAILED
    controller.cycle(name)
    os.kill(agent.wait_for("started")["pid"], signal.SIGKILL)  # the agent alone; its instance (host) is fine

    first = _cycle_until(controller, name, lambda: not store.attempts(name)[0].is_open and store.attempts(name)[0], "the attempt to end")

    assert first.outcome is Outcome.PREEMPTED and first.end_reason == "agent-exited" and first.exit_code == 128 + signal.SIGKILL
    job = store.job(name)
    assert job.state is JobState.RECOVERING and job.restarts_on_errors == 0
    assert "the agent was killed" in (job.message or "") and "relaunching" in (job.message or "")
    _cycle_until(controller, name, lambda: len(store.attempts(name)) == 2, "the relaunch")


def test_an_agent_that_reported_running_and_ended_without_an_exit_code_is_lost_but_a_reported_failure_counts() -> None:
    ended = InstanceStatus("i-0", InstanceState.TERMINATED, 0.0, 10.0, EndReason.AGENT_EXITED, exit_code=None)  # EC2 knows no exit code
    training = Progress(status=TrainingStatus.TRAINING, time=9.0, step=40, epoch=0)
    running = Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=9.0, progress=training)

    assert classify(ended, running)[0] is Outcome.PREEMPTED
    assert classify(ended, replace(running, status=AgentStatus.FAILED, message="ValueError: boom")) == (Outcome.FAILED, "ValueError: boom")


@pytest.mark.slow
def test_auto_market_holds_its_market_through_a_restart_and_labels_its_own_kill_stop_timeout(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    """20 s of work due in 22 s, 8 s done at the newest checkpoint when spot is lost.

    The new attempt's first heartbeats have no step yet; read as a job back at step 0 (20 s of
    work left, 19 s to go) they would send it to on-demand at once. Later its training reports
    step 1 (no checkpoint to resume from after all): then on-demand it must be, the stop request
    is ignored (the fake agent never checkpoints), and the controller's kill gets its own label.
    """
    provider = make_provider()
    store = StateStore(default_database_url(home))
    controller = Controller(store, provider, agent_command=lambda job, attempt: fake_agent("agent").command(), settings=SETTINGS)
    deadline = (datetime.now(UTC) + timedelta(seconds=22)).isoformat()
    name, channel = _job(
        store,
        tmp_path,
        resources={"market": "auto"},
        budget={"deadline_at": deadline, "expected_runtime_s": 20.0, "restart_overhead_s": 0.5},
    )

    def beat(attempt: int, *, step: int | None = None, checkpoint: CheckpointReport | None = None) -> None:
        """Attempt ``attempt``'s agent reporting; with ``step``, its training's report of that step of 100."""
        now = time.time()
        training = (
            None
            if step is None
            else Progress(status=TrainingStatus.TRAINING, time=now, step=step, epoch=0, total_steps=100, checkpoint=checkpoint)
        )
        channel.write_heartbeat(Heartbeat(status=AgentStatus.RUNNING, attempt=attempt, node=0, time=now, progress=training))

    controller.cycle(name)
    [first] = store.attempts(name)
    assert first.market == "spot"
    committed = CheckpointReport(
        step=40, epoch=0, time=time.time(), size_bytes=1, url=f"file://{tmp_path}/ckpt/step-40", reason="periodic", final=False
    )
    beat(1, step=50, checkpoint=committed)
    controller.cycle(name)
    provider.interrupt(first.instance_id, notice_s=0)
    second = _cycle_until(controller, name, lambda: len(store.attempts(name)) == 2 and store.attempts(name)[1], "the relaunch")
    assert second.market == "spot"

    for _ in range(5):  # the new attempt starting: heartbeats without a step
        beat(2)
        controller.cycle(name)
        time.sleep(SETTINGS.poll_interval_s)
    assert store.job(name).stop_requested is None and store.attempts(name)[1].is_open, "\n".join(e.message for _, e in store.events(name))

    beat(2, step=1)
    _cycle_until(controller, name, lambda: len(store.attempts(name)) == 3, "the move to on-demand")
    stopped, on_demand = store.attempts(name)[1:]
    assert stopped.outcome is Outcome.STOPPED and stopped.end_reason == "stop-timeout" and on_demand.market == "on-demand"
    assert [row.end_reason for row in store.intervals(name) if row.attempt == 2] == ["stop-timeout"]
    assert any("switch from spot to on-demand" in event.message for _, event in store.events(name))
