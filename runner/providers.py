"""Which provider a job runs on, and how its instances start the agent."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from cloud.local import LocalProvider
from cloud.provider import Provider
from runner.controller import ControllerSettings
from runner.errors import SpecError
from runner.store import Job

# The local metadata emulator answers at once, so the agent can look often; EC2 asks for 5 s.
_LOCAL_AGENT_INTERVALS = ("--poll-interval", "0.5", "--heartbeat-interval", "1")


def provider_for(spec: dict[str, Any], home: Path) -> Provider:
    """The provider named by ``resources.provider``, configured from the spec."""
    name = spec["resources"]["provider"]
    if name == "local":
        local = spec["local"]
        return LocalProvider(
            home,
            preempt_every_s=local["preempt_every_s"],
            notice_s=local["notice_s"],
            seed=local["seed"],
            spot_price_usd_per_hour=local["spot_price"],
            on_demand_price_usd_per_hour=local["on_demand_price"],
        )
    raise SpecError(f"resources.provider: {name!r} is not available in this version of spotrun; use 'local'")


def controller_settings(spec: dict[str, Any]) -> ControllerSettings:
    """Poll often on this machine; a cloud provider would poll less often."""
    return ControllerSettings(poll_interval_s=1.0 if spec["resources"]["provider"] == "local" else 10.0)


def agent_command(job: Job, attempt: int) -> tuple[str, ...]:
    """The command an instance runs: the agent of this very spotrun installation."""
    return (
        sys.executable, "-m", "runner", "agent",
        "--checkpoint-url", job.checkpoint_url,
        "--attempt", str(attempt),
        *_LOCAL_AGENT_INTERVALS,
    )
