"""What the controller writes in the ledger as a job's on-demand equivalent, on real local instances the cloud keeps taking back."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from cloud.local import LocalProvider
from runner.control.controller import Controller, ControllerSettings
from runner.cost.ledger import summarize
from runner.state.database import default_database_url
from runner.state.store import JobState, StateStore

ON_DEMAND_USD_PER_HOUR = 3600.0  # a dollar a second
SETTINGS = ControllerSettings(poll_interval_s=0.1, stop_grace_s=1.0)


def test_a_preempted_and_relaunched_job_is_compared_with_one_on_demand_minimum_not_one_per_interval(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    """A spot instance taken back as soon as it is up, then its replacement cancelled: two intervals of well under a minute.

    The fake agent never reports a training step, so all the job did is boot: one on-demand
    instance would have booted once and been billed its 60 s minimum, $60, where one minimum per
    interval made it $120.
    """
    provider = make_provider(notice_s=0.0, spot_price_usd_per_hour=1.0, on_demand_price_usd_per_hour=ON_DEMAND_USD_PER_HOUR)
    store = StateStore(default_database_url(home))
    command = fake_agent("agent").command()
    controller = Controller(store, provider, agent_command=lambda job, attempt: command, settings=SETTINGS)
    spec = {
        "name": "job",
        "resources": {"provider": "local", "instance_types": [], "market": "spot", "max_restarts_on_errors": 0},
        "local": {"preempt_every_s": 0.0},
        "budget": {},
        "workdir": str(tmp_path),
    }
    store.create_job(job_spec(spec, name="job"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")

    deadline = time.monotonic() + 20
    taken_back: set[str] = set()
    while len(store.attempts("job")) < 2 or store.attempts("job")[-1].instance_id is None:
        assert time.monotonic() < deadline, [event.message for _, event in store.events("job")]
        launched = store.attempts("job")[-1].instance_id if store.attempts("job") else None
        if launched is not None and launched not in taken_back and not taken_back:
            provider.interrupt(launched)  # the cloud takes it back as soon as it is up
            taken_back.add(launched)
        controller.cycle("job")
        time.sleep(SETTINGS.poll_interval_s)
    # Launched in this very cycle, the replacement's row already continues the one instance's bill: no second minimum.
    assert summarize(store.intervals("job"), time.time()).on_demand_usd == pytest.approx(60.0)
    store.request_cancel("job")
    assert controller.cycle("job").state is JobState.CANCELLED

    rows = store.intervals("job")
    assert [row.outcome for row in rows] == ["preempted", "cancelled"]
    assert all(row.end is not None and row.end - row.start < 60 for row in rows)
    summary = summarize(rows, time.time())
    assert summary.on_demand_usd == pytest.approx(60.0)
    assert [row.on_demand_usd for row in rows] == pytest.approx([60.0, 0.0])  # the first boot carries the one minimum
    assert summary.savings_usd > 59.0  # the preempted one was free; the cancelled one cost its seconds at $1/h
