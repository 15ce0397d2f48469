"""The aws provider against a real EC2 endpoint (moto over HTTP), with faults and prices from the proxy in front of it."""

from __future__ import annotations

import json
import uuid

import pytest
from aws_support import ec2_client, interrupt_in_moto, make_launch_template, provider_behind, spot_price_answer
from fault_proxy import FaultProxy

from cloud.errors import CapacityError, ProviderError
from cloud.provider import (
    TAG_ATTEMPT,
    TAG_JOB,
    TAG_NODE,
    TAG_RENDEZVOUS,
    TAG_STORE,
    TAG_TOKEN,
    EndReason,
    GangMember,
    InstanceState,
    LaunchRequest,
    Market,
    OfferRequest,
)

PRICES = {("g5.xlarge", "us-east-1a"): 0.45, ("g5.xlarge", "us-east-1b"): 0.39, ("g6.xlarge", "us-east-1a"): 0.31}


@pytest.fixture
def template(moto_endpoint: str) -> str:
    return make_launch_template(moto_endpoint)


def _request(job: str = "train-1", attempt: int = 1) -> LaunchRequest:
    return LaunchRequest(
        job=job, attempt=attempt, token=f"{job}-{uuid.uuid4().hex[:8]}", agent_command=(), tags={TAG_JOB: job, "team": "vision"}
    )


def _instances(moto_endpoint: str, **filters: str) -> list[dict]:
    described = ec2_client(moto_endpoint).describe_instances(
        Filters=[{"Name": f"tag:{key}", "Values": [value]} for key, value in filters.items()]
    )
    return [instance for reservation in described["Reservations"] for instance in reservation["Instances"]]


def test_offers_are_every_type_and_zone_cheapest_first(fault_proxy: FaultProxy, template: str) -> None:
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=60)
    provider = provider_behind(fault_proxy, template)
    offers = provider.offers(OfferRequest(("g5.xlarge", "g6.xlarge"), Market.SPOT))
    assert [(o.instance_type, o.zone, o.price_usd_per_hour) for o in offers] == [
        ("g6.xlarge", "us-east-1a", 0.31),
        ("g5.xlarge", "us-east-1b", 0.39),
        ("g5.xlarge", "us-east-1a", 0.45),
    ]
    # Pricing API is not served by moto: the dated table answers, and offers carry it.
    assert offers[1].on_demand_price_usd_per_hour == pytest.approx(1.006)


def test_unknown_instance_type_fails_with_the_aws_message(fault_proxy: FaultProxy, template: str) -> None:
    fault_proxy.ec2_error("DescribeInstanceTypes", "InvalidInstanceType", when="g9.tiny", times=1)
    with pytest.raises(ProviderError, match="InvalidInstanceType"):
        provider_behind(fault_proxy, template).offers(OfferRequest(("g9.tiny",), Market.SPOT))


def test_launch_is_spot_from_the_template_with_every_tag(moto_endpoint: str, fault_proxy: FaultProxy, template: str) -> None:
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=60)
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.SPOT))[0]
    request = _request()
    instance = provider.launch(offer, request)

    [described] = _instances(moto_endpoint, **{TAG_TOKEN: request.token})
    tags = {tag["Key"]: tag["Value"] for tag in described["Tags"]}
    assert described["InstanceId"] == instance.instance_id
    assert described["InstanceLifecycle"] == "spot" and described["InstanceType"] == "g5.xlarge"
    assert described["Placement"]["AvailabilityZone"] == "us-east-1b"
    assert tags[TAG_JOB] == "train-1" and tags["team"] == "vision" and tags[TAG_STORE] == provider.settings.store_id
    [run_call] = [seen.body for seen in fault_proxy.seen if "Action=RunInstances" in seen.body]
    assert f"LaunchTemplate.LaunchTemplateId={template}" in run_call and "ClientToken=" in run_call


def test_a_gang_member_learns_its_rank_and_rendezvous_from_its_tags(moto_endpoint: str, fault_proxy: FaultProxy, template: str) -> None:
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.ON_DEMAND))[0]
    member = GangMember.joining(1, 2, port=provider.rendezvous_port(), rank0_address="10.0.0.5")
    request = LaunchRequest(job="gang", attempt=2, token=f"gang-{uuid.uuid4().hex[:8]}-n1", agent_command=(), gang=member)

    provider.launch(offer, request)

    [described] = _instances(moto_endpoint, **{TAG_TOKEN: request.token})
    tags = {tag["Key"]: tag["Value"] for tag in described["Tags"]}
    assert (tags[TAG_NODE], tags[TAG_RENDEZVOUS]) == ("1", "10.0.0.5:29500")
    assert (tags[TAG_JOB], tags[TAG_ATTEMPT]) == ("gang", "2")


def test_a_lost_launch_answer_makes_no_second_instance(moto_endpoint: str, fault_proxy: FaultProxy, template: str) -> None:
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.ON_DEMAND))[0]
    request = _request()
    fault_proxy.ec2_drop_answer("RunInstances", times=1)  # moto launches, the answer never arrives
    first = provider.launch(offer, request)
    again = provider.launch(offer, request)  # a controller restarted mid-launch asks again
    assert first.instance_id == again.instance_id
    assert len(_instances(moto_endpoint, **{TAG_TOKEN: request.token})) == 1
    assert fault_proxy.count_ec2("RunInstances") == 1


def test_throttling_is_retried_and_other_errors_are_not(fault_proxy: FaultProxy, template: str) -> None:
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.ON_DEMAND))[0]
    fault_proxy.ec2_error("RunInstances", "RequestLimitExceeded", status=503, times=3)
    assert provider.launch(offer, _request()).instance_id.startswith("i-")
    assert fault_proxy.count_ec2("RunInstances") == 4

    fault_proxy.ec2_error("RunInstances", "InvalidParameterValue", times=1)
    with pytest.raises(ProviderError, match="InvalidParameterValue"):
        provider.launch(offer, _request("train-2"))


def test_a_capacity_error_sets_the_zone_aside(fault_proxy: FaultProxy, template: str) -> None:
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=60)
    provider = provider_behind(fault_proxy, template)
    request = OfferRequest(("g5.xlarge",), Market.SPOT)
    cheapest = provider.offers(request)[0]
    fault_proxy.ec2_error("RunInstances", "InsufficientInstanceCapacity", status=500, times=1)
    with pytest.raises(CapacityError, match="us-east-1b"):
        provider.launch(cheapest, _request())
    assert [offer.zone for offer in provider.offers(request)] == ["us-east-1a"]


def test_poll_reads_spot_interruptions_and_unknown_ids(moto_endpoint: str, fault_proxy: FaultProxy, template: str) -> None:
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.SPOT))[0]
    kept, interrupted, stopped = (provider.launch(offer, _request(f"job-{n}")) for n in range(3))
    interrupt_in_moto(interrupted.instance_id)
    provider.terminate([stopped.instance_id])
    statuses = provider.poll([kept.instance_id, interrupted.instance_id, stopped.instance_id, "i-0000000000000dead"])
    assert statuses[kept.instance_id].state is InstanceState.RUNNING
    assert statuses[interrupted.instance_id].end_reason is EndReason.SPOT_INTERRUPTION
    assert statuses[stopped.instance_id].end_reason is EndReason.TERMINATED_BY_USER
    assert statuses["i-0000000000000dead"].end_reason is EndReason.HOST_LOST
    provider.terminate([kept.instance_id, stopped.instance_id])  # terminating twice is fine


def test_prices_command_shows_discount_per_zone(fault_proxy: FaultProxy, spotrun_home, monkeypatch) -> None:
    from typer.testing import CliRunner

    from runner.cli.app import app

    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=60)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    result = CliRunner().invoke(app, ["prices", "--instance-types", "g5.xlarge", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout.splitlines()[-1])  # the in-process moto server prints to the same stdout
    assert {(row["zone"], row["discount_pct"]) for row in rows} == {("us-east-1a", 55.3), ("us-east-1b", 61.2)}


def test_a_gang_member_is_launched_into_its_cluster_placement_group(moto_endpoint: str, fault_proxy: FaultProxy, template: str) -> None:
    group = f"gang-{uuid.uuid4().hex[:8]}"  # moto cannot create placement groups (HTTP 500): the request is what is checked
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=60)
    provider = provider_behind(fault_proxy, template)
    offer = provider.offers(OfferRequest(("g5.xlarge",), Market.SPOT))[0]
    job = f"placed-{uuid.uuid4().hex[:8]}"  # the moto server is shared by the whole session: a name no other test uses
    request = LaunchRequest(job=job, attempt=1, token=f"{job}-1", agent_command=(), tags={TAG_JOB: job}, placement_group=group)
    instance = provider.launch(offer, request)

    [run_call] = [seen.body for seen in fault_proxy.seen if "Action=RunInstances" in seen.body]
    assert f"Placement.GroupName={group}" in run_call and f"Placement.AvailabilityZone={offer.zone}" in run_call
    assert instance.private_address  # what the rest of the gang connects to
