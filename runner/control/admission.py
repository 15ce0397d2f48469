"""Budget admission: whether what is left of a job's budget lets it start an instance, and finish, at the price offered now.

One rule for every place that decides it: `spotrun run`/`submit` before a job is recorded,
`spotrun resume --budget` before a new budget is written, and the controller before each launch.
Starting must be paid for first: an instance's restart overhead (launch to training progress)
plus the reserve kept to checkpoint and stop, on top of what was spent. With a forecast (a
measured throughput, or ``budget.expected_runtime``) the whole cost to finish must fit as well;
the controller asks only whether a start is paid for, since a job forced past its forecast runs
until its budget is spent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from checkpoints.progress import Progress
from cloud.provider import Market, Offer, ProviderPriors
from runner.cost import forecast, ledger
from runner.cost.forecast import Forecast
from runner.spec.job_spec import JobSpec
from runner.state.store import Interval


@dataclass(frozen=True)
class Admission:
    """A budgeted job's figures at one offer's price, and what they allow."""

    max_usd: float
    spent_usd: float
    usd_per_hour: float  # the offer's, per instance
    start_usd: float  # restart overhead and the stop reserve, for every node
    reserve_usd: float  # the stop reserve alone, for every node
    forecast: Forecast | None  # None: nothing measured yet and no budget.expected_runtime

    @property
    def pays_for_start(self) -> bool:
        """What is left pays for starting the instances until training makes progress, and for stopping them."""
        return self.spent_usd + self.start_usd < self.max_usd

    @property
    def total_usd(self) -> float | None:
        """What the job will have cost when it finishes: spent, the forecast to finish and the stop reserve; None without a forecast."""
        if self.forecast is None:
            return None
        return self.spent_usd + self.forecast.cost_usd + self.reserve_usd

    @property
    def fits(self) -> bool:
        """The forecast cost to finish is within the budget; without a forecast, a start is paid for."""
        total = self.total_usd
        return self.pays_for_start if total is None else total <= self.max_usd


def admit(
    spec: JobSpec,
    progress: Progress | None,
    intervals: Sequence[Interval],
    offer: Offer,
    *,
    priors: ProviderPriors,
    max_usd: float,
    reserve_s: float,
    now: float,
) -> Admission:
    """The job's admission under a budget of ``max_usd`` at ``offer``'s price, keeping ``reserve_s`` of running time to stop.

    ``max_usd`` is passed apart from the spec's: `spotrun resume --budget` asks about a budget before it is written.
    ``priors`` are the offering provider's (``Provider.priors``), for what the job has not measured yet.
    """
    price = offer.price_usd_per_hour
    return Admission(
        max_usd=max_usd,
        spent_usd=ledger.summarize(intervals, now).spent_usd,
        usd_per_hour=price,
        start_usd=forecast.start_cost_usd(spec, intervals, price, priors=priors, reserve_s=reserve_s),
        reserve_usd=reserve_s * spec.resources.nodes * price / 3600.0,
        forecast=forecast.forecast(spec, progress, intervals, price, priors=priors, spot=offer.market is Market.SPOT, now=now),
    )
