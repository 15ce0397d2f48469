"""What jobs cost and saved, from the ledger's billed intervals.

A closed interval carries the cost its cloud's billing rules gave it when it ended; a running
one is priced here up to ``now`` by the same rules, as if stopped now (the most it can have cost
so far). Savings are measured against the on-demand price of the same seconds on the same
instance type. Everything a report shows is derived from the rows alone, so a report over a
team's thousands of jobs reads one table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

import sqlalchemy as sa

from cloud.billing import BilledInterval, constant_price, interval_cost_usd, on_demand_equivalent_usd
from cloud.provider import Market, PricePoint
from runner.store import Interval, Outcome, StateStore, intervals_table, is_priced


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

    def __add__(self, other: CostSummary) -> CostSummary:
        """The figures of both sets together: every field is a sum."""
        return CostSummary(*(getattr(self, field.name) + getattr(other, field.name) for field in fields(self)))

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
    preempted = Outcome.PREEMPTED.value
    for interval in intervals:  # a report sums tens of thousands: only those not yet priced go through priced()
        start, end, cost, equivalent = interval.start, interval.end, interval.cost_usd, interval.on_demand_usd
        if end is None or cost is None or equivalent is None:
            cost, equivalent = priced(interval, now)
            end = end if end is not None else max(now, start)
        ran = end - start
        count += 1
        spent += cost
        on_demand += equivalent
        seconds += ran
        gpu_seconds += ran * interval.gpus
        waited = start - interval.requested_at
        provisioning += waited if waited > 0.0 else 0.0
        booting = (interval.productive_at if interval.productive_at is not None else end) - start
        restart += booting if booting > 0.0 else 0.0
        if interval.outcome == preempted:
            preemptions += 1
            lost += interval.work_lost_s or 0.0
    return CostSummary(
        spent_usd=spent, on_demand_usd=on_demand, instance_seconds=seconds, gpu_seconds=gpu_seconds, intervals=count,
        preemptions=preemptions, work_lost_s=lost, provisioning_s=provisioning, restart_s=restart,
    )


def closed_sums(store: StateStore, column: str, *, since: float | None = None) -> list[tuple[Any, str, CostSummary]]:
    """``summarize`` of the closed, priced intervals per (``column``'s value, job), added up by the database.

    The same sums as ``summarize``, term for term, in SQL: a report over a team's hundreds of
    thousands of intervals reads one row per job instead of every interval. Running and unpriced
    intervals are left to ``summarize`` (``StateStore.intervals(priced=False)``). ``column`` is a ledger
    column (``team``, ``launched_by``...); ``since`` keeps the intervals that ended after it.
    """
    table = intervals_table
    ran = table.c.end - table.c.start
    productive = sa.func.coalesce(table.c.productive_at, table.c.end)
    preempted = table.c.outcome == Outcome.PREEMPTED.value
    query = (
        sa.select(
            table.c[column], table.c.job,
            sa.func.sum(table.c.cost_usd), sa.func.sum(table.c.on_demand_usd), sa.func.sum(ran), sa.func.sum(ran * table.c.gpus),
            sa.func.count(), sa.func.sum(sa.case((preempted, 1), else_=0)),
            sa.func.sum(sa.case((preempted, sa.func.coalesce(table.c.work_lost_s, 0.0)), else_=0.0)),
            sa.func.sum(sa.case((table.c.start > table.c.requested_at, table.c.start - table.c.requested_at), else_=0.0)),
            sa.func.sum(sa.case((productive > table.c.start, productive - table.c.start), else_=0.0)),
        )
        .where(is_priced())
        .group_by(table.c[column], table.c.job)
    )
    if since is not None:
        query = query.where(table.c.end >= since)
    return [
        (key, job, CostSummary(float(spent), float(on_demand), float(seconds), float(gpu_seconds), int(count), int(preemptions), float(lost), float(waited), float(booting)))
        for key, job, spent, on_demand, seconds, gpu_seconds, count, preemptions, lost, waited, booting in store.read(query)
    ]

