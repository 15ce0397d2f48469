"""The controller and `spotrun gc` over the aws provider, against moto through the counting proxy."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path

import boto3
import pytest
from aws_support import ec2_client, interrupt_in_moto, make_launch_template, provider_behind
from botocore.config import Config
from fault_proxy import FaultProxy
from specs import job_spec
from typer.testing import CliRunner

from checkpoints.progress import Progress, TrainingStatus
from cloud.aws import AwsProvider, AwsSettings
from cloud.provider import TAG_JOB, TAG_STORE
from runner.cli.app import app
from runner.control.controller import Controller, ControllerSettings
from runner.cost.figures import job_figures
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import AgentStatus, Heartbeat, JobChannel
from runner.state.database import default_database_url
from runner.state.store import Attempt, Interval, JobState, Outcome, StateStore


def _run(moto_endpoint: str, count: int, tags: dict[str, str]) -> list[str]:
    launched = ec2_client(moto_endpoint).run_instances(
        ImageId="ami-12c6146b",
        InstanceType="g5.xlarge",
        MinCount=count,
        MaxCount=count,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}] if tags else [],
    )
    return [instance["InstanceId"] for instance in launched["Instances"]]


def _live_job(store: StateStore, name: str, instance_id: str) -> None:
    spec = {"resources": {"provider": "aws", "market": "spot", "instance_types": ["g5.xlarge"]}, "budget": {}}
    store.create_job(job_spec(spec, name=name), spec_path="-", checkpoint_url=f"memory://jobs/{name}")
    store.start_attempt(
        Attempt(
            job=name,
            number=1,
            token=f"{name}-token",
            provider="aws",
            instance_type="g5.xlarge",
            zone="us-east-1a",
            market="spot",
            price_usd_per_hour=0.4,
            on_demand_price_usd_per_hour=1.0,
            instance_id=None,
            requested_at=0.0,
            launched_at=None,
            ended_at=None,
            end_reason=None,
            outcome=None,
            exit_code=None,
        )
    )
    store.set_launched(
        Interval(
            job=name,
            attempt=1,
            node=0,
            instance_id=instance_id,
            provider="aws",
            instance_type="g5.xlarge",
            zone="us-east-1a",
            market="spot",
            gpus=1,
            price_usd_per_hour=0.4,
            on_demand_price_usd_per_hour=1.0,
            requested_at=0.0,
            start=0.0,
            end=None,
            end_reason=None,
            outcome=None,
            cost_usd=None,
            on_demand_usd=None,
            prices=(),
            productive_at=None,
            work_lost_s=None,
            steps_lost=None,
            team=None,
            tags={},
            launched_by="tester",
        )
    )
    store.set_state(name, JobState.RUNNING)


@pytest.mark.slow
@pytest.mark.parametrize("jobs", [20, 200])
def test_one_poll_cycle_costs_the_same_ec2_calls_for_20_or_200_jobs(
    jobs: int, moto_endpoint: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    store = StateStore(default_database_url(tmp_path))
    provider = provider_behind(fault_proxy, make_launch_template(moto_endpoint), store_id=store.store_id())
    ids = _run(moto_endpoint, jobs, {TAG_STORE: store.store_id(), TAG_JOB: "bulk"})
    names = [f"job-{n}" for n in range(jobs)]
    for name, instance_id in zip(names, ids, strict=True):
        _live_job(store, name, instance_id)
    fault_proxy.clear()

    cycled = Controller(store, provider, agent_command=lambda job, attempt: ()).cycle_many(names)

    assert all(job.state is JobState.RUNNING for job in cycled)
    # one DescribeInstances, and one DescribeSpotPriceHistory for the type and zone all the running rows share, whatever the number
    assert len([seen for seen in fault_proxy.seen if "Action=" in seen.body]) == 2
    assert fault_proxy.count_ec2("DescribeInstances") == 1


def _gc(*args: str) -> list[dict]:
    result = CliRunner().invoke(app, ["gc", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[-1])  # the in-process moto server prints to the same stdout


@pytest.mark.slow
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


# ------------------------------------------------------------------ false recoveries (a healthy job is never relaunched)

POLL_S = 10.0  # the controller's polling interval on EC2: a loss counts after 3 polls over 30 s with the agent silent


def _without_instances(moto_answer: bytes) -> bytes:
    """DescribeInstances as moto answered it, with every instance left out (an answer that misses them)."""
    return re.sub(rb"<reservationSet>.*</reservationSet>", b"<reservationSet/>", moto_answer, flags=re.S)


class _Clock:
    """The controller's clock, moved on by the test: a minute of polls without a minute of waiting."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _watched_job(moto_endpoint: str, proxy: FaultProxy, tmp_path: Path, name: str) -> tuple[StateStore, Controller, str, _Clock]:
    """A job RUNNING on a real moto instance, a controller whose boto3 goes through ``proxy`` (0.25 s read timeout, 2 tries)."""
    store = StateStore(default_database_url(tmp_path))
    config = Config(region_name="us-east-1", retries={"mode": "standard", "total_max_attempts": 1}, read_timeout=0.25, connect_timeout=2)
    provider = AwsProvider(
        AwsSettings(region="us-east-1", store_id=store.store_id(), launch_template_id=make_launch_template(moto_endpoint), max_attempts=2),
        clients=lambda service: boto3.client(service, endpoint_url=proxy.url, config=config),
        sleep=lambda _: None,
    )
    [instance_id] = _run(moto_endpoint, 1, {TAG_STORE: store.store_id(), TAG_JOB: name})
    _live_job(store, name, instance_id)
    clock = _Clock()
    controller = Controller(
        store,
        provider,
        agent_command=lambda job, attempt: (),
        clock=clock,
        settings=ControllerSettings(poll_interval_s=POLL_S, lease_s=1000.0),
    )
    return store, controller, instance_id, clock


def _beat(name: str, clock: _Clock) -> None:
    """The agent's heartbeat, as a healthy one writes it every few seconds."""
    progress = Progress(status=TrainingStatus.TRAINING, time=clock.now, step=int(clock.now), epoch=0)
    JobChannel(Mailbox.at(f"memory://jobs/{name}"), name, None).write_heartbeat(
        Heartbeat(status=AgentStatus.RUNNING, attempt=1, node=0, time=clock.now, progress=progress)
    )


@pytest.mark.slow
def test_transient_ec2_faults_and_a_late_heartbeat_never_relaunch_a_healthy_job(
    moto_endpoint: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    name = f"healthy-{uuid.uuid4().hex[:6]}"
    store, controller, instance_id, clock = _watched_job(moto_endpoint, fault_proxy, tmp_path, name)

    def cycle(advance_s: float = POLL_S, beat: bool = True) -> None:
        clock.now += advance_s
        if beat:
            _beat(name, clock)
        controller.cycle(name)  # must not raise, whatever EC2 does
        fault_proxy.clear()

    fault_proxy.ec2_error("DescribeInstances", "InternalError", status=500, times=2)  # 5xx on both tries
    cycle()
    fault_proxy.ec2_drop_answer("DescribeInstances", times=2)  # the connection dropped on both
    cycle()
    fault_proxy.ec2_rewrite("DescribeInstances", lambda body: (time.sleep(0.5), body)[1], for_s=0.7)  # slower than the read timeout
    cycle()
    for _ in range(6):  # a minute of answers that leave the instance out, while its agent reports
        fault_proxy.ec2_rewrite("DescribeInstances", _without_instances, for_s=30)
        cycle()
    cycle(advance_s=300.0, beat=False)  # a heartbeat five minutes late, the instance running
    cycle()

    job = store.job(name)
    [attempt] = store.attempts(name)
    preemptions = job_figures(store.attempts(name), store.intervals(name), time.time()).preemptions
    assert job.state is JobState.RUNNING and attempt.is_open and preemptions == 0, [e.message for _, e in store.events(name)]
    events = [event.message for _, event in store.events(name) if event.kind == "provider"]
    assert any("poll failed" in message for message in events) and any("answers again" in message for message in events)
    assert any("running after all" in message for message in events)
    [described] = [
        i for r in ec2_client(moto_endpoint).describe_instances(InstanceIds=[instance_id])["Reservations"] for i in r["Instances"]
    ]
    assert described["State"]["Name"] == "running"


def test_an_instance_really_gone_is_still_recovered_and_a_spot_interruption_at_once(
    moto_endpoint: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    name = f"gone-{uuid.uuid4().hex[:6]}"
    store, controller, _, clock = _watched_job(moto_endpoint, fault_proxy, tmp_path, name)
    _beat(name, clock)
    fault_proxy.ec2_rewrite("DescribeInstances", _without_instances, for_s=60)  # gone from every answer; the agent silent
    polls = 0
    while store.attempts(name)[0].is_open:
        assert polls < 6, [event.message for _, event in store.events(name)]
        clock.now += POLL_S
        controller.cycle(name)
        polls += 1

    assert polls == 4  # missing from four answers in a row, 30 s from the first: not from the first that missed it
    [attempt] = store.attempts(name)
    assert attempt.outcome is Outcome.PREEMPTED and attempt.end_reason == "host-lost"
    assert (
        store.job(name).state is JobState.RECOVERING
        and job_figures(store.attempts(name), store.intervals(name), time.time()).preemptions == 1
    )
    fault_proxy.clear()

    spot = f"spot-{uuid.uuid4().hex[:6]}"
    store, controller, instance_id, clock = _watched_job(moto_endpoint, fault_proxy, tmp_path / "spot", spot)
    _beat(spot, clock)
    interrupt_in_moto(instance_id)
    clock.now += POLL_S
    controller.cycle(spot)
    [attempt] = store.attempts(spot)
    assert attempt.outcome is Outcome.PREEMPTED and attempt.end_reason == "spot-interruption"
