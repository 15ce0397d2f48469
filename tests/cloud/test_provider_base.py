"""What the Provider base class derives for every provider: the offer check, launch by token, tags, capabilities, priors.

The derived methods are seen through a provider over a dict (its primitives record what they are
asked), the capabilities and priors through the real providers, and the refusal through the CLI.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from specs import job_spec
from typer.testing import CliRunner

from cloud.aws import AwsProvider, AwsSettings
from cloud.errors import ProviderError
from cloud.local import LocalProvider
from cloud.provider import (
    LOOPBACK,
    TAG_ATTEMPT,
    TAG_JOB,
    TAG_NODE,
    TAG_RENDEZVOUS,
    TAG_TOKEN,
    GangMember,
    Instance,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    PricePoint,
    Provider,
    ProviderPriors,
    Rendezvous,
)
from runner.cli.app import app
from runner.cost.forecast import forecast
from runner.state.database import default_database_url
from runner.state.paths import infra_outputs_file
from runner.state.store import StateStore


class _DictProvider(Provider):
    """Instances in a dict by token; every call to a primitive is recorded."""

    name = "dict"

    def __init__(self, launched: dict[str, Instance] | None = None) -> None:
        self.by_token = dict(launched or {})
        self.calls: list[str] = []

    def offers(self, request: OfferRequest) -> list[Offer]:
        return [Offer(self.name, instance_type, "zone-a", request.market, 1.0, 2.0) for instance_type in request.instance_types]

    def _start(self, offer: Offer, request: LaunchRequest) -> Instance:
        self.calls.append(f"start {request.token}")
        self.by_token[request.token] = Instance(f"i-{len(self.by_token)}", offer, 100.0, "10.0.0.7")
        return self.by_token[request.token]

    def _find_launched(self, token: str, offer: Offer) -> Instance | None:
        self.calls.append(f"find {token}")
        return self.by_token.get(token)

    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        return {}

    def terminate(self, instance_ids: Sequence[str]) -> None:
        pass

    def price_history(self, offer: Offer, start: float, end: float) -> tuple[PricePoint, ...]:
        return ()

    def rendezvous_port(self) -> int:
        return 29500

    @property
    def priors(self) -> ProviderPriors:
        return ProviderPriors(restart_overhead_s=60.0, spot_s_between_preemptions=None)


def _offer(provider: str = "dict", price: float = 1.0) -> Offer:
    return Offer(provider, "g5.xlarge", "zone-a", Market.SPOT, price, 2.0)


def _request(token: str, *, tags: Mapping[str, str] | None = None, gang: GangMember | None = None) -> LaunchRequest:
    return LaunchRequest(job="job", attempt=3, token=token, agent_command=("agent",), tags=tags or {}, gang=gang)


def test_a_token_launched_before_returns_its_instance_and_starts_nothing() -> None:
    earlier = Instance("i-earlier", _offer(price=0.5), 10.0, "10.0.0.1")
    provider = _DictProvider({"job-3": earlier})

    again = provider.launch(_offer(price=0.9), _request("job-3"))

    assert again == earlier  # the instance as it was launched, not the repeat's offer
    assert provider.calls == ["find job-3"]


def test_a_new_token_starts_one_instance_and_a_repeat_finds_it() -> None:
    provider = _DictProvider()

    first = provider.launch(_offer(), _request("job-3"))
    again = provider.launch(_offer(), _request("job-3"))

    assert again == first
    assert provider.calls == ["find job-3", "start job-3", "find job-3"]


def test_an_offer_of_another_provider_is_refused_before_any_lookup_or_start() -> None:
    provider = _DictProvider()

    with pytest.raises(ProviderError, match="offer from provider 'aws' given to the 'dict' provider"):
        provider.launch(_offer("aws"), _request("job-3"))

    assert provider.calls == []


def test_every_instance_is_tagged_with_its_job_attempt_token_and_place_in_the_gang() -> None:
    provider = _DictProvider()
    member = GangMember.joining(1, 2, port=29500, rank0_address="10.0.0.5")

    tags = provider.instance_tags(_request("job-3-n1", tags={"team": "vision", TAG_JOB: "forged"}, gang=member))
    single = provider.instance_tags(_request("job-3"))

    assert tags == {
        "team": "vision",
        TAG_JOB: "job",
        TAG_ATTEMPT: "3",
        TAG_TOKEN: "job-3-n1",
        TAG_NODE: "1",
        TAG_RENDEZVOUS: "10.0.0.5:29500",
    }
    assert TAG_NODE not in single and TAG_RENDEZVOUS not in single


def test_rank_0_connects_on_loopback_and_the_others_at_rank_0s_address() -> None:
    rank0 = GangMember.joining(0, 3, port=29500, rank0_address=None)
    rank2 = GangMember.joining(2, 3, port=29500, rank0_address="10.0.0.5")

    assert rank0.rendezvous == Rendezvous(LOOPBACK, 29500)
    assert rank2.rendezvous == Rendezvous("10.0.0.5", 29500)
    assert rank2.env() == {"SPOTRUN_NODE": "2", "SPOTRUN_RENDEZVOUS": "10.0.0.5:29500"}
    with pytest.raises(ValueError, match="rank 0 must be launched"):
        GangMember.joining(1, 3, port=29500, rank0_address=None)
    with pytest.raises(ValueError, match="node 3 is not a rank of a 3-node gang"):
        GangMember.joining(3, 3, port=29500, rank0_address="10.0.0.5")


@pytest.mark.parametrize("text", ["10.0.0.5", "10.0.0.5:", ":29500", "10.0.0.5:port", "10.0.0.5:70000"])
def test_a_rendezvous_reads_back_what_it_writes_and_nothing_else(text: str) -> None:
    rendezvous = Rendezvous("10.0.0.5", 29500)
    assert Rendezvous.parse(str(rendezvous)) == rendezvous
    with pytest.raises(ValueError, match="expected address:port"):
        Rendezvous.parse(text)


def _aws() -> AwsProvider:
    return AwsProvider(AwsSettings(region="us-east-1", store_id="store"))


def test_only_a_provider_that_declares_interruptions_offers_them(make_provider: Callable[..., LocalProvider]) -> None:
    local = make_provider()

    assert local.interruptible() is local
    assert _aws().interruptible() is None
    assert _DictProvider().interruptible() is None


def test_spotrun_interrupt_refuses_a_provider_without_interruptions_in_one_line(spotrun_home: Path) -> None:
    infra_outputs_file(spotrun_home).parent.mkdir(parents=True)
    infra_outputs_file(spotrun_home).write_text(json.dumps({"region": "us-east-1", "launch_template_id": "lt-0123"}))
    store = StateStore(default_database_url(spotrun_home))
    spec = job_spec({"resources": {"provider": "aws", "instance_types": ["g5.xlarge"]}}, name="on-ec2")
    store.create_job(spec, spec_path="-", checkpoint_url="memory://jobs/on-ec2")

    result = CliRunner().invoke(app, ["interrupt", "on-ec2"])

    assert result.exit_code == 2
    assert result.stderr.strip() == "error: interrupt works on the local provider only; job 'on-ec2' runs on 'aws'"


def test_a_forecast_before_anything_is_measured_uses_its_providers_priors(make_provider: Callable[..., LocalProvider]) -> None:
    spec = job_spec({"budget": {"expected_runtime": "60s"}})

    local = forecast(spec, None, [], 3600.0, priors=make_provider(preempt_every_s=30.0).priors, spot=True, now=time.time())
    never = forecast(spec, None, [], 3600.0, priors=make_provider(preempt_every_s=0.0).priors, spot=True, now=time.time())
    aws = forecast(spec, None, [], 3600.0, priors=_aws().priors, spot=True, now=time.time())

    assert local is not None and never is not None and aws is not None
    assert (local.expected_preemptions, local.overhead_s) == (2.0, 3 * 15.0)  # two restarts expected, and the first start
    assert (never.expected_preemptions, never.overhead_s) == (0.0, 15.0)
    assert aws.expected_preemptions == pytest.approx(60.0 / (24 * 3600.0)) and aws.overhead_s == pytest.approx(
        300.0 * (1 + 60.0 / (24 * 3600.0))
    )
