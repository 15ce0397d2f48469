"""What an instance interval costs, by the billing rules of the cloud it ran on.

The rules are AWS's for Linux instances, and the ``local`` provider bills by the same ones with
its configured prices, so the whole path from launch to ledger is exercised without a cloud:

- time is billed per second;
- an on-demand instance is billed for at least ``ON_DEMAND_MINIMUM_S`` (60 s);
- a spot instance that the cloud interrupts within its first hour is not charged at all;
  interrupted later, or stopped by its user at any time, it is charged for the seconds it ran;
- the spot price can change while an instance runs: the interval is charged at the price in
  effect at each second, i.e. the price series is integrated over the interval.

A running interval is priced as if its user stopped it now: the most it can have cost so far,
which is what a budget must count, since nobody knows yet whether the cloud will interrupt it.

Savings are measured against one on-demand instance that would have done the same productive
work without interruption (``runner.cost.ledger`` says what that work is): it is billed by the same
rules, so its 60 s minimum is charged once for all of that work, never once per spot interval.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from cloud.provider import EndReason, Market, PricePoint

ON_DEMAND_MINIMUM_S = 60.0
SPOT_INTERRUPTION_FREE_S = 3600.0


def price_at(prices: Sequence[PricePoint], when: float) -> float:
    """The price in effect at ``when``: the newest point at or before it (the first point before the series starts)."""
    if not prices:
        raise ValueError("a price series needs at least one point")
    index = bisect.bisect_right([point.time for point in prices], when) - 1
    return prices[max(index, 0)].usd_per_hour


def integrate_price(prices: Sequence[PricePoint], start: float, end: float) -> float:
    """USD for running from ``start`` to ``end`` under a changing hourly price."""
    if end <= start:
        return 0.0
    times = [point.time for point in prices]
    cuts = [start, *(time for time in times if start < time < end), end]
    return sum((right - left) * price_at(prices, left) / 3600.0 for left, right in zip(cuts, cuts[1:], strict=False))


@dataclass(frozen=True)
class BilledInterval:
    """One instance from launch to end; ``end_reason`` None means it is still running."""

    market: Market
    start: float
    end: float
    prices: Sequence[PricePoint]
    end_reason: EndReason | None = None


def interval_cost_usd(interval: BilledInterval) -> float:
    """What the cloud charges for ``interval`` (see the module docstring for the rules)."""
    ran = max(0.0, interval.end - interval.start)
    if interval.market is Market.SPOT:
        if interval.end_reason is EndReason.SPOT_INTERRUPTION and ran < SPOT_INTERRUPTION_FREE_S:
            return 0.0
        return integrate_price(interval.prices, interval.start, interval.start + ran)
    billed = max(ran, ON_DEMAND_MINIMUM_S)
    return integrate_price(interval.prices, interval.start, interval.start + billed)


def one_instance_on_demand_usd(worked_before_s: float, seconds: float, on_demand_usd_per_hour: float) -> float:
    """What ``seconds`` more work add to the bill of ONE on-demand instance that had already worked ``worked_before_s``.

    The instance is billed per second with the 60 s minimum charged once, from its first second of
    work: shares of one instance's work priced one after the other add up to its whole bill, so
    the ledger's rows of a job (each a share) add up to the job's on-demand equivalent.
    """
    return (_on_demand_billed_s(worked_before_s + seconds) - _on_demand_billed_s(worked_before_s)) * on_demand_usd_per_hour / 3600.0


def _on_demand_billed_s(worked_s: float) -> float:
    return max(worked_s, ON_DEMAND_MINIMUM_S) if worked_s > 0 else 0.0


def constant_price(usd_per_hour: float, since: float) -> tuple[PricePoint, ...]:
    """A price series that never changes (on-demand, the local provider)."""
    return (PricePoint(since, usd_per_hour),)
