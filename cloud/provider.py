"""The provider protocol: the only thing the controller knows about where instances come from.

Every provider (``local`` processes on this machine, ``aws`` EC2 through boto3) returns these
dataclasses, never raw SDK dicts, so the controller code is the same for all of them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

# Tags every launch carries (the controller sets job, attempt and url; providers add token and store).
# On EC2 the agent reads its job from them through instance metadata.
TAG_JOB = "spotrun:job"
TAG_ATTEMPT = "spotrun:attempt"
TAG_URL = "spotrun:url"
TAG_TOKEN = "spotrun:token"
TAG_STORE = "spotrun:store"
TAG_NODE = "spotrun:node"  # rank of the instance in its gang
TAG_RENDEZVOUS = "spotrun:rendezvous"  # rank 0's private address:port (MASTER_ADDR, MASTER_PORT)
TAG_SPEC = "spotrun:spec-sha256"  # the digest of the spec the instance must run
TAG_KEY = "spotrun:key"  # the job's key: an instance reads only its own tags (its role has no ec2:Describe*)


class Market(str, enum.Enum):
    """How an instance is bought."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


class InstanceState(str, enum.Enum):
    """Lifecycle as the provider reports it; ``TERMINATED`` is final and billed up to ``ended_at``."""

    PENDING = "pending"
    RUNNING = "running"
    TERMINATED = "terminated"


class EndReason(str, enum.Enum):
    """Why an instance stopped running: decides preemption (relaunch freely) vs failure (counted)."""

    SPOT_INTERRUPTION = "spot-interruption"  # the cloud took it back (after a notice)
    HOST_LOST = "host-lost"  # vanished with no notice and no exit code: a crashed host
    AGENT_EXITED = "agent-exited"  # the agent process ended by itself; see exit_code
    TERMINATED_BY_USER = "terminated-by-user"  # spotrun (or a person) terminated it
    # Asked to checkpoint and stop, it had not when its time ran out, and the controller terminated
    # it. Providers report that as TERMINATED_BY_USER; the controller, which knows, records this.
    STOP_TIMEOUT = "stop-timeout"


@dataclass(frozen=True)
class OfferRequest:
    """What a job needs; providers answer with the offers that satisfy it."""

    instance_types: tuple[str, ...]
    market: Market
    nodes: int = 1


@dataclass(frozen=True)
class PricePoint:
    """A price in effect from ``time`` (unix seconds) until the next point of its series."""

    time: float
    usd_per_hour: float


@dataclass(frozen=True)
class Offer:
    """One way to get an instance now: type x zone x market at a price."""

    provider: str
    instance_type: str
    zone: str
    market: Market
    price_usd_per_hour: float
    on_demand_price_usd_per_hour: float
    gpus: int = 0  # per instance: what GPU-hours are counted in


@dataclass(frozen=True)
class LaunchRequest:
    """Everything an instance needs to start its agent.

    ``token`` is an idempotency key: launching twice with the same token returns the same
    instance, so a controller that died half-way through a launch can safely launch again.
    """

    job: str
    attempt: int
    token: str
    agent_command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    placement_group: str | None = None  # a gang's cluster placement group, where the provider has them


@dataclass(frozen=True)
class Instance:
    """A launched instance, as recorded by the controller."""

    instance_id: str
    offer: Offer
    launched_at: float  # unix seconds
    private_address: str = ""  # where the rest of a gang reaches it (rank 0 is the rendezvous)


@dataclass(frozen=True)
class InstanceStatus:
    """One instance's state from one batched poll."""

    instance_id: str
    state: InstanceState
    launched_at: float
    ended_at: float | None = None
    end_reason: EndReason | None = None
    exit_code: int | None = None  # the agent's exit code, when the provider can know it


@runtime_checkable
class Provider(Protocol):
    """Where instances come from. Implementations: ``cloud.local.LocalProvider`` and ``cloud.aws.AwsProvider``."""

    name: str

    def offers(self, request: OfferRequest) -> list[Offer]:
        """Offers that satisfy ``request``, cheapest first."""
        ...

    def launch(self, offer: Offer, request: LaunchRequest) -> Instance:
        """Start one instance running ``request.agent_command``; idempotent on ``request.token``."""
        ...

    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Status of all ``instance_ids`` in one batched call; unknown ids are reported HOST_LOST."""
        ...

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances; terminating an already terminated instance is not an error."""
        ...

    def price_history(self, offer: Offer, start: float, end: float) -> tuple[PricePoint, ...]:
        """The price ``offer`` was billed at from ``start`` to ``end``: the series the ledger integrates."""
        ...

    def rendezvous_port(self) -> int:
        """The port a gang's rank 0 listens on for the others (MASTER_PORT)."""
        ...
