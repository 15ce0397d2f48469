"""The ``aws`` provider: EC2 spot and on-demand instances through boto3, behind the same base class as ``local``.

Instances start from the launch template the Terraform module made (``spotrun infra up``); its
user data runs ``spotrun agent --from-instance-tags``, so everything an instance needs to know
travels in its tags, a gang member's rank and rendezvous included. Every instance is tagged with
the job, the attempt, the launch token and the state store that launched it, which is what makes
launches idempotent, polls batched and garbage collection safe:

- launch: an instance already tagged with the token is returned instead of launching again
  (``Provider.launched_under``, before the call and before each retry of it; EC2's ``ClientToken``
  does the same on AWS; looking first also covers a controller that died between the call and
  recording its answer);
- poll: one paginated ``describe_instances`` filtered on this store's tag, whatever the number of
  jobs and instances;
- capacity errors put the zone aside for ``avoid_zone_s`` and surface as ``CapacityError`` so the
  controller moves on to the next offer; throttling, 5xx and dropped connections are retried with
  bounded exponential backoff and jitter; anything else fails with AWS's own message.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import boto3
import tenacity
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from cloud.aws_prices import OnDemandPrices
from cloud.billing import constant_price
from cloud.errors import CapacityError, ProviderError
from cloud.provider import (
    TAG_JOB,
    TAG_STORE,
    TAG_TOKEN,
    EndReason,
    Instance,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    PricePoint,
    Provider,
    ProviderPriors,
)

log = logging.getLogger(__name__)
RENDEZVOUS_PORT = 29500
# Before a job has measured its own: launch to first progress is boot, install and resume; EC2 gives
# no interruption rate per pool, and a spot instance in a middling pool lasts about a day.
PRIORS = ProviderPriors(restart_overhead_s=300.0, spot_s_between_preemptions=24 * 3600.0)

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "SpotMaxPriceTooLow",
        "MaxSpotInstanceCountExceeded",
        "Unsupported",
        "InstanceLimitExceeded",
    }
)
THROTTLING_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled"})
SPOT_TERMINATION = "Server.SpotInstanceTermination"
_LIVE_STATES = ("pending", "running", "stopping", "stopped", "shutting-down")
_TRANSITION_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")
# describe_instances may not list an instance for a little while after run_instances answered.
_LAUNCH_VISIBILITY_S = 120.0
_T = TypeVar("_T")


@dataclass(frozen=True)
class AwsSettings:
    """Where and how to launch; the infra outputs (``spotrun infra up``) provide most of it."""

    region: str
    store_id: str  # the spotrun:store tag of every instance this state store launches
    launch_template_id: str = ""  # needed to launch only (prices and gc work without infra)
    subnet_ids: tuple[str, ...] = ()  # empty: the default VPC's subnets, one per zone
    avoid_zone_s: float = 600.0
    max_attempts: int = 6
    max_delay_s: float = 60.0
    initial_wait_s: float = 0.5
    max_wait_s: float = 8.0


@dataclass(frozen=True)
class TaggedInstance:
    """An EC2 instance that carries spotrun tags, as ``spotrun gc`` lists it."""

    instance_id: str
    state: str
    instance_type: str
    zone: str
    launched_at: float
    tags: dict[str, str]

    @property
    def job(self) -> str | None:
        return self.tags.get(TAG_JOB)

    @property
    def store(self) -> str | None:
        return self.tags.get(TAG_STORE)


def is_retryable(error: BaseException) -> bool:
    """Throttling, 5xx and transport errors: the same call may pass a little later."""
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        # EC2 answers InsufficientInstanceCapacity with a 500: it is the next offer's turn, not a retry's.
        return code not in CAPACITY_CODES and (code in THROTTLING_CODES or status >= 500)
    return isinstance(error, (ConnectionError, HTTPClientError))


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _aws_message(error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', 'error')}: {details.get('Message', error)}"
    return str(error)


class AwsProvider(Provider):
    """EC2 through boto3; ``clients`` makes a boto3 client by service name (tests point it at moto)."""

    name = "aws"

    def __init__(
        self,
        settings: AwsSettings,
        *,
        clients: Callable[[str], Any] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        # Retries are ours (bounded, and a retried launch looks for its instance first), not botocore's.
        config = Config(region_name=settings.region, retries={"mode": "standard", "total_max_attempts": 1})
        self._clients = clients or (lambda service: boto3.client(service, config=config))
        self._ec2_client: Any = None
        self._clock = clock
        self._sleep = sleep
        self._avoided: dict[str, float] = {}  # zone -> until (clock)
        self._launched: dict[str, float] = {}  # instance id -> when this provider launched it
        self._zones_of_subnets: dict[str, str] | None = None
        self.prices = OnDemandPrices(settings.region, lambda: self._clients("pricing"))

    @property
    def _ec2(self) -> Any:
        if self._ec2_client is None:
            self._ec2_client = self._clients("ec2")
        return self._ec2_client

    def _call(self, what: str, call: Callable[[], _T], *, before_retry: Callable[[], _T | None] | None = None) -> _T:
        """``call()`` with retries of what :func:`is_retryable` accepts; ``before_retry`` may return the answer instead."""
        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(is_retryable),
            stop=tenacity.stop_after_attempt(self.settings.max_attempts) | tenacity.stop_after_delay(self.settings.max_delay_s),
            wait=tenacity.wait_exponential_jitter(multiplier=self.settings.initial_wait_s, max=self.settings.max_wait_s),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    if before_retry is not None and attempt.retry_state.attempt_number > 1:
                        found = before_retry()
                        if found is not None:
                            return found
                    return call()
        except (ClientError, BotoCoreError) as error:
            if isinstance(error, ClientError) and _error_code(error) in CAPACITY_CODES:
                raise
            raise ProviderError(f"EC2 {what} failed in {self.settings.region}: {_aws_message(error)}") from error
        raise AssertionError("unreachable: tenacity either returns or raises")

    def _pages(self, operation: str, what: str, **kwargs: Any) -> list[dict[str, Any]]:
        """Every page of a paginated EC2 call, each page retried on its own."""
        pages = []
        token: str | None = None
        while True:

            def next_page(token: str | None = token) -> dict[str, Any]:  # token bound now: the loop moves it on
                response: dict[str, Any] = getattr(self._ec2, operation)(**kwargs, **({"NextToken": token} if token else {}))
                return response

            page = self._call(what, next_page)
            pages.append(page)
            token = page.get("NextToken")
            if not token:
                return pages

    # ---------------------------------------------------------------- offers

    def offers(self, request: OfferRequest) -> list[Offer]:
        """Every (type, zone) the request allows, cheapest first; zones that just ran out of capacity are left out."""
        if not request.instance_types:
            raise ProviderError("the aws provider needs instance types (resources.instance_types), e.g. [g5.xlarge]")
        gpus = {instance_type: count for instance_type, (count, _) in self.gpu_info(request.instance_types).items()}
        zones = self._usable_zones()
        on_demand = {instance_type: self.on_demand_price(instance_type) for instance_type in request.instance_types}
        now = self._clock()
        allowed = [zone for zone in zones if self._avoided.get(zone, 0.0) <= now]
        if request.market is Market.ON_DEMAND:
            offers = [
                Offer(self.name, instance_type, zone, Market.ON_DEMAND, price, price, gpus.get(instance_type, 0))
                for instance_type, price in on_demand.items()
                for zone in allowed
            ]
        else:
            spot = self.spot_prices(request.instance_types)
            offers = [
                Offer(self.name, instance_type, zone, Market.SPOT, price, on_demand[instance_type], gpus.get(instance_type, 0))
                for (instance_type, zone), price in spot.items()
                if zone in allowed
            ]
        return sorted(offers, key=lambda offer: (offer.price_usd_per_hour, offer.instance_type, offer.zone))

    def spot_prices(self, instance_types: Sequence[str]) -> dict[tuple[str, str], float]:
        """The current Linux spot price of each (instance type, zone)."""
        newest: dict[tuple[str, str], tuple[datetime, float]] = {}
        pages = self._pages(
            "describe_spot_price_history",
            "describe_spot_price_history",
            InstanceTypes=list(instance_types),
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.fromtimestamp(self._clock(), UTC),
        )
        for page in pages:
            for entry in page.get("SpotPriceHistory", []):
                if entry["InstanceType"] not in instance_types:
                    continue
                key = (entry["InstanceType"], entry["AvailabilityZone"])
                stamp = entry["Timestamp"]
                if key not in newest or stamp > newest[key][0]:
                    newest[key] = (stamp, float(entry["SpotPrice"]))
        return {key: price for key, (_, price) in newest.items()}

    def price_history(self, offer: Offer, start: float, end: float) -> tuple[PricePoint, ...]:
        """The Linux spot price series of the offer's type and zone over [start, end]; on-demand prices are flat.

        EC2 answers with every change in the window and the price in effect at its start; when it
        has nothing (history is kept 90 days), the offer's own price stands for the whole interval.
        """
        if offer.market is Market.ON_DEMAND:
            return constant_price(offer.price_usd_per_hour, start)
        pages = self._pages(
            "describe_spot_price_history",
            "describe_spot_price_history",
            InstanceTypes=[offer.instance_type],
            AvailabilityZone=offer.zone,
            ProductDescriptions=["Linux/UNIX"],
            StartTime=datetime.fromtimestamp(start, UTC),
            EndTime=datetime.fromtimestamp(end, UTC),
        )
        points = sorted(
            (
                PricePoint(entry["Timestamp"].timestamp(), float(entry["SpotPrice"]))
                for page in pages
                for entry in page.get("SpotPriceHistory", [])
                if entry["InstanceType"] == offer.instance_type and entry["AvailabilityZone"] == offer.zone
            ),
            key=lambda point: point.time,
        )
        return tuple(points) or constant_price(offer.price_usd_per_hour, start)

    def rendezvous_port(self) -> int:
        """PyTorch's usual MASTER_PORT: each gang's rank 0 is its own instance."""
        return RENDEZVOUS_PORT

    @property
    def priors(self) -> ProviderPriors:
        """EC2's: minutes to boot and resume, about a day of spot between interruptions."""
        return PRIORS

    def on_demand_price(self, instance_type: str) -> float:
        try:
            return self.prices.usd_per_hour(instance_type)
        except KeyError:
            raise ProviderError(
                f"no on-demand price for {instance_type}: the Pricing API did not answer and it is not in spotrun's price table"
            ) from None

    def gpu_info(self, instance_types: Sequence[str]) -> dict[str, tuple[int, float]]:
        """GPU count and total GPU memory (GiB) per instance type."""
        described = self._call("describe_instance_types", lambda: self._ec2.describe_instance_types(InstanceTypes=list(instance_types)))
        info = {}
        for entry in described.get("InstanceTypes", []):
            gpus = entry.get("GpuInfo", {})
            count = sum(int(gpu.get("Count", 0)) for gpu in gpus.get("Gpus", []))
            info[entry["InstanceType"]] = (count, float(gpus.get("TotalGpuMemoryInMiB", 0)) / 1024)
        return info

    def _usable_zones(self) -> list[str]:
        if self.settings.subnet_ids:
            return sorted(set(self._subnet_zones().values()))
        described = self._call(
            "describe_availability_zones",
            lambda: self._ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}]),
        )
        return sorted(zone["ZoneName"] for zone in described.get("AvailabilityZones", []))

    def _subnet_zones(self) -> dict[str, str]:
        if self._zones_of_subnets is None:
            described = self._call("describe_subnets", lambda: self._ec2.describe_subnets(SubnetIds=list(self.settings.subnet_ids)))
            self._zones_of_subnets = {subnet["SubnetId"]: subnet["AvailabilityZone"] for subnet in described.get("Subnets", [])}
        return self._zones_of_subnets

    # ---------------------------------------------------------------- launch

    def _start(self, offer: Offer, request: LaunchRequest) -> Instance:
        """Run one instance for ``request``, tagged with everything its agent reads; a retry first looks for its token's instance."""
        tags = {**self.instance_tags(request), TAG_STORE: self.settings.store_id}
        tag_list = [{"Key": key, "Value": str(value)[:256]} for key, value in tags.items()]
        parameters: dict[str, Any] = {
            "LaunchTemplate": {"LaunchTemplateId": self.settings.launch_template_id, "Version": "$Latest"},
            "InstanceType": offer.instance_type,
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": request.token[:64],
            "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list}, {"ResourceType": "volume", "Tags": tag_list}],
        }
        subnet = self._subnet_in(offer.zone)
        placement = {"GroupName": request.placement_group} if request.placement_group else {}
        if subnet is not None:
            parameters["SubnetId"] = subnet
        else:
            placement["AvailabilityZone"] = offer.zone
        if placement:
            parameters["Placement"] = placement
        if offer.market is Market.SPOT:
            # A launch template's market options are not honoured everywhere (moto ignores them): say it on the call.
            parameters["InstanceMarketOptions"] = {
                "MarketType": "spot",
                "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
            }
        try:
            response = self._call(
                "run_instances",
                lambda: self._ec2.run_instances(**parameters),
                before_retry=lambda: self.launched_under(request.token, offer),
            )
        except ClientError as error:  # only capacity errors reach here
            self._avoided[offer.zone] = self._clock() + self.settings.avoid_zone_s
            raise CapacityError(
                f"no {offer.market.value} capacity for {offer.instance_type} in {offer.zone} ({_aws_message(error)}); "
                f"avoiding {offer.zone} for {self.settings.avoid_zone_s:.0f}s"
            ) from error
        if isinstance(response, Instance):
            return response
        described = response["Instances"][0]
        instance = Instance(described["InstanceId"], offer, _launch_time(described, self._clock()), described.get("PrivateIpAddress", ""))
        self._launched[instance.instance_id] = self._clock()
        log.info("launched %s (%s %s in %s) for %s", instance.instance_id, offer.instance_type, offer.market.value, offer.zone, request.job)
        return instance

    def _subnet_in(self, zone: str) -> str | None:
        if not self.settings.subnet_ids:
            return None
        for subnet, subnet_zone in sorted(self._subnet_zones().items()):
            if subnet_zone == zone:
                return subnet
        raise ProviderError(f"none of the subnets {list(self.settings.subnet_ids)} is in {zone}")

    def _find_launched(self, token: str, offer: Offer) -> Instance | None:
        """The instance this store already launched for ``token`` (its answer may have been lost), or None."""
        filters = [{"Name": f"tag:{TAG_TOKEN}", "Values": [token]}, {"Name": f"tag:{TAG_STORE}", "Values": [self.settings.store_id]}]
        for described in self._described(Filters=filters):
            return Instance(described["InstanceId"], offer, _launch_time(described, self._clock()), described.get("PrivateIpAddress", ""))
        return None

    # ------------------------------------------------------------------ poll

    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """All of this store's instances in one paginated call; unknown ids are HOST_LOST (or PENDING just after launch)."""
        wanted = set(instance_ids)
        found: dict[str, InstanceStatus] = {}
        if wanted:
            for described in self._described(Filters=[{"Name": f"tag:{TAG_STORE}", "Values": [self.settings.store_id]}], MaxResults=1000):
                if described["InstanceId"] in wanted:
                    found[described["InstanceId"]] = self._status(described)
        now = self._clock()
        for instance_id in wanted - found.keys():
            launched = self._launched.get(instance_id)
            if launched is not None and now - launched < _LAUNCH_VISIBILITY_S:
                found[instance_id] = InstanceStatus(instance_id, InstanceState.PENDING, launched)
            else:
                found[instance_id] = InstanceStatus(instance_id, InstanceState.TERMINATED, launched or now, now, EndReason.HOST_LOST)
        return found

    def _described(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        for page in self._pages("describe_instances", "describe_instances", **kwargs):
            for reservation in page.get("Reservations", []):
                yield from reservation.get("Instances", [])

    def _status(self, described: dict[str, Any]) -> InstanceStatus:
        state = described["State"]["Name"]
        launched_at = _launch_time(described, self._clock())
        if state == "pending":
            return InstanceStatus(described["InstanceId"], InstanceState.PENDING, launched_at)
        if state == "running":
            return InstanceStatus(described["InstanceId"], InstanceState.RUNNING, launched_at)
        reason_code = described.get("StateReason", {}).get("Code", "")
        if reason_code == SPOT_TERMINATION:
            end_reason = EndReason.SPOT_INTERRUPTION
        elif reason_code == "Client.InstanceInitiatedShutdown":
            end_reason = EndReason.AGENT_EXITED  # the user data shuts the instance down when the agent is done
        elif reason_code == "Client.UserInitiatedShutdown":
            end_reason = EndReason.TERMINATED_BY_USER
        else:
            end_reason = EndReason.HOST_LOST
        ended_at = _transition_time(described.get("StateTransitionReason", "")) or self._clock()
        return InstanceStatus(described["InstanceId"], InstanceState.TERMINATED, launched_at, ended_at, end_reason)

    # ------------------------------------------------------------- terminate

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """Terminate the given instances that are still alive; gone or unknown ones are not an error."""
        wanted = set(instance_ids)
        if not wanted:
            return
        filters = [
            {"Name": "instance-id", "Values": sorted(wanted)},
            {"Name": "instance-state-name", "Values": list(_LIVE_STATES)},
        ]
        alive = [described["InstanceId"] for described in self._described(Filters=filters)]
        for start in range(0, len(alive), 1000):
            chunk = alive[start : start + 1000]
            self._call("terminate_instances", functools.partial(self._ec2.terminate_instances, InstanceIds=chunk))

    # -------------------------------------------------------------------- gc

    def tagged_instances(self) -> list[TaggedInstance]:
        """Every live instance in the region that carries a ``spotrun:job`` tag, whichever store launched it."""
        filters = [{"Name": "tag-key", "Values": [TAG_JOB]}, {"Name": "instance-state-name", "Values": list(_LIVE_STATES)}]
        instances = []
        for described in self._described(Filters=filters):
            tags = {tag["Key"]: tag["Value"] for tag in described.get("Tags", [])}
            instances.append(
                TaggedInstance(
                    described["InstanceId"],
                    described["State"]["Name"],
                    described["InstanceType"],
                    described["Placement"]["AvailabilityZone"],
                    _launch_time(described, self._clock()),
                    tags,
                )
            )
        return instances


def _launch_time(described: dict[str, Any], default: float) -> float:
    launched = described.get("LaunchTime")
    return launched.timestamp() if isinstance(launched, datetime) else default


def _transition_time(reason: str) -> float | None:
    """EC2 puts the time of a termination in the state transition reason: 'User initiated (2026-11-21 10:00:00 GMT)'."""
    match = _TRANSITION_TIME.search(reason)
    if match is None:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
