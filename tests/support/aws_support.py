"""Helpers for tests of the aws provider against moto: a launch template, a provider behind the fault proxy, spot prices, interruptions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
from botocore.config import Config
from fault_proxy import FaultProxy
from moto.ec2.models import ec2_backends
from moto.ec2.models.instances import StateReason

from cloud.aws import SPOT_TERMINATION, AwsProvider, AwsSettings

REGION = "us-east-1"
ACCOUNT = "123456789012"  # moto's default account


def ec2_client(endpoint: str) -> Any:
    return boto3.client("ec2", region_name=REGION, endpoint_url=endpoint, config=Config(retries={"total_max_attempts": 1}))


def make_launch_template(endpoint: str) -> str:
    """A launch template like the Terraform module's (IMDSv2 required, tags in metadata)."""
    created = ec2_client(endpoint).create_launch_template(
        LaunchTemplateName=f"spotrun-{uuid.uuid4().hex[:8]}",
        LaunchTemplateData={
            "ImageId": "ami-12c6146b",
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            "InstanceInitiatedShutdownBehavior": "terminate",
        },
    )
    return created["LaunchTemplate"]["LaunchTemplateId"]


def provider_behind(proxy: FaultProxy, template_id: str, store_id: str | None = None, **settings: Any) -> AwsProvider:
    """An AwsProvider whose boto3 calls go through the fault proxy, with retries that do not wait."""
    aws = AwsSettings(region=REGION, launch_template_id=template_id, store_id=store_id or uuid.uuid4().hex[:16], **settings)
    config = Config(region_name=REGION, retries={"mode": "standard", "total_max_attempts": 1})
    return AwsProvider(aws, clients=lambda service: boto3.client(service, endpoint_url=proxy.url, config=config), sleep=lambda _: None)


def spot_price_answer(prices: dict[tuple[str, str], float]) -> Any:
    """A rewrite for DescribeSpotPriceHistory that answers ``prices`` (moto's are always 0.00001)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    items = "".join(
        f"<item><instanceType>{instance_type}</instanceType><productDescription>Linux/UNIX</productDescription>"
        f"<spotPrice>{price:.6f}</spotPrice><timestamp>{stamp}</timestamp><availabilityZone>{zone}</availabilityZone></item>"
        for (instance_type, zone), price in prices.items()
    )
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">'
        f"<requestId>fault-proxy</requestId><spotPriceHistorySet>{items}</spotPriceHistorySet></DescribeSpotPriceHistoryResponse>"
    ).encode()
    return lambda _moto_body: body


def interrupt_in_moto(instance_id: str) -> None:
    """What EC2 does at the end of a spot notice: terminate the instance with the spot state reason."""
    backend = ec2_backends[ACCOUNT][REGION]
    backend.terminate_instances([instance_id])
    instance = backend.get_instance(instance_id)
    instance.state_reason = StateReason(f"{SPOT_TERMINATION}: Spot instance termination", SPOT_TERMINATION)
