"""A job with a budget smaller than it needs stops BUDGET_EXHAUSTED, durable and clean, and finishes exactly with more."""

from __future__ import annotations

import time

import pytest

from checkpoints import latest
from cloud.local import LocalProvider
from runner.cost.ledger import summarize
from runner.errors import JobNotFoundError
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

SPOT_USD_PER_HOUR = 36.0  # a cent a second, so the budget runs out within the test
POLL_INTERVAL_S = 1.0  # the local controller's


def _training_at(harness: Harness, name: str, step: int) -> bool:
    try:
        url = harness.job(name).checkpoint_url
    except JobNotFoundError:  # the controller has not recorded it yet
        return False
    heartbeat = newest_heartbeat(url)
    return heartbeat is not None and heartbeat.status is AgentStatus.RUNNING and step_of(heartbeat) >= step


def test_budget_exhausted_stops_with_a_checkpoint_and_resume_finishes_bit_exactly(harness: Harness, reference_weights: dict) -> None:
    name = "budgeted"
    spec = digits_spec(name)
    spec["local"].update(spot_price=SPOT_USD_PER_HOUR, on_demand_price=100.0)
    spec["budget"] = {"max_usd": 50.0}
    process = harness.start("run", str(harness.write_spec(spec)))
    total_steps = TRAINER["max_epochs"] * STEPS_PER_EPOCH

    # Cut the budget while it trains, to a few seconds more than it has spent: the next cycles must stop it.
    wait_until(lambda: _training_at(harness, name, total_steps // 5), timeout_s=180, what="training past a fifth of the steps")
    spent = summarize(harness.store.intervals(name), time.time()).spent_usd
    budget = round(spent + 0.09, 4)  # 9 s at a cent a second; stopping reserves 1 s poll + 5 s grace
    refused = harness.cli("resume", name, "--budget", str(budget))
    assert refused.exit_code == 2 and "exceeds the" in refused.output and "--force" in refused.output, refused.output
    assert harness.job(name).spec.budget.max_usd == 50.0  # refused: nothing changed
    cut = harness.cli("resume", name, "--budget", str(budget), "--force")
    assert cut.exit_code == 0 and "applies it on its next cycle" in cut.output, cut.output
    assert harness.wait_for_exit(process, 120) == 1, harness.controller_output()[-4000:]

    job = harness.job(name)
    assert job.state is JobState.BUDGET_EXHAUSTED, job.message
    [attempt] = harness.store.attempts(name)
    assert attempt.outcome is Outcome.STOPPED
    intervals = harness.store.intervals(name)
    assert all(interval.end is not None for interval in intervals)
    spend = summarize(intervals, 0.0).spent_usd
    assert spend <= budget + SPOT_USD_PER_HOUR / 3600 * POLL_INTERVAL_S, (spend, budget)
    checkpoint = latest(job.checkpoint_url)
    assert checkpoint is not None and total_steps // 5 <= checkpoint.step < total_steps and not checkpoint.final
    progress = job.training_progress
    assert (
        progress is not None and checkpoint.step == progress.checkpoint_step == progress.step
    )  # the stop checkpointed where training stood
    provider = LocalProvider(harness.home, preempt_every_s=0, notice_s=0, seed=0, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0)
    assert provider.poll([attempt.instance_id])[attempt.instance_id].state.value == "terminated"
    kinds = [event.kind for _, event in harness.store.events(name)]
    assert "stop" in kinds and "budget" in kinds

    refused = harness.cli("resume", name)
    assert refused.exit_code == 2 and "--budget" in refused.output
    too_small = harness.cli("resume", name, "--budget", str(spend / 2))
    assert too_small.exit_code == 2 and "already spent" in too_small.output
    assert harness.job(name).state is JobState.BUDGET_EXHAUSTED  # nothing changed by the refusals

    resumed = harness.start("resume", name, "--budget", "50")
    assert harness.wait_for_exit(resumed, 300) == 0, harness.controller_output()[-4000:]
    job = harness.job(name)
    assert job.state is JobState.SUCCEEDED
    assert [a.outcome for a in harness.store.attempts(name)] == [Outcome.STOPPED, Outcome.FINISHED]
    assert_bit_identical(reference_weights, final_weights(job.checkpoint_url))
