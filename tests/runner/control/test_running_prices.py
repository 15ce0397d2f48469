"""Running spot intervals are priced from EC2's price history (moto behind the counting proxy), at a bounded number of calls."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aws_support import ec2_client, make_launch_template, provider_behind
from fault_proxy import FaultProxy
from specs import job_spec

from cloud.provider import TAG_JOB, TAG_STORE
from runner.control.controller import Controller, ControllerSettings
from runner.cost.ledger import summarize
from runner.state.database import default_database_url
from runner.state.store import Attempt, Interval, JobState, StateStore

NOW = 1_780_000_000.0
LAUNCH_PRICE = 0.40
HISTORY = {  # (zone) -> price changes: us-east-1a went from $0.30/h to $0.90/h ten minutes ago
    "us-east-1a": ((NOW - 3600, 0.30), (NOW - 600, 0.90)),
    "us-east-1b": ((NOW - 3600, 0.35),),
}
SETTINGS = ControllerSettings(poll_interval_s=10.0)


def _history_answer(_moto_body: bytes) -> bytes:
    """What DescribeSpotPriceHistory answers for g5.xlarge in both zones (moto's prices never change)."""
    items = "".join(
        f"<item><instanceType>g5.xlarge</instanceType><productDescription>Linux/UNIX</productDescription><spotPrice>{price:.6f}</spotPrice>"
        f"<timestamp>{datetime.fromtimestamp(time, UTC):%Y-%m-%dT%H:%M:%S.000Z}</timestamp><availabilityZone>{zone}</availabilityZone></item>"
        for zone, changes in HISTORY.items()
        for time, price in changes
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>fault-proxy</requestId><spotPriceHistorySet>{items}</spotPriceHistorySet></DescribeSpotPriceHistoryResponse>"
    ).encode()


def _running_job(store: StateStore, name: str, instance_id: str, zone: str, start: float) -> None:
    spec: dict[str, Any] = {"resources": {"provider": "aws", "market": "spot", "instance_types": ["g5.xlarge"]}, "budget": {}}
    store.create_job(job_spec(spec, name=name), spec_path="-", checkpoint_url=f"memory://jobs/{name}")
    store.start_attempt(
        Attempt(
            job=name,
            number=1,
            token=f"{name}-token",
            provider="aws",
            instance_type="g5.xlarge",
            zone=zone,
            market="spot",
            price_usd_per_hour=LAUNCH_PRICE,
            on_demand_price_usd_per_hour=1.006,
            instance_id=None,
            requested_at=start,
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
            zone=zone,
            market="spot",
            gpus=1,
            price_usd_per_hour=LAUNCH_PRICE,
            on_demand_price_usd_per_hour=1.006,
            requested_at=start,
            start=start,
            end=None,
            end_reason=None,
            outcome=None,
            cost_usd=None,
            on_demand_usd=None,
            prices=((start, LAUNCH_PRICE),),
            productive_at=None,
            work_lost_s=None,
            steps_lost=None,
            team=None,
            tags={},
            launched_by="tester",
        )
    )
    store.set_state(name, JobState.RUNNING)


def test_the_price_history_is_asked_once_per_zone_and_polling_interval_and_readers_price_the_rows_alone(
    moto_endpoint: str, fault_proxy: FaultProxy, tmp_path: Path
) -> None:
    """Six running jobs in two zones, launched from 20 to 5 minutes ago at $0.40/h."""
    store = StateStore(default_database_url(tmp_path))
    provider = provider_behind(fault_proxy, make_launch_template(moto_endpoint), store_id=store.store_id())
    launched = ec2_client(moto_endpoint).run_instances(
        ImageId="ami-12c6146b",
        InstanceType="g5.xlarge",
        MinCount=6,
        MaxCount=6,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": TAG_STORE, "Value": store.store_id()}, {"Key": TAG_JOB, "Value": "bulk"}]}
        ],
    )
    names = [f"job-{number:02d}" for number in range(6)]
    for number, (name, instance) in enumerate(zip(names, launched["Instances"], strict=True)):
        _running_job(store, name, instance["InstanceId"], "us-east-1a" if number % 2 else "us-east-1b", NOW - 1200 + 180 * number)
    fault_proxy.clear()
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", _history_answer, for_s=60)
    clock = NOW
    controller = Controller(store, provider, agent_command=lambda job, attempt: (), settings=SETTINGS, clock=lambda: clock)

    controller.cycle_many(names)
    assert fault_proxy.count_ec2("DescribeSpotPriceHistory") == 2  # one per (type, zone), for all six jobs
    clock = NOW + 5.0
    controller.cycle_many(names)
    assert fault_proxy.count_ec2("DescribeSpotPriceHistory") == 2  # within the polling interval: the same series
    clock = NOW + 10.0
    controller.cycle_many(names)
    assert fault_proxy.count_ec2("DescribeSpotPriceHistory") == 4

    reader = StateStore(default_database_url(tmp_path))  # no provider: status and reports price from the rows alone
    for number, name in enumerate(names):
        start = NOW - 1200 + 180 * number
        if number % 2:  # us-east-1a: $0.30/h until ten minutes ago, $0.90/h since
            expected = (max(0.0, NOW - 600 - start) * 0.30 + (NOW + 10 - max(start, NOW - 600)) * 0.90) / 3600
        else:
            expected = (NOW + 10 - start) * 0.35 / 3600
        assert abs(summarize(reader.intervals(name), NOW + 10).spent_usd - expected) < 1e-9, name
