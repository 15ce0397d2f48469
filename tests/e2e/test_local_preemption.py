"""A real job through `spotrun run` on the local provider survives preemptions and resumes bit-exactly."""

from __future__ import annotations

import itertools
import json
import random
import signal
import subprocess

import pytest

from runner.instance.protocol import AgentStatus
from runner.state.store import JobState, Outcome

from .conftest import (
    STEPS_PER_EPOCH,
    TRAINER,
    Harness,
    assert_bit_identical,
    digits_spec,
    final_weights,
    newest_heartbeat,
    step_of,
    wait_until,
)

pytestmark = pytest.mark.e2e


def _running_attempt_at(harness: Harness, name: str, step: int) -> int | None:
    """The number of the attempt that is training at or past ``step``, per its own heartbeat."""
    attempts = harness.store.attempts(name)
    if not attempts or not attempts[-1].is_open or attempts[-1].instance_id is None:
        return None
    heartbeat = newest_heartbeat(harness.job(name).checkpoint_url)
    on_current = heartbeat is not None and heartbeat.attempt == attempts[-1].number and heartbeat.status is AgentStatus.RUNNING
    return attempts[-1].number if on_current and step_of(heartbeat) >= step else None


def preempt_at_random_steps(
    harness: Harness, controller: subprocess.Popen[str], name: str, rng: random.Random, *, notices: int, kills: int, total_steps: int
) -> list[str]:
    """Interrupt the job at random training steps: ``notices`` spot notices and ``kills`` bare SIGKILLs."""
    plan = ["notice"] * notices + ["kill"] * kills
    rng.shuffle(plan)
    # Random steps, but far enough apart (40: more than the ~30 steps an interruption lands after its aim) that each
    # interruption lands on a new attempt's progress, and all before the last 30 % of the run.
    steps = sorted(rng.sample(range(total_steps // 10, total_steps * 7 // 10, 40), len(plan)))
    for action, step in zip(plan, steps, strict=True):

        def training_past_step(step: int = step) -> int | None:
            if controller.poll() is not None:
                raise AssertionError(f"the controller exited early:\n{harness.controller_output()[-4000:]}")
            return _running_attempt_at(harness, name, step)

        number = wait_until(training_past_step, timeout_s=180, what=f"{name} training at step {step}")
        result = harness.cli("interrupt", name, *(["--no-notice"] if action == "kill" else []))
        assert result.exit_code == 0, result.output
        wait_until(
            lambda number=number: not harness.store.attempts(name)[number - 1].is_open, timeout_s=60, what=f"attempt {number} to end"
        )
    return plan


def _assert_one_instance_at_a_time(harness: Harness, name: str) -> None:
    attempts = harness.store.attempts(name)
    for before, after in itertools.pairwise(attempts):
        assert before.ended_at is not None and after.launched_at is not None
        assert after.requested_at >= before.ended_at, f"attempt {after.number} was requested before {before.number} ended"


@pytest.mark.parametrize("mode", ["model", "command"])
def test_job_survives_notices_and_a_bare_kill_bit_exactly(harness: Harness, reference_weights: dict, mode: str) -> None:
    name = f"digits-{mode}"
    process = harness.start("run", str(harness.write_spec(digits_spec(name, command=mode == "command"))))
    total_steps = TRAINER["max_epochs"] * STEPS_PER_EPOCH
    plan = preempt_at_random_steps(harness, process, name, random.Random(f"e2e-{mode}"), notices=3, kills=1, total_steps=total_steps)
    assert harness.wait_for_exit(process, 300) == 0, harness.controller_output()[-4000:]

    job = harness.job(name)
    attempts = harness.store.attempts(name)
    assert job.state is JobState.SUCCEEDED
    assert harness.figures(name).preemptions == len(plan) == 4 and job.restarts_on_errors == 0
    assert [attempt.outcome for attempt in attempts] == [Outcome.PREEMPTED] * 4 + [Outcome.FINISHED]
    reasons = [attempt.end_reason for attempt in attempts[:-1]]
    assert reasons.count("spot-interruption") == 3 and reasons.count("host-lost") == 1
    _assert_one_instance_at_a_time(harness, name)
    assert_bit_identical(reference_weights, final_weights(job.checkpoint_url))

    output = harness.controller_output()
    assert "SUCCEEDED" in output and "saved $" in output  # the final status and cost summary
    _assert_what_users_see(harness, name)


def _assert_what_users_see(harness: Harness, name: str) -> None:
    """status/jobs --json carry the promised fields, logs mark every attempt, checkpoints list newest first."""
    status = json.loads(harness.cli("status", name, "--json").output)
    assert status["name"] == name and status["state"] == "SUCCEEDED"
    assert status["preemptions"] == 4 and status["attempts"] == 5
    assert status["step"] > 0 and status["epoch"] is not None and status["spent_usd"] > 0
    assert 0 < status["spent_usd"] < status["on_demand_usd"]
    listed = json.loads(harness.cli("jobs", "--json").output)
    assert [job["name"] for job in listed] == [name]

    logs = harness.cli("logs", name).output
    positions = [logs.index(f"attempt {number}") for number in range(1, 6)]
    assert positions == sorted(positions)
    assert logs.count("spot interruption notice") == 3 and "training finished" in logs

    checkpoints = json.loads(harness.cli("checkpoints", name, "--json").output)
    assert checkpoints[0]["step"] == status["step"] and checkpoints[0]["final"]
    assert [c["step"] for c in checkpoints] == sorted((c["step"] for c in checkpoints), reverse=True)
    assert {"step", "epoch", "time", "size_bytes", "url"} <= checkpoints[0].keys()


def test_killed_controller_is_resumed_without_duplicate_instances(harness: Harness, reference_weights: dict) -> None:
    name = "digits-controller"
    spec_file = harness.write_spec(digits_spec(name))
    first = harness.start("run", str(spec_file))
    wait_until(lambda: _running_attempt_at(harness, name, 60), timeout_s=120, what="training past step 60")
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)

    # With no controller, the instance keeps training, and is then preempted: nobody relaunches yet.
    progressed = step_of(harness.job(name).progress)
    wait_until(lambda: _running_attempt_at(harness, name, progressed + 30), timeout_s=60, what="training to go on without a controller")
    assert harness.cli("interrupt", name).exit_code == 0
    instance = harness.store.attempts(name)[0].instance_id
    from cloud.local import LocalProvider

    provider = LocalProvider(
        harness.home, preempt_every_s=0, notice_s=2, seed=0, spot_price_usd_per_hour=0.45, on_demand_price_usd_per_hour=1.0
    )
    wait_until(lambda: provider.poll([instance])[instance].state.value == "terminated", timeout_s=60, what="the preempted instance to go")
    assert len(harness.store.attempts(name)) == 1

    second = harness.start("resume", name)
    assert harness.wait_for_exit(second, 300) == 0, harness.controller_output()[-4000:]
    job = harness.job(name)
    assert job.state is JobState.SUCCEEDED and harness.figures(name).preemptions == 1
    assert len(harness.store.attempts(name)) == 2
    _assert_one_instance_at_a_time(harness, name)
    assert_bit_identical(reference_weights, final_weights(job.checkpoint_url))


def test_a_second_controller_for_the_same_job_follows_it_and_takes_over_when_the_first_stops(harness: Harness) -> None:
    name = "digits-lock"
    first = harness.start("run", str(harness.write_spec(digits_spec(name))))
    wait_until(lambda: harness.store.attempts(name), timeout_s=60, what="the first launch")
    first_id = harness.job(name).lease_owner
    second = harness.start("resume", name)
    try:
        wait_until(
            lambda: f"driven by controller {first_id}; following it" in harness.controller_output(),
            timeout_s=60,
            what="the second to follow",
        )
        assert second.poll() is None and harness.job(name).lease_owner == first_id
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130
        taken = wait_until(
            lambda: harness.job(name).lease_owner not in (None, first_id) and harness.job(name).lease_owner,
            timeout_s=30,
            what="the second to take over",
        )
        assert harness.cli("cancel", name).exit_code == 0  # the second, now driving, terminates the instance
        assert harness.wait_for_exit(second, 60) == 1  # the job ended, not SUCCEEDED
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
    assert harness.job(name).state is JobState.CANCELLED
    assert len(harness.store.attempts(name)) == 1  # the instance was never launched twice
    actors = {event.actor for _, event in harness.store.events(name) if event.kind in ("launch", "lease", "state")}
    assert actors == {first_id, taken}


def test_detached_job_cancelled_through_its_controller_leaves_no_instance(harness: Harness) -> None:
    name = "digits-detached"
    submitted = harness.cli("run", str(harness.write_spec(digits_spec(name))), "--detach")
    assert submitted.exit_code == 0 and "controller pid" in submitted.output
    wait_until(lambda: _running_attempt_at(harness, name, 1), timeout_s=120, what="the detached job to train")

    cancelled = harness.cli("cancel", name)
    assert cancelled.exit_code == 0 and "is driven by controller" in cancelled.output
    wait_until(lambda: harness.job(name).state is JobState.CANCELLED, timeout_s=60, what="the controller to cancel the job")

    from cloud.local import LocalProvider

    attempts = harness.store.attempts(name)
    assert [attempt.outcome for attempt in attempts] == [Outcome.CANCELLED]
    provider = LocalProvider(
        harness.home, preempt_every_s=0, notice_s=2, seed=0, spot_price_usd_per_hour=0.45, on_demand_price_usd_per_hour=1.0
    )
    instance = attempts[0].instance_id
    assert provider.poll([instance])[instance].state.value == "terminated"
    assert harness.cli("cancel", name).exit_code == 2  # already ended: bad request, said plainly
