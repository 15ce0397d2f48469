"""What jobs cost and saved, from the ledger's billed intervals.

A closed interval carries the cost its cloud's billing rules gave it when it ended. A running one
is priced here up to ``now`` by the same rules, as if stopped now (the most it can have cost so
far), over the price series in its row: the controller keeps that series up to date from the
provider's price history while the interval runs, so every reader (the budget check, status, the
forecast, cost reports) prices a running interval the same way without asking the provider.

Savings are measured against ON_DEMAND_EQUIVALENT. Each row carries its share of it: the seconds
of productive work it added, priced as the next seconds of that one instance's bill
(``cloud.billing.one_instance_on_demand_usd``), so a job's rows add up to the job's figure and any
grouping of rows (team, tag, instance type, day) shares it out consistently. A share depends on the
work the job's earlier intervals on the same node did: a closed row holds its share, and a running
row the earlier work (``open_row_on_demand_usd``), so that it too is priced alone. Everything a
report shows is derived from the rows alone, so a report over a team's thousands of jobs reads one
table.

A preemption is one attempt the cloud ended (``count_preemptions``): a gang is preempted once, however
many of its nodes were taken. Each row keeps its own node's outcome (``preempted`` on the nodes
actually lost), so status, the final report, the forecast and every cost report count the attempts
among their rows that have a preempted one, never the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

import sqlalchemy as sa

from cloud.billing import BilledInterval, constant_price, interval_cost_usd, one_instance_on_demand_usd, price_at
from cloud.provider import Market, PricePoint
from runner.state.store import Interval, Outcome, StateStore, intervals_table, is_priced

ON_DEMAND_EQUIVALENT = (
    "what one uninterrupted on-demand instance per node would have cost for the job's productive work: the training whose "
    "results were kept (not the work lost since the last checkpoint when an instance was taken away or stopped) plus one "
    "start's boot to its first training step, billed per second with one 60 s minimum per job, not one per interval"
)


def price_series(interval: Interval) -> tuple[PricePoint, ...]:
    """The prices ``interval`` is billed at: the series in its row, else its launch price throughout."""
    return tuple(PricePoint(time, price) for time, price in interval.prices) or constant_price(interval.price_usd_per_hour, interval.start)


def usd_per_hour_at(interval: Interval, when: float) -> float:
    """The price ``interval`` is billed at, at ``when``."""
    return price_at(price_series(interval), when)


def productive_s(interval: Interval, worked_before_s: float | None, now: float) -> float:
    """Seconds of the job's productive work that ``interval`` did by ``now``, after ``worked_before_s`` on its node before it.

    ``worked_before_s`` is None for the node's first interval, whose boot the one instance had too.

    That is its training less the work lost at its end (while it runs, none is lost yet), plus its
    boot to the first training step when nothing was done on the node before: the first start's
    boot, which one uninterrupted instance would have had too (a start that never reached its first
    step was booting all along). Every later boot is spot's overhead, not the job's work.
    """
    end = interval.end if interval.end is not None else max(now, interval.start)
    trained_from = end if interval.productive_at is None else min(max(interval.productive_at, interval.start), end)
    kept = max(0.0, end - trained_from - (interval.work_lost_s or 0.0))
    return kept + (trained_from - interval.start if worked_before_s is None else 0.0)


def worked_before_s(intervals: Iterable[Interval], interval: Interval, now: float) -> float | None:
    """The productive seconds of the job's intervals on ``interval``'s node before it: where its share of the one instance's bill begins.

    None when there is none: ``interval`` is its node's first start (whose boot counts even after
    an earlier start on the node that lost all its work would count none).
    """
    earlier = sorted(
        (row for row in intervals if row.job == interval.job and row.node == interval.node and row.attempt < interval.attempt),
        key=lambda row: row.attempt,
    )
    worked: float | None = None
    for row in earlier:
        worked = (worked or 0.0) + productive_s(row, worked, now)
    return worked


def on_demand_share_usd(interval: Interval, worked_before_s: float | None, now: float) -> float:
    """``interval``'s share of its job's on-demand equivalent by ``now``: the next seconds of the one instance's bill."""
    return one_instance_on_demand_usd(
        worked_before_s or 0.0, productive_s(interval, worked_before_s, now), interval.on_demand_price_usd_per_hour
    )


def share_at_close_usd(intervals: Iterable[Interval], interval: Interval, end: float, work_lost_s: float | None) -> float:
    """The share of the on-demand equivalent ``interval``, one of its job's ``intervals``, closes with when it ends at ``end``."""
    return on_demand_share_usd(replace(interval, end=end, work_lost_s=work_lost_s), worked_before_s(intervals, interval, end), end)


def open_row_on_demand_usd(interval: Interval, worked_before_s: float | None) -> float | None:
    """What a running row's ``on_demand_usd`` holds until it closes: the work its node did before it, valued at its on-demand price.

    None for the node's first interval (nothing before it), so that its boot is counted as the first start's.
    """
    return None if worked_before_s is None else worked_before_s * interval.on_demand_price_usd_per_hour / 3600.0


def _worked_before_running_s(interval: Interval) -> float | None:
    """The earlier work a running row holds (``open_row_on_demand_usd``); None for its node's first (or a row never refreshed)."""
    price = interval.on_demand_price_usd_per_hour
    held = interval.on_demand_usd if interval.end is None else None
    if held is None:
        return None
    return held * 3600.0 / price if price > 0 else 0.0


def priced(interval: Interval, now: float) -> tuple[float, float]:
    """(cost, share of the on-demand equivalent) of one interval: as billed when closed, up to ``now`` while running."""
    if interval.end is not None and interval.cost_usd is not None and interval.on_demand_usd is not None:
        return interval.cost_usd, interval.on_demand_usd
    end = interval.end if interval.end is not None else max(now, interval.start)
    cost = interval_cost_usd(BilledInterval(Market(interval.market), interval.start, end, price_series(interval)))
    return cost, on_demand_share_usd(interval, _worked_before_running_s(interval), now)


@dataclass(frozen=True)
class CostSummary:
    """Spend and savings of a set of intervals (one job, a team, a day...) at a moment."""

    spent_usd: float = 0.0
    on_demand_usd: float = 0.0  # ON_DEMAND_EQUIVALENT
    instance_seconds: float = 0.0
    gpu_seconds: float = 0.0
    intervals: int = 0
    preemptions: int = 0  # attempts the cloud ended (count_preemptions), not rows: adds up over sets that share no attempt
    work_lost_s: float = 0.0  # training after the last committed checkpoint, lost to preemptions
    provisioning_s: float = 0.0  # waiting for instances: request to launch
    restart_s: float = 0.0  # billed time before training made progress: boot, install, resume

    def __add__(self, other: CostSummary) -> CostSummary:
        """The figures of both sets together: every field is a sum."""
        return CostSummary(*(getattr(self, field.name) + getattr(other, field.name) for field in fields(self)))

    @property
    def savings_usd(self) -> float:
        """What spot saved against ON_DEMAND_EQUIVALENT: one uninterrupted on-demand instance doing the same productive work."""
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


def count_preemptions(intervals: Iterable[Interval]) -> int:
    """The attempts among ``intervals`` that the cloud ended: those with a preempted row, each once however many of its nodes were taken."""
    return len({(interval.job, interval.attempt) for interval in intervals if interval.outcome == Outcome.PREEMPTED.value})


def summarize(intervals: Iterable[Interval], now: float) -> CostSummary:
    """Totals over ``intervals``, running ones priced up to ``now``."""
    spent = on_demand = seconds = gpu_seconds = lost = provisioning = restart = 0.0
    count = 0
    preempted = Outcome.PREEMPTED.value
    preempted_rows: list[Interval] = []
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
            preempted_rows.append(interval)
            lost += interval.work_lost_s or 0.0
    return CostSummary(
        spent_usd=spent,
        on_demand_usd=on_demand,
        instance_seconds=seconds,
        gpu_seconds=gpu_seconds,
        intervals=count,
        preemptions=count_preemptions(preempted_rows),
        work_lost_s=lost,
        provisioning_s=provisioning,
        restart_s=restart,
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
            table.c[column],
            table.c.job,
            sa.func.sum(table.c.cost_usd),
            sa.func.sum(table.c.on_demand_usd),
            sa.func.sum(ran),
            sa.func.sum(ran * table.c.gpus),
            # count_preemptions: within one job's rows an attempt is its number (the case is NULL, uncounted, on other rows)
            sa.func.count(),
            sa.func.count(sa.distinct(sa.case((preempted, table.c.attempt)))),
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
        (
            key,
            job,
            CostSummary(
                float(spent),
                float(on_demand),
                float(seconds),
                float(gpu_seconds),
                int(count),
                int(preemptions),
                float(lost),
                float(waited),
                float(booting),
            ),
        )
        for key, job, spent, on_demand, seconds, gpu_seconds, count, preemptions, lost, waited, booting in map(tuple, store.read(query))
    ]
