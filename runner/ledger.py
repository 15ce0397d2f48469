"""What a job cost so far, from its attempts (each one billed instance interval).

Savings are measured against the on-demand price of the same seconds on the same instance type.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cloud.billing import interval_cost_usd
from runner.store import Attempt


@dataclass(frozen=True)
class JobCost:
    """Spend and savings of one job at a moment."""

    spent_usd: float
    on_demand_usd: float
    instance_seconds: float

    @property
    def savings_usd(self) -> float:
        """What spot saved against on-demand for the same seconds."""
        return self.on_demand_usd - self.spent_usd

    @property
    def savings_pct(self) -> float:
        """Savings as a percentage of the on-demand cost (0 when nothing ran yet)."""
        return 100.0 * self.savings_usd / self.on_demand_usd if self.on_demand_usd > 0 else 0.0


def job_cost(attempts: Sequence[Attempt], now: float) -> JobCost:
    """Cost of every interval, the running one priced up to ``now``."""
    spent = on_demand = seconds = 0.0
    for attempt in attempts:
        if attempt.launched_at is None:
            continue
        end = attempt.ended_at if attempt.ended_at is not None else now
        spent += interval_cost_usd(attempt.price_usd_per_hour, attempt.launched_at, end)
        on_demand += interval_cost_usd(attempt.on_demand_price_usd_per_hour, attempt.launched_at, end)
        seconds += max(0.0, end - attempt.launched_at)
    return JobCost(spent_usd=spent, on_demand_usd=on_demand, instance_seconds=seconds)
