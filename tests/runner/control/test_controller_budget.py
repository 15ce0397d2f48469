"""The controller's budget and deadline decisions, on real local instances running a fake agent.

The fake agent never checkpoints nor reads stop requests, so these tests reach the controller's
last resorts: terminating after the grace period, and the spend bound that holds regardless.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from checkpoints.progress import Progress, TrainingStatus
from cloud.local import LocalProvider, SpotAvailability
from cloud.provider import PricePoint
from runner.control.controller import Controller, ControllerSettings
from runner.cost.ledger import summarize, usd_per_hour_at
from runner.instance.protocol import AgentStatus, Heartbeat
from runner.state.database import default_database_url
from runner.state.store import Job, JobState, Outcome, StateStore

DOLLAR_PER_SECOND = 3600.0  # USD per hour: spend moves fast enough to cross thresholds in seconds
SETTINGS = ControllerSettings(poll_interval_s=0.2, stop_grace_s=1.0)


def _spec(tmp_path: Path, **budget: Any) -> dict[str, Any]:
    return {
        "name": "job",
        "resources": {"provider": "local", "instance_types": [], "market": budget.pop("market", "spot"), "max_restarts_on_errors": 0},
        "local": {"preempt_every_s": 0.0},
        "budget": {"restart_overhead_s": 0.5, **budget},
        "workdir": str(tmp_path),
    }


def _controller(home: Path, provider: LocalProvider, command: tuple[str, ...]) -> tuple[StateStore, Controller]:
    store = StateStore(default_database_url(home))
    return store, Controller(store, provider, agent_command=lambda job, attempt: command, settings=SETTINGS)


@pytest.mark.slow
def test_spend_stops_before_the_budget_and_thresholds_are_announced(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    provider = make_provider(spot_price_usd_per_hour=DOLLAR_PER_SECOND, on_demand_price_usd_per_hour=2 * DOLLAR_PER_SECOND)
    store, controller = _controller(home, provider, fake_agent("agent").command())
    max_usd = 4.0
    store.create_job(job_spec(_spec(tmp_path, max_usd=max_usd), name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")

    job = controller.drive("job")

    assert job.state is JobState.BUDGET_EXHAUSTED
    [attempt] = store.attempts("job")
    assert attempt.outcome is Outcome.STOPPED and attempt.end_reason == "stop-timeout"  # killed for not stopping in time
    spent = summarize(store.intervals("job"), time.time()).spent_usd
    # One polling interval at most beyond the cap; the terminate itself takes a moment more on a busy machine.
    assert spent <= max_usd + DOLLAR_PER_SECOND / 3600 * (SETTINGS.poll_interval_s + 0.5), spent
    alerts = [event.data["pct"] for _, event in store.events("job") if event.kind == "budget"]
    assert alerts[:2] == [50, 80]
    messages = [event.message for _, event in store.events("job") if event.kind == "stop"]
    assert any("checkpoint and stop requested" in message for message in messages)
    assert any("terminating" in message for message in messages)
    assert provider.poll([attempt.instance_id])[attempt.instance_id].state.value == "terminated"


def test_a_spot_price_that_triples_after_the_launch_is_counted_before_the_budget_runs_out(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    """Launched at $1/s, then $3/s: priced at its launch price, the job would have ended near $8 on its $3 budget."""
    tripled = 3 * DOLLAR_PER_SECOND
    provider = make_provider(spot_price_usd_per_hour=DOLLAR_PER_SECOND, on_demand_price_usd_per_hour=4 * DOLLAR_PER_SECOND)
    store, controller = _controller(home, provider, fake_agent("agent").command())
    max_usd = 3.0
    store.create_job(job_spec(_spec(tmp_path, max_usd=max_usd), name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")
    controller.cycle("job")
    [launched] = store.intervals("job")
    provider.spot_price_changes = (PricePoint(time.time() + 0.3, tripled),)  # the market moves once the instance runs
    readers_saw: list[float] = []  # what a reader without the provider (status, reports) prices the running row at, from the ledger alone

    def read_ledger(_job: Job) -> None:
        readers_saw.extend(
            usd_per_hour_at(row, time.time()) for row in StateStore(default_database_url(home)).intervals("job") if row.end is None
        )

    job = controller.drive("job", on_cycle=read_ledger)

    assert job.state is JobState.BUDGET_EXHAUSTED and launched.price_usd_per_hour == DOLLAR_PER_SECOND
    spent = summarize(store.intervals("job"), time.time()).spent_usd
    assert spent <= max_usd + tripled / 3600 * (SETTINGS.poll_interval_s + 0.5), (
        spent
    )  # one polling interval at the new price, and a moment
    assert tripled in readers_saw


def test_no_instance_is_launched_when_the_budget_cannot_pay_for_its_start(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    provider = make_provider(spot_price_usd_per_hour=DOLLAR_PER_SECOND, on_demand_price_usd_per_hour=2 * DOLLAR_PER_SECOND)
    store, controller = _controller(home, provider, fake_agent("agent").command())
    # 0.5 s restart + 0.2 s poll + 1 s grace = $1.70 before any progress could be bought
    store.create_job(job_spec(_spec(tmp_path, max_usd=1.5), name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")

    job = controller.cycle("job")

    assert job.state is JobState.BUDGET_EXHAUSTED and "$1.7000" in (job.message or "")
    assert store.attempts("job") == [] and store.intervals("job") == []


@pytest.mark.slow
def test_auto_market_moves_to_on_demand_when_the_slack_runs_out(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    """1 s of work due in 3 s: spot while the slack lasts, then a stop and an on-demand instance."""
    provider = make_provider()
    store, controller = _controller(home, provider, fake_agent("agent").command())
    deadline = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    spec = _spec(tmp_path, market="auto", deadline_at=deadline, expected_runtime_s=1.0)
    store.create_job(job_spec(spec, name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")

    controller.cycle("job")
    assert store.attempts("job")[0].market == "spot"
    deadline_at = time.monotonic() + 15
    while len(store.attempts("job")) < 2 or store.attempts("job")[1].instance_id is None:
        assert time.monotonic() < deadline_at, [event.message for _, event in store.events("job")]
        controller.cycle("job")
        time.sleep(SETTINGS.poll_interval_s)

    first, second = store.attempts("job")
    assert first.outcome is Outcome.STOPPED and second.market == "on-demand"
    assert any("switch from spot to on-demand" in event.message for _, event in store.events("job"))
    store.request_cancel("job")
    assert controller.cycle("job").state is JobState.CANCELLED


def test_auto_market_without_spot_waits_while_ahead_and_buys_on_demand_once_behind(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    """No spot capacity at all; half of 10 s of work done, due in 100 s: ahead of the uniform line at first, behind 60 s on."""
    provider = make_provider(spot_availability=SpotAvailability(gap_s=60.0, available=(False,), origin=time.time()))
    store = StateStore(default_database_url(home))
    skipped = 0.0  # time the test moves the controller's clock on by
    controller = Controller(
        store,
        provider,
        agent_command=lambda job, attempt: fake_agent("agent").command(),
        settings=SETTINGS,
        clock=lambda: time.time() + skipped,
    )
    deadline = (datetime.now(UTC) + timedelta(seconds=100)).isoformat()
    spec = _spec(tmp_path, market="auto", deadline_at=deadline, expected_runtime_s=10.0)
    store.create_job(job_spec(spec, name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")
    resumed = Progress(status=TrainingStatus.TRAINING, time=time.time(), step=50, epoch=0, total_steps=100, steps_per_s=10.0)
    store.set_progress(
        "job", Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=resumed.time, progress=resumed)
    )  # 5 s of 10 s done, as a resumed job's

    job = controller.cycle("job")
    assert store.attempts("job") == [] and "waiting for spot capacity" in (job.message or "")

    skipped = 60.0  # 60 s in: the line stands at 6 s of work, 1 s more than done
    controller.cycle("job")
    [attempt] = store.attempts("job")
    assert attempt.market == "on-demand" and attempt.instance_id is not None
    store.request_cancel("job")
    assert controller.cycle("job").state is JobState.CANCELLED
