"""The forecast's rules: measured figures win over the spec's estimates, which win over the provider's priors."""

from __future__ import annotations

import pytest
from specs import job_spec

from checkpoints.progress import Progress, TrainingStatus
from cloud.provider import ProviderPriors
from runner.cost import forecast
from runner.state.store import Interval, Outcome

PRIORS = ProviderPriors(restart_overhead_s=300.0, spot_s_between_preemptions=86_400.0)


def _row(
    attempt: int, start: float, end: float | None, *, productive_after_s: float | None, outcome: Outcome | None, lost_s: float | None = None
) -> Interval:
    return Interval(
        job="job",
        attempt=attempt,
        node=0,
        instance_id=f"i-{attempt}",
        provider="aws",
        instance_type="g5.xlarge",
        zone="us-east-1a",
        market="spot",
        gpus=1,
        price_usd_per_hour=0.4,
        on_demand_price_usd_per_hour=1.2,
        requested_at=start,
        start=start,
        end=end,
        end_reason=None if outcome is None else "exited",
        outcome=None if outcome is None else outcome.value,
        cost_usd=None,
        on_demand_usd=None,
        prices=((start, 0.4),),
        productive_at=None if productive_after_s is None else start + productive_after_s,
        work_lost_s=lost_s,
        steps_lost=None,
        team=None,
        tags={},
        launched_by="",
    )


def _progress(step: int, total: int | None, steps_per_s: float) -> Progress:
    return Progress(status=TrainingStatus.TRAINING, time=0.0, step=step, epoch=0, total_steps=total, steps_per_s=steps_per_s)


def test_measured_throughput_wins_over_the_expected_runtime() -> None:
    spec = job_spec({"budget": {"expected_runtime": "10h"}})
    measured = forecast.work(spec, _progress(step=250, total=1000, steps_per_s=5.0))
    assert measured == forecast.Work(done_s=50.0, total_s=200.0, basis="measured")
    assert measured.remaining_s == 150.0


def test_before_any_throughput_the_estimate_is_scaled_by_the_steps_done() -> None:
    spec = job_spec({"budget": {"expected_runtime": "1000s"}})
    assert forecast.work(spec, None) == forecast.Work(done_s=0.0, total_s=1000.0, basis="estimated")
    assert forecast.work(spec, _progress(step=300, total=1000, steps_per_s=0.0)) == forecast.Work(
        done_s=300.0, total_s=1000.0, basis="estimated"
    )


def test_without_a_measurement_or_an_estimate_there_is_no_forecast() -> None:
    spec = job_spec()
    assert forecast.work(spec, _progress(step=10, total=None, steps_per_s=2.0)) is None
    assert forecast.forecast(spec, None, [], 1.0, priors=PRIORS, spot=True, now=0.0) is None


def test_restart_overhead_is_measured_then_configured_then_the_providers_prior() -> None:
    measured = [
        _row(1, 0.0, 100.0, productive_after_s=40.0, outcome=Outcome.PREEMPTED),
        _row(2, 200.0, None, productive_after_s=60.0, outcome=None),
    ]
    assert forecast.restart_overhead_s(job_spec({"budget": {"restart_overhead": "2m"}}), measured, PRIORS) == 50.0
    never_productive = [_row(1, 0.0, 100.0, productive_after_s=None, outcome=Outcome.PREEMPTED)]
    assert forecast.restart_overhead_s(job_spec({"budget": {"restart_overhead": "2m"}}), never_productive, PRIORS) == 120.0
    assert forecast.restart_overhead_s(job_spec(), never_productive, PRIORS) == 300.0


def test_the_preemption_rate_is_the_jobs_own_once_it_was_preempted() -> None:
    rows = [
        _row(1, 0.0, 1000.0, productive_after_s=10.0, outcome=Outcome.PREEMPTED),
        _row(2, 1000.0, None, productive_after_s=10.0, outcome=None),
    ]
    assert forecast.spot_seconds_between_preemptions(rows, now=3000.0, priors=PRIORS) == 3000.0  # 3000 s of spot, one preemption
    unpreempted = [_row(1, 0.0, None, productive_after_s=10.0, outcome=None)]
    assert forecast.spot_seconds_between_preemptions(unpreempted, now=3000.0, priors=PRIORS) == 86_400.0
    never = ProviderPriors(restart_overhead_s=15.0, spot_s_between_preemptions=None)
    assert forecast.spot_seconds_between_preemptions(unpreempted, now=3000.0, priors=never) is None


def test_a_spot_forecast_adds_a_restart_and_the_work_lost_for_each_expected_preemption() -> None:
    spec = job_spec({"budget": {"restart_overhead": "100s"}, "resources": {"nodes": 2}})
    rows = [_row(1, 0.0, 1000.0, productive_after_s=None, outcome=Outcome.PREEMPTED, lost_s=50.0)]
    progress = _progress(step=0, total=2000, steps_per_s=1.0)  # 2000 s left; one preemption per 1000 s of spot
    predicted = forecast.forecast(spec, progress, rows, 0.36, priors=PRIORS, spot=True, now=1000.0)
    assert predicted is not None
    assert predicted.expected_preemptions == pytest.approx(2.0)
    # two preemptions, each a restart (the spec's 100 s: none was measured) and 50 s of lost work, and one start now
    assert predicted.overhead_s == pytest.approx(2 * (100.0 + 50.0) + 100.0)
    assert predicted.usd_per_hour == pytest.approx(0.72)  # both nodes
    assert predicted.cost_usd == pytest.approx((2000.0 + 400.0) * 0.72 / 3600.0)
    on_demand = forecast.forecast(spec, progress, rows, 1.0, priors=PRIORS, spot=False, now=1000.0)
    assert on_demand is not None and on_demand.expected_preemptions == 0.0 and on_demand.overhead_s == pytest.approx(100.0)


def test_starting_costs_the_restart_overhead_and_the_stop_reserve_on_every_node() -> None:
    spec = job_spec({"budget": {"restart_overhead": "60s"}, "resources": {"nodes": 3}})
    assert forecast.start_cost_usd(spec, [], 3.6, priors=PRIORS, reserve_s=40.0) == pytest.approx(100.0 * 3 * 3.6 / 3600.0)
