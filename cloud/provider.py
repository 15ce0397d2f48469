"""The provider base class: the only thing the controller knows about where instances come from.

Every provider (``local`` processes on this machine, ``aws`` EC2 through boto3) returns these
dataclasses, never raw SDK dicts, so the controller code is the same for all of them. As with
fsspec's ``AbstractFileSystem``, a provider implements a few primitives and :class:`Provider`
derives the rest once for all of them (the offer check, the launch-by-token lookup, the tags every
instance carries); optional capabilities are declared by subclassing, not guessed at.
"""

from __future__ import annotations

import abc
import enum
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, final

from cloud.errors import ProviderError

log = logging.getLogger(__name__)

# Tags every launch carries (the controller sets url, spec and key; ``Provider.instance_tags`` adds job,
# attempt, token and a gang member's node and rendezvous; aws adds store).
# On EC2 the agent reads its job from them through instance metadata.
TAG_JOB = "spotrun:job"
TAG_ATTEMPT = "spotrun:attempt"
TAG_URL = "spotrun:url"
TAG_TOKEN = "spotrun:token"
TAG_STORE = "spotrun:store"
TAG_NODE = "spotrun:node"  # rank of the instance in its gang
TAG_RENDEZVOUS = "spotrun:rendezvous"  # the Rendezvous the instance's training connects to (MASTER_ADDR, MASTER_PORT)
TAG_SPEC = "spotrun:spec-sha256"  # the digest of the spec the instance must run
TAG_KEY = "spotrun:key"  # the job's key: an instance reads only its own tags (its role has no ec2:Describe*)

# A gang member as the agent's environment, where its provider starts the agent with one (local).
NODE_ENV = "SPOTRUN_NODE"  # the instance's rank in its gang
RENDEZVOUS_ENV = "SPOTRUN_RENDEZVOUS"  # the rendezvous its training connects to, address:port

LOOPBACK = "127.0.0.1"  # where a gang's rank 0 reaches its own rendezvous; every local instance's private address


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
class Rendezvous:
    """Where a gang's training processes meet: rank 0's store (torch's MASTER_ADDR and MASTER_PORT).

    Its text form, ``address:port``, is the one way it is written and read: in the agent's
    environment, in an instance tag, and in rank 0's ledger row.
    """

    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Rendezvous:
        """The inverse of ``str``; ValueError, naming the text, for anything else."""
        address, _, port = text.rpartition(":")
        if not address or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"rendezvous {text!r}: expected address:port, such as 10.0.0.5:29500")
        return cls(address, int(port))


@dataclass(frozen=True)
class GangMember:
    """One node of a gang: its rank, the gang's size, and the rendezvous its training connects to."""

    node: int
    nodes: int
    rendezvous: Rendezvous

    def __post_init__(self) -> None:
        if not 0 <= self.node < self.nodes:
            raise ValueError(f"node {self.node} is not a rank of a {self.nodes}-node gang")

    @classmethod
    def joining(cls, node: int, nodes: int, *, port: int, rank0_address: str | None) -> GangMember:
        """Node ``node`` of a gang whose rank 0 listens on ``port``.

        Rank 0 hosts the rendezvous and connects to it on loopback: it is launched first, before
        its own private address is known. The others connect at rank 0's private address.
        """
        if node == 0:
            return cls(node, nodes, Rendezvous(LOOPBACK, port))
        if not rank0_address:
            raise ValueError(f"node {node} joins rank 0's rendezvous, so rank 0 must be launched (and have an address) first")
        return cls(node, nodes, Rendezvous(rank0_address, port))

    def tags(self) -> dict[str, str]:
        """The member as instance tags, which an EC2 agent reads through its metadata (``spotrun agent --from-instance-tags``)."""
        return {TAG_NODE: str(self.node), TAG_RENDEZVOUS: str(self.rendezvous)}

    def env(self) -> dict[str, str]:
        """The member as the agent's environment, which ``spotrun agent`` reads (``--node``, ``--rendezvous``)."""
        return {NODE_ENV: str(self.node), RENDEZVOUS_ENV: str(self.rendezvous)}


@dataclass(frozen=True)
class LaunchRequest:
    """Everything an instance needs to start its agent.

    ``token`` is an idempotency key: launching twice with the same token returns the same
    instance, so a controller that died half-way through a launch can safely launch again.
    ``gang`` is the instance's place in a multi-node job (None for a single instance); each
    provider hands it to the agent its own way (local: the environment; aws: instance tags).
    """

    job: str
    attempt: int
    token: str
    agent_command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    workdir: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    placement_group: str | None = None  # a gang's cluster placement group, where the provider has them
    gang: GangMember | None = None


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


@dataclass(frozen=True)
class ProviderPriors:
    """What the forecast assumes of a provider's instances until a job has measured its own."""

    restart_overhead_s: float  # launch to first training progress: boot, install and resume on a cloud; a process start here
    spot_s_between_preemptions: float | None  # expected spot run time between interruptions; None: spot is never taken back


class Interruptible(abc.ABC):
    """A capability: interruptions served on request (``spotrun interrupt``), as only an emulated cloud can.

    A provider declares it by subclassing; :meth:`Provider.interruptible` is how callers ask.
    """

    @abc.abstractmethod
    def interrupt(self, instance_id: str, notice_s: float | None = None) -> None:
        """Serve the interruption notice now; the instance is taken ``notice_s`` later (default: the provider's notice)."""

    @abc.abstractmethod
    def kill_without_notice(self, instance_id: str) -> None:
        """Take the instance at once with no notice and no exit code: what a crashed host looks like."""


class Provider(abc.ABC):
    """Where instances come from. Implementations: ``cloud.local.LocalProvider`` and ``cloud.aws.AwsProvider``.

    A provider implements the primitives (the abstract methods and ``priors``); the derived methods
    here are the same for every provider and are not overridden: :meth:`launch` checks the offer and
    looks for the token's instance before a provider's :meth:`_start` runs, so no provider can skip
    the check that makes a repeated launch safe.
    """

    name: ClassVar[str]

    # ------------------------------------------------------------ primitives

    @abc.abstractmethod
    def offers(self, request: OfferRequest) -> list[Offer]:
        """Offers that satisfy ``request``, cheapest first."""

    @abc.abstractmethod
    def _start(self, offer: Offer, request: LaunchRequest) -> Instance:
        """Start one instance for ``request`` on ``offer``, which :meth:`launch` has checked, with no instance under its token yet."""

    @abc.abstractmethod
    def _find_launched(self, token: str, offer: Offer) -> Instance | None:
        """The instance launched under ``token``, or None; ``offer`` stands for its offer where the provider records none."""

    @abc.abstractmethod
    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Status of all ``instance_ids`` in one batched call; unknown ids are reported HOST_LOST."""

    @abc.abstractmethod
    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate instances; terminating an already terminated instance is not an error."""

    @abc.abstractmethod
    def price_history(self, offer: Offer, start: float, end: float) -> tuple[PricePoint, ...]:
        """The price ``offer`` was billed at from ``start`` to ``end``: the series the ledger integrates."""

    @abc.abstractmethod
    def rendezvous_port(self) -> int:
        """The port a gang's rank 0 listens on for the others (MASTER_PORT)."""

    @property
    @abc.abstractmethod
    def priors(self) -> ProviderPriors:
        """What the forecast assumes of this provider's instances before a job has measured anything."""

    # --------------------------------------------------------------- derived

    @final
    def launch(self, offer: Offer, request: LaunchRequest) -> Instance:
        """Start one instance for ``request``; idempotent on ``request.token``: an instance already under it is returned, starting nothing."""
        self.check_offer(offer)
        found = self.launched_under(request.token, offer)
        return found if found is not None else self._start(offer, request)

    def check_offer(self, offer: Offer) -> None:
        """Refuse an offer another provider made: its type, zone and price mean nothing here."""
        if offer.provider != self.name:
            raise ProviderError(f"offer from provider {offer.provider!r} given to the {self.name!r} provider")

    def launched_under(self, token: str, offer: Offer) -> Instance | None:
        """The instance already launched under ``token`` (by a controller that may have died before recording it), or None."""
        found = self._find_launched(token, offer)
        if found is not None:
            log.info("%s: instance %s was already launched under token %s", self.name, found.instance_id, token)
        return found

    def instance_tags(self, request: LaunchRequest) -> dict[str, str]:
        """The tags every instance carries: the request's own, its job, attempt and token, and its place in a gang."""
        gang = request.gang.tags() if request.gang is not None else {}
        return {**request.tags, TAG_JOB: request.job, TAG_ATTEMPT: str(request.attempt), TAG_TOKEN: request.token, **gang}

    def interruptible(self) -> Interruptible | None:
        """This provider's interruptions on request, if it declares the capability (see :class:`Interruptible`), else None."""
        return self if isinstance(self, Interruptible) else None
