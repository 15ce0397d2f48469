"""Which provider a job runs on, and how its instances start the agent."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cloud.aws import AwsProvider, AwsSettings
from cloud.local import LocalProvider, SpotAvailability
from cloud.provider import Provider
from runner.control.controller import ControllerSettings
from runner.errors import SpecError
from runner.spec.job_spec import JobSpec, LocalSpec
from runner.state.infra_outputs import stored_infra_outputs
from runner.state.paths import infra_outputs_file
from runner.state.store import Job, StateStore

POLL_INTERVAL_ENV = "SPOTRUN_POLL_INTERVAL_S"
LEASE_ENV = "SPOTRUN_LEASE_S"

# The local metadata emulator answers at once, so the agent can look often; EC2 asks for 5 s.
_LOCAL_AGENT_INTERVALS = ("--poll-interval", "0.5", "--heartbeat-interval", "1")


def provider_for(spec: JobSpec, home: Path, store: StateStore) -> Provider:
    """The provider named by ``resources.provider``, configured from the spec (and, for aws, the infra outputs)."""
    name = spec.resources.provider
    if spec.local is not None:
        local = spec.local
        return LocalProvider(
            home,
            preempt_every_s=local.preempt_every_s,
            notice_s=local.notice_s,
            seed=local.seed,
            spot_price_usd_per_hour=local.spot_price,
            on_demand_price_usd_per_hour=local.on_demand_price,
            gpus=local.gpus,
            cpus=local.cpus,
            spot_availability=_spot_availability(local),
            capacity=dict(local.capacity),
        )
    if name == "aws":
        return AwsProvider(aws_settings(home, store.store_id()))
    raise SpecError(f"resources.provider: {name!r} is not available in this version of spotrun; use 'local' or 'aws'")


def _spot_availability(local: LocalSpec) -> SpotAvailability | None:
    if local.spot_trace is None:
        return None
    assert local.spot_trace_start is not None  # LocalSpec sets it with the trace
    return SpotAvailability.from_file(local.spot_trace, origin=local.spot_trace_start.timestamp())


def aws_settings(home: Path, store_id: str) -> AwsSettings:
    """Region, launch template and subnets from what `spotrun infra up` stored."""
    outputs = stored_infra_outputs(home)
    try:
        return AwsSettings(
            region=str(outputs["region"]),
            launch_template_id=str(outputs["launch_template_id"]),
            subnet_ids=tuple(outputs.get("subnet_ids") or ()),
            store_id=store_id,
        )
    except KeyError as missing:
        raise SpecError(f"{infra_outputs_file(home)}: no {missing} among the outputs of `spotrun infra up`; run it again") from None


def controller_settings(spec: JobSpec) -> ControllerSettings:
    """Poll often on this machine, every 10 s on a cloud; SPOTRUN_POLL_INTERVAL_S overrides both.

    A stopping instance gets 5 s to checkpoint locally, a minute on a cloud (an upload to S3).
    A controller's lease on a job lasts 30 s, or three polling intervals if longer
    (SPOTRUN_LEASE_S overrides it): how long a dead controller's jobs wait to be adopted.
    """
    local = spec.resources.provider == "local"
    poll_interval_s = float(os.environ.get(POLL_INTERVAL_ENV, 1.0 if local else 10.0))
    return ControllerSettings(
        poll_interval_s=poll_interval_s,
        stop_grace_s=5.0 if local else 60.0,
        lease_s=float(os.environ.get(LEASE_ENV, max(30.0, 3 * poll_interval_s))),
    )


def agent_command(job: Job, attempt: int) -> tuple[str, ...]:
    """The command an instance runs: the agent of this very spotrun installation."""
    return (
        sys.executable,
        "-m",
        "runner",
        "agent",
        "--checkpoint-url",
        job.checkpoint_url,
        "--attempt",
        str(attempt),
        *_LOCAL_AGENT_INTERVALS,
    )
