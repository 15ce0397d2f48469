"""`spotrun run` with `provider: aws` against moto: launch from the template, two spot interruptions, a capacity
failover, and a bit-exact finish from s3:// checkpoints."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from aws_support import ec2_client, make_launch_template, spot_price_answer
from fault_proxy import FaultProxy

from checkpoints.store import CheckpointStore
from cloud.provider import TAG_JOB, TAG_STORE
from runner.control.providers import POLL_INTERVAL_ENV
from runner.state.store import JobState, Outcome

from .conftest import STEPS_PER_EPOCH, TRAINER, Harness, assert_bit_identical, digits_spec, newest_heartbeat, step_of, wait_until
from .instance_runner import InstanceRunner

pytestmark = pytest.mark.e2e

PRICES = {("g5.xlarge", "us-east-1a"): 0.40, ("g5.xlarge", "us-east-1b"): 0.42, ("g5.xlarge", "us-east-1c"): 0.55}
NOTICE_S = 2.0
EPOCHS = 4  # 180 steps: room for two interruptions between checkpoints (every 40 steps), at half the digits job's cost


@pytest.fixture
def aws_job(harness: Harness, moto_endpoint: str, fault_proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch) -> Iterator[InstanceRunner]:
    """Infra outputs as `spotrun infra up` leaves them, a controller that talks to EC2 through the proxy, and the runner."""
    outputs = harness.home / "infra" / "outputs.json"
    outputs.parent.mkdir(parents=True)
    outputs.write_text(json.dumps({"region": "us-east-1", "launch_template_id": make_launch_template(moto_endpoint), "subnet_ids": []}))
    fault_proxy.ec2_rewrite("DescribeSpotPriceHistory", spot_price_answer(PRICES), for_s=600)
    monkeypatch.setenv("AWS_ENDPOINT_URL", fault_proxy.url)
    monkeypatch.setenv(POLL_INTERVAL_ENV, "0.5")
    runner = InstanceRunner(moto_endpoint, harness.tmp, {"AWS_ENDPOINT_URL": moto_endpoint})
    yield runner
    runner.close()


def _final_weights(url: str, scratch: Path) -> dict[str, torch.Tensor]:
    store = CheckpointStore(url)
    final = store.latest(check_sha256=True)
    assert final is not None and final.final, f"no final checkpoint at {url}"
    return torch.load(store.download(final, scratch), weights_only=True)["state_dict"]


def _step(url: str) -> int:
    return step_of(newest_heartbeat(url))


def test_aws_job_survives_two_interruptions_and_a_capacity_error_bit_exactly(
    harness: Harness,
    aws_job: InstanceRunner,
    fault_proxy: FaultProxy,
    s3_bucket: str,
    moto_endpoint: str,
    tmp_path: Path,
) -> None:
    runner = aws_job
    reference_url = f"{s3_bucket}/reference"
    reference = {**digits_spec("reference"), "checkpoint": {"url": reference_url, "every_steps": 40, "keep": 2}}
    reference["train"] = {**reference["train"], "trainer": {**TRAINER, "max_epochs": EPOCHS}}
    reference["resources"] = {"provider": "aws", "instance_types": ["g5.xlarge"], "market": "spot"}
    del reference["local"]
    process = harness.start("run", str(harness.write_spec(reference, "reference.yaml")))
    assert harness.wait_for_exit(process, 300) == 0, harness.controller_output()[-4000:]

    url = f"{s3_bucket}/digits"
    spec = {
        **reference,
        "name": "digits",
        "team": "vision",
        "tags": {"project": "e2e"},
        "checkpoint": {**reference["checkpoint"], "url": url},
    }
    process = harness.start("run", str(harness.write_spec(spec)))
    total = EPOCHS * STEPS_PER_EPOCH
    for at_step in (total // 4, total // 2):
        instance = wait_until(
            lambda at_step=at_step: next((i for i in runner.running() if i.tags[TAG_JOB] == "digits" and _step(url) >= at_step), None),
            timeout_s=180,
            what=f"digits training past step {at_step}",
        )
        if at_step == total // 2:
            # The relaunch after this interruption finds its first offer (the cheapest zone) out of capacity.
            fault_proxy.ec2_error("RunInstances", "InsufficientInstanceCapacity", status=500, when="us-east-1a", times=1)
        runner.interrupt(instance.instance_id, NOTICE_S)
    assert harness.wait_for_exit(process, 300) == 0, harness.controller_output()[-4000:]

    job = harness.job("digits")
    attempts = harness.store.attempts("digits")
    assert job.state is JobState.SUCCEEDED and harness.figures("digits").preemptions == 2
    assert [a.outcome for a in attempts] == [Outcome.PREEMPTED, Outcome.PREEMPTED, Outcome.FINISHED]
    assert [a.zone for a in attempts] == ["us-east-1a", "us-east-1a", "us-east-1b"]  # failover after the capacity error
    assert any(event.kind == "capacity" for _, event in harness.store.events("digits"))

    described = ec2_client(moto_endpoint).describe_instances(Filters=[{"Name": f"tag:{TAG_JOB}", "Values": ["digits"]}])
    instances = [i for r in described["Reservations"] for i in r["Instances"]]
    assert len(instances) == 3 and all(i["InstanceLifecycle"] == "spot" and i["State"]["Name"] == "terminated" for i in instances)
    tags = {t["Key"]: t["Value"] for t in instances[0]["Tags"]}
    assert tags["team"] == "vision" and tags["project"] == "e2e" and tags["spotrun:url"] == url

    assert_bit_identical(_final_weights(reference_url, tmp_path / "ref"), _final_weights(url, tmp_path / "run"))


def test_aws_gang_launches_both_nodes_in_one_zone_with_their_ranks_and_rank_0_as_rendezvous(
    harness: Harness, aws_job: InstanceRunner, s3_bucket: str, moto_endpoint: str
) -> None:
    # The command records what each node's training would see, then trains "forever" until the job is cancelled.
    record = (
        "import json, os, pathlib, time; "
        f"pathlib.Path('{harness.tmp}', 'env-' + os.environ['NODE_RANK'] + '.json').write_text("
        "json.dumps({key: os.environ.get(key) for key in ('NODE_RANK', 'MASTER_ADDR', 'MASTER_PORT', 'WORLD_SIZE')})); "
        "time.sleep(600)"
    )
    spec = {
        "name": "gang",
        "train": {"command": f'python -c "{record}"'},
        "checkpoint": {"url": f"{s3_bucket}/gang"},
        "resources": {"provider": "aws", "instance_types": ["g5.xlarge"], "nodes": 2},
    }
    process = harness.start("run", str(harness.write_spec(spec)))
    seen = [harness.tmp / "env-0.json", harness.tmp / "env-1.json"]
    wait_until(lambda: all(path.exists() for path in seen), timeout_s=120, what="both nodes' training to start")

    mine = [{"Name": f"tag:{TAG_JOB}", "Values": ["gang"]}, {"Name": f"tag:{TAG_STORE}", "Values": [harness.store.store_id()]}]
    described = ec2_client(moto_endpoint).describe_instances(Filters=mine)  # the moto server is shared by every test
    instances = {{t["Key"]: t["Value"] for t in i["Tags"]}["spotrun:node"]: i for r in described["Reservations"] for i in r["Instances"]}
    assert sorted(instances) == ["0", "1"]
    assert len({i["Placement"]["AvailabilityZone"] for i in instances.values()}) == 1
    rank0_address = instances["0"]["PrivateIpAddress"]
    assert {t["Key"]: t["Value"] for t in instances["1"]["Tags"]}["spotrun:rendezvous"] == f"{rank0_address}:29500"
    env0, env1 = (json.loads(path.read_text()) for path in seen)
    assert env0 == {"NODE_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "WORLD_SIZE": "2"}
    assert env1 == {"NODE_RANK": "1", "MASTER_ADDR": rank0_address, "MASTER_PORT": "29500", "WORLD_SIZE": "2"}
    assert {row.node: row.address for row in harness.store.intervals("gang")} == {
        0: f"{rank0_address}:29500",
        1: instances["1"]["PrivateIpAddress"],
    }

    assert harness.cli("cancel", "gang").exit_code == 0
    assert harness.wait_for_exit(process, 120) == 1
    assert harness.job("gang").state is JobState.CANCELLED
    described = ec2_client(moto_endpoint).describe_instances(InstanceIds=[i["InstanceId"] for i in instances.values()])
    assert all(i["State"]["Name"] in ("shutting-down", "terminated") for r in described["Reservations"] for i in r["Instances"])
