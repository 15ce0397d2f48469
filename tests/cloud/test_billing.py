"""The billing rules, pinned on cases computed by hand."""

from __future__ import annotations

import pytest

from cloud.billing import BilledInterval, integrate_price, interval_cost_usd, one_instance_on_demand_usd, price_at
from cloud.provider import EndReason, Market, PricePoint

T0 = 1_700_000_000.0
FLAT = (PricePoint(T0, 3.6),)  # $3.60/h = $0.001 per second


def _cost(market: Market, seconds: float, end_reason: EndReason | None, prices: tuple[PricePoint, ...] = FLAT) -> float:
    return interval_cost_usd(BilledInterval(market, T0, T0 + seconds, prices, end_reason))


def test_on_demand_is_billed_per_second_with_a_60_second_minimum() -> None:
    assert _cost(Market.ON_DEMAND, 30, EndReason.TERMINATED_BY_USER) == pytest.approx(0.060)  # 60 s x $0.001
    assert _cost(Market.ON_DEMAND, 60, EndReason.TERMINATED_BY_USER) == pytest.approx(0.060)
    assert _cost(Market.ON_DEMAND, 61.5, EndReason.TERMINATED_BY_USER) == pytest.approx(0.0615)  # per second beyond the minimum
    assert _cost(Market.ON_DEMAND, 0, None) == pytest.approx(0.060)  # just started: the minimum is owed already


def test_spot_interrupted_by_the_cloud_in_its_first_hour_is_free() -> None:
    assert _cost(Market.SPOT, 3599, EndReason.SPOT_INTERRUPTION) == 0.0
    assert _cost(Market.SPOT, 10, EndReason.SPOT_INTERRUPTION) == 0.0


def test_spot_interrupted_after_the_first_hour_pays_every_second_including_the_first_hour() -> None:
    assert _cost(Market.SPOT, 3600, EndReason.SPOT_INTERRUPTION) == pytest.approx(3.6)
    assert _cost(Market.SPOT, 5400, EndReason.SPOT_INTERRUPTION) == pytest.approx(5.4)  # 1.5 h x $3.60


def test_spot_stopped_by_its_user_pays_the_seconds_used_even_in_the_first_hour() -> None:
    assert _cost(Market.SPOT, 30, EndReason.TERMINATED_BY_USER) == pytest.approx(0.030)
    assert _cost(Market.SPOT, 1800, EndReason.AGENT_EXITED) == pytest.approx(1.8)
    assert _cost(Market.SPOT, 1800, EndReason.HOST_LOST) == pytest.approx(1.8)  # no notice, no proof the cloud took it: no refund


def test_a_running_spot_interval_is_priced_as_if_stopped_now() -> None:
    assert _cost(Market.SPOT, 600, None) == pytest.approx(0.6)


def test_a_spot_price_change_mid_interval_is_integrated() -> None:
    # $0.90/h for the first 20 minutes, $1.80/h for the next 40: 0.9/3 + 1.8*2/3 = 0.30 + 1.20 = $1.50
    prices = (PricePoint(T0 - 500, 0.9), PricePoint(T0 + 1200, 1.8))
    assert _cost(Market.SPOT, 3600, EndReason.TERMINATED_BY_USER, prices) == pytest.approx(1.50)
    # interrupted by EC2 at 59 minutes: still free, whatever the price did
    assert _cost(Market.SPOT, 3540, EndReason.SPOT_INTERRUPTION, prices) == 0.0
    # three changes, one before the start: 600 s at 1.2, 600 s at 0.6, 1200 s at 2.4 = 0.2 + 0.1 + 0.8 = $1.10
    steps = (PricePoint(T0 - 60, 1.2), PricePoint(T0 + 600, 0.6), PricePoint(T0 + 1200, 2.4), PricePoint(T0 + 9999, 100.0))
    assert integrate_price(steps, T0, T0 + 2400) == pytest.approx(1.10)


def test_the_price_in_effect_is_the_newest_point_at_or_before_the_moment() -> None:
    prices = (PricePoint(T0, 1.0), PricePoint(T0 + 10, 2.0))
    assert price_at(prices, T0 + 9.99) == 1.0
    assert price_at(prices, T0 + 10) == 2.0
    assert price_at(prices, T0 - 100) == 1.0  # before the series: its first price


def test_one_on_demand_instance_is_charged_its_minimum_once_for_all_its_work() -> None:
    assert one_instance_on_demand_usd(0, 20, 3.6) == pytest.approx(0.060)  # 20 s of work: the 60 s minimum
    assert one_instance_on_demand_usd(20, 30, 3.6) == 0.0  # 30 s more: still inside the minimum already charged
    assert one_instance_on_demand_usd(50, 20, 3.6) == pytest.approx(0.010)  # 20 s more: 10 s past it
    assert sum(one_instance_on_demand_usd(20.0 * n, 20, 3.6) for n in range(10)) == pytest.approx(0.200)  # ten shares: 200 s, one bill
    assert one_instance_on_demand_usd(0, 7200, 3.06) == pytest.approx(6.12)
    assert one_instance_on_demand_usd(0, 0, 3.6) == 0.0  # no work yet, nothing owed
