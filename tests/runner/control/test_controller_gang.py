"""Gangs in the controller, on real local instances running a fake agent: launch, partial capacity, and one end for all."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from specs import job_spec

from cloud.local import LocalProvider
from runner.control.controller import Controller, ControllerSettings
from runner.state.database import default_database_url
from runner.state.store import JobState, Outcome, StateStore

SETTINGS = ControllerSettings(poll_interval_s=0.2, stop_grace_s=1.0)


def _gang_job(store: StateStore, tmp_path: Path, **resources: Any) -> None:
    spec = {
        "name": "gang",
        "resources": {"provider": "local", "market": "spot", "max_restarts_on_errors": 0, "nodes": 2, "devices": 1, **resources},
        "local": {"preempt_every_s": 0.0},
        "budget": {},
        "workdir": str(tmp_path),
    }
    store.create_job(job_spec(spec, name="gang"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")


def _cycle_until(controller: Controller, predicate: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        controller.cycle("gang")
        time.sleep(SETTINGS.poll_interval_s)


def test_a_gang_launches_every_node_with_its_rank_and_rank_0_as_rendezvous(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    store = StateStore(default_database_url(home))
    agent = fake_agent("agent")
    controller = Controller(store, make_provider(), agent_command=lambda job, attempt: agent.command(), settings=SETTINGS)
    _gang_job(store, tmp_path, instance_types=["g5.xlarge"])

    controller.cycle("gang")

    rows = sorted(store.intervals("gang"), key=lambda row: row.node)
    assert [row.node for row in rows] == [0, 1] and len({row.instance_id for row in rows}) == 2
    host, port = rows[0].address.rsplit(":", 1)
    assert host == "127.0.0.1" and int(port) > 0
    launched = [json.loads(path.read_text()) for path in sorted((home / "local" / "instances").glob("*/instance.json"))]
    envs = sorted((spec["env"] for spec in launched), key=lambda env: env["SPOTRUN_NODE"])
    assert [(env["SPOTRUN_NODE"], env["SPOTRUN_RENDEZVOUS"]) for env in envs] == [("0", rows[0].address), ("1", rows[0].address)]
    assert sorted(spec["tags"]["spotrun:node"] for spec in launched) == ["0", "1"]
    assert {spec["tags"]["spotrun:rendezvous"] for spec in launched} == {rows[0].address}

    store.request_cancel("gang")
    assert controller.cycle("gang").state is JobState.CANCELLED
    assert all(row.end is not None and row.outcome == "cancelled" for row in store.intervals("gang"))


@pytest.mark.slow  # waits out the gang timeout on real instances
def test_a_gang_that_never_fills_is_released_billed_and_moves_to_the_next_offer(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    store = StateStore(default_database_url(home))
    agent = fake_agent("agent")
    provider = make_provider(capacity={"g5.xlarge": 1}, spot_price_usd_per_hour=36.0, on_demand_price_usd_per_hour=72.0)
    controller = Controller(store, provider, agent_command=lambda job, attempt: agent.command(), settings=SETTINGS)
    _gang_job(store, tmp_path, instance_types=["g5.xlarge", "g6.xlarge"], gang_timeout_s=5.0)

    controller.cycle("gang")
    assert "1 of 2 nodes up" in (store.job("gang").message or "")
    _cycle_until(controller, lambda: len(store.attempts("gang")) == 2 and store.attempts("gang")[1].instance_id, 20, "the second offer")

    first, second = store.attempts("gang")
    assert first.outcome is Outcome.RELEASED and first.instance_type == "g5.xlarge"
    assert second.instance_type == "g6.xlarge"
    [held] = [row for row in store.intervals("gang") if row.attempt == 1]
    assert held.outcome == "released" and held.end is not None
    assert held.end - held.start >= 5.0 and held.cost_usd is not None and held.cost_usd >= 5.0 * 36.0 / 3600  # the idle wait is billed
    events = store.events("gang")
    assert any("releasing" in event.message for _, event in events)
    tries = [event.time for _, event in events if event.kind == "capacity" and event.attempt == 1]
    assert 2 <= len(tries) <= 3 and all(later - earlier >= 1.9 for earlier, later in zip(tries, tries[1:], strict=False))  # backing off
    _cycle_until(
        controller, lambda: len([row for row in store.intervals("gang") if row.attempt == 2]) == 2, 10, "both nodes of the second gang"
    )
    store.request_cancel("gang")
    assert controller.cycle("gang").state is JobState.CANCELLED
