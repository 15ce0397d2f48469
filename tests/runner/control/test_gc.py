"""`spotrun gc --yes` against moto, with the tags a real 3-node gang gets from the controller: no node of a live attempt is an orphan."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from aws_support import ec2_client, make_launch_template, provider_behind
from fault_proxy import FaultProxy
from specs import job_spec
from typer.testing import CliRunner

from cloud.errors import ProviderError
from cloud.launch_tokens import attempt_token_of, node_token
from cloud.provider import TAG_ATTEMPT, TAG_JOB, TAG_NODE, TAG_STORE, TAG_TOKEN
from runner.cli.app import app
from runner.control.controller import Controller
from runner.state.database import default_database_url
from runner.state.store import StateStore

NODES = 3


def _tags(instance_ids: list[str], endpoint: str) -> dict[str, dict[str, str]]:
    described = ec2_client(endpoint).describe_instances(InstanceIds=instance_ids)
    return {i["InstanceId"]: {t["Key"]: t["Value"] for t in i.get("Tags", [])} for r in described["Reservations"] for i in r["Instances"]}


def _states(instance_ids: list[str], endpoint: str) -> dict[str, str]:
    described = ec2_client(endpoint).describe_instances(InstanceIds=instance_ids)
    return {i["InstanceId"]: i["State"]["Name"] for r in described["Reservations"] for i in r["Instances"]}


def _run_tagged(endpoint: str, tags: dict[str, str]) -> str:
    launched = ec2_client(endpoint).run_instances(
        ImageId="ami-12c6146b",
        InstanceType="g5.xlarge",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
    )
    return str(launched["Instances"][0]["InstanceId"])


def _by_token(endpoint: str, store_id: str, job: str) -> dict[str, str]:
    """This store's live instances of ``job``, by launch token."""
    filters = [
        {"Name": f"tag:{TAG_STORE}", "Values": [store_id]},
        {"Name": f"tag:{TAG_JOB}", "Values": [job]},
        {"Name": "instance-state-name", "Values": ["pending", "running"]},
    ]
    described = ec2_client(endpoint).describe_instances(Filters=filters)
    return {
        {t["Key"]: t["Value"] for t in i["Tags"]}[TAG_TOKEN]: i["InstanceId"] for r in described["Reservations"] for i in r["Instances"]
    }


def test_gc_yes_keeps_every_node_of_a_retargeted_gang_mid_launch_and_terminates_the_orphans(
    moto_endpoint: str,
    fault_proxy: FaultProxy,
    spotrun_home: Path,
    tmp_path: Path,
) -> None:
    store = StateStore(default_database_url(spotrun_home))
    name = f"gang-{uuid.uuid4().hex[:6]}"
    spec = {
        "name": name,
        "resources": {"provider": "aws", "market": "spot", "instance_types": ["g5.xlarge"], "nodes": NODES, "max_restarts_on_errors": 0},
        "budget": {},
        "workdir": str(tmp_path),
    }
    store.create_job(job_spec(spec, name=name), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")
    provider = provider_behind(fault_proxy, make_launch_template(moto_endpoint), store_id=store.store_id(), max_attempts=1)
    controller = Controller(store, provider, agent_command=lambda job, attempt: ("true",))
    # Rank 0's first offer has no capacity (the attempt moves to the next offer, under a new token),
    # and the last node's launch is done by EC2 but its answer never comes back: the controller
    # dies there, with that node on EC2 and nowhere in the ledger.
    fault_proxy.ec2_error("RunInstances", "InsufficientInstanceCapacity", status=500, times=1)
    fault_proxy.ec2_drop_answer("RunInstances", when=f"ClientToken=[^&]*-n{NODES - 1}(&|$)", times=1)
    with pytest.raises(ProviderError):
        controller.cycle(name)

    [attempt] = store.attempts(name)
    first_offer_token = f"{name}-{int(store.job(name).created_at)}-1"
    assert attempt.is_open and attempt.token == f"{first_offer_token}-1"  # moved to its second offer
    recorded = {row.node: row.instance_id for row in store.intervals(name)}
    assert sorted(recorded) == list(range(NODES - 1))  # the last node is known by its token only
    gang = _by_token(moto_endpoint, store.store_id(), name)
    assert set(gang) == {node_token(attempt.token, node) for node in range(NODES)}
    assert all(attempt_token_of(token) == attempt.token for token in gang)

    # Real orphans: a node tagged like this gang's but under the token of the offer the attempt
    # left (nothing launched there needs it), and an instance of a job this store no longer has.
    stale_token = node_token(first_offer_token, 1)
    some_tags = _tags([gang[attempt.token]], moto_endpoint)[gang[attempt.token]]
    stale = _run_tagged(moto_endpoint, {**some_tags, TAG_TOKEN: stale_token, TAG_NODE: "1"})
    gone = _run_tagged(
        moto_endpoint,
        {TAG_STORE: store.store_id(), TAG_JOB: f"gone-{uuid.uuid4().hex[:6]}", TAG_ATTEMPT: "1", TAG_TOKEN: f"gone-1-1-n{NODES - 1}"},
    )

    result = CliRunner().invoke(app, ["gc", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    terminated = {row["instance_id"] for row in json.loads(result.stdout.splitlines()[-1])}

    assert terminated == {stale, gone}
    states = _states([*gang.values(), stale, gone], moto_endpoint)
    assert all(states[instance_id] == "running" for instance_id in gang.values()), states
    assert states[stale] == states[gone] == "terminated"
