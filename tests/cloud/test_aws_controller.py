"""The controller and `spotrun gc` over the aws provider, against moto through the counting proxy."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from aws_support import ec2_client, make_launch_template, provider_behind
from fault_proxy import FaultProxy
from typer.testing import CliRunner

from cloud.provider import TAG_JOB, TAG_STORE
from runner.cli import app
from runner.controller import Controller
from runner.database import default_database_url
from runner.store import Attempt, Interval, JobState, StateStore


def _run(moto_endpoint: str, count: int, tags: dict[str, str]) -> list[str]:
    launched = ec2_client(moto_endpoint).run_instances(
        ImageId="ami-12c6146b", InstanceType="g5.xlarge", MinCount=count, MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else [],
    )
    return [instance["InstanceId"] for instance in launched["Instances"]]


def _live_job(store: StateStore, name: str, instance_id: str) -> None:
    spec = {"resources": {"provider": "aws", "market": "spot", "instance_types": ["g5.xlarge"]}, "budget": {}}
    store.create_job(name, spec_json=json.dumps(spec), spec_path="-", checkpoint_url=f"memory://jobs/{name}")
    store.start_attempt(Attempt(
        job=name, number=1, token=f"{name}-token", provider="aws", instance_type="g5.xlarge", zone="us-east-1a", market="spot",
        price_usd_per_hour=0.4, on_demand_price_usd_per_hour=1.0, instance_id=None, requested_at=0.0, launched_at=None,
        ended_at=None, end_reason=None, outcome=None, exit_code=None,
    ))
    store.set_launched(Interval(
        job=name, attempt=1, node=0, instance_id=instance_id, provider="aws", instance_type="g5.xlarge", zone="us-east-1a",
        market="spot", gpus=1, price_usd_per_hour=0.4, on_demand_price_usd_per_hour=1.0, requested_at=0.0, start=0.0, end=None,
        end_reason=None, outcome=None, cost_usd=None, on_demand_usd=None, prices=(), productive_at=None, work_lost_s=None,
        steps_lost=None, team=None, tags={}, launched_by="tester",
    ))
    store.set_state(name, JobState.RUNNING)


@pytest.mark.parametrize("jobs", [20, 200])
def test_one_poll_cycle_costs_the_same_ec2_calls_for_20_or_200_jobs(jobs: int, moto_endpoint: str, fault_proxy: FaultProxy, tmp_path: Path) -> None:
    store = StateStore(default_database_url(tmp_path))
    provider = provider_behind(fault_proxy, make_launch_template(moto_endpoint), store_id=store.store_id())
    ids = _run(moto_endpoint, jobs, {TAG_STORE: store.store_id(), TAG_JOB: "bulk"})
    names = [f"job-{n}" for n in range(jobs)]
    for name, instance_id in zip(names, ids, strict=True):
        _live_job(store, name, instance_id)
    fault_proxy.clear()

    cycled = Controller(store, provider, agent_command=lambda job, attempt: ()).cycle_many(names)

    assert all(job.state is JobState.RUNNING for job in cycled)
    assert len([seen for seen in fault_proxy.seen if "Action=" in seen.body]) == 1  # one DescribeInstances, whatever the number
    assert fault_proxy.count_ec2("DescribeInstances") == 1


def _gc(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["gc", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1])  # the in-process moto server prints to the same stdout


def test_gc_terminates_orphans_only(moto_endpoint: str, spotrun_home: Path) -> None:
    store = StateStore(default_database_url(spotrun_home))
    mine = store.store_id()
    [orphan] = _run(moto_endpoint, 1, {TAG_STORE: mine, TAG_JOB: f"gone-{uuid.uuid4().hex[:6]}"})
    [live] = _run(moto_endpoint, 1, {TAG_STORE: mine, TAG_JOB: "alive"})
    [untagged] = _run(moto_endpoint, 1, {})
    [foreign] = _run(moto_endpoint, 1, {TAG_STORE: "another-store", TAG_JOB: f"theirs-{uuid.uuid4().hex[:6]}"})
    _live_job(store, "alive", live)

    listed = {row["instance_id"] for row in _gc()}
    assert orphan in listed and not listed & {live, untagged, foreign}
    assert {row["instance_id"] for row in _gc("--yes")} >= {orphan}
    assert foreign in {row["instance_id"] for row in _gc("--all", "--yes")}

    described = ec2_client(moto_endpoint).describe_instances(InstanceIds=[orphan, live, untagged, foreign])
    states = {i["InstanceId"]: i["State"]["Name"] for r in described["Reservations"] for i in r["Instances"]}
    assert states == {orphan: "terminated", live: "running", untagged: "running", foreign: "terminated"}
