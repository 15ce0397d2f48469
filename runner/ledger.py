"""What jobs cost and saved, from the ledger's billed intervals.

A closed interval carries the cost its cloud's billing rules gave it when it ended; a running
one is priced here up to ``now`` by the same rules, as if stopped now (the most it can have cost
so far). Savings are measured against the on-demand price of the same seconds on the same
instance type. Everything a report shows is derived from the rows alone, so a report over a
team's thousands of jobs reads one table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from cloud.billing import BilledInterval, constant_price, interval_cost_usd, on_demand_equivalent_usd
from cloud.provider import Market, PricePoint
from runner.store import Interval, Outcome


def priced(interval: Interval, now: float) -> tuple[float, float]:
    """(cost, on-demand equivalent) of one interval: as billed when closed, up to ``now`` while running."""
    if interval.end is not None and interval.cost_usd is not None and interval.on_demand_usd is not None:
        return interval.cost_usd, interval.on_demand_usd
    prices = tuple(PricePoint(time, price) for time, price in interval.prices) or constant_price(interval.price_usd_per_hour, interval.start)
    running = BilledInterval(Market(interval.market), interval.start, max(now, interval.start), prices)
    return interval_cost_usd(running), on_demand_equivalent_usd(running, interval.on_demand_price_usd_per_hour)


@dataclass(frozen=True)
class CostSummary:
    """Spend and savings of a set of intervals (one job, a team, a day...) at a moment."""

    spent_usd: float = 0.0
    on_demand_usd: float = 0.0
    instance_seconds: float = 0.0
    gpu_seconds: float = 0.0
    intervals: int = 0
    preemptions: int = 0
    work_lost_s: float = 0.0  # training after the last committed checkpoint, lost to preemptions
    provisioning_s: float = 0.0  # waiting for instances: request to launch
    restart_s: float = 0.0  # billed time before training made progress: boot, install, resume

    @property
    def savings_usd(self) -> float:
        """What spot saved against on-demand for the same seconds."""
        return self.on_demand_usd - self.spent_usd

    @property
    def savings_pct(self) -> float:
        """Savings as a percentage of the on-demand cost (0 when nothing ran yet)."""
        return 100.0 * self.savings_usd / self.on_demand_usd if self.on_demand_usd > 0 else 0.0

    @property
    def gpu_hours(self) -> float:
        """GPU-hours bought (GPUs per instance x hours)."""
        return self.gpu_seconds / 3600.0

    def to_json(self) -> dict[str, float | int]:
        """The figures reports and ``--json`` outputs promise."""
        return {
            "spent_usd": round(self.spent_usd, 6),
            "on_demand_usd": round(self.on_demand_usd, 6),
            "savings_usd": round(self.savings_usd, 6),
            "savings_pct": round(self.savings_pct, 2),
            "instance_hours": round(self.instance_seconds / 3600.0, 6),
            "gpu_hours": round(self.gpu_hours, 6),
            "intervals": self.intervals,
            "preemptions": self.preemptions,
            "work_lost_s": round(self.work_lost_s, 3),
            "provisioning_s": round(self.provisioning_s, 3),
            "restart_s": round(self.restart_s, 3),
        }


def summarize(intervals: Iterable[Interval], now: float) -> CostSummary:
    """Totals over ``intervals``, running ones priced up to ``now``."""
    spent = on_demand = seconds = gpu_seconds = lost = provisioning = restart = 0.0
    count = preemptions = 0
    for interval in intervals:
        cost, equivalent = priced(interval, now)
        end = interval.end if interval.end is not None else max(now, interval.start)
        ran = end - interval.start
        count += 1
        spent += cost
        on_demand += equivalent
        seconds += ran
        gpu_seconds += ran * interval.gpus
        provisioning += max(0.0, interval.start - interval.requested_at)
        restart += max(0.0, (interval.productive_at if interval.productive_at is not None else end) - interval.start)
        if interval.outcome == Outcome.PREEMPTED.value:
            preemptions += 1
            lost += interval.work_lost_s or 0.0
    return CostSummary(
        spent_usd=spent, on_demand_usd=on_demand, instance_seconds=seconds, gpu_seconds=gpu_seconds, intervals=count,
        preemptions=preemptions, work_lost_s=lost, provisioning_s=provisioning, restart_s=restart,
    )
