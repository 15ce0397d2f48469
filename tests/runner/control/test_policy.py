"""The market policies: each rule on hand-made situations, and the registry."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.provider import Market
from runner.control.policy import POLICIES, Greedy, Situation, UniformProgress, policy_named
from runner.control.simulate import Optimum, Trace, simulate
from runner.errors import SpecError

H = 3600.0
SPOT, ON_DEMAND = Market.SPOT, Market.ON_DEMAND


def situation(
    *,
    elapsed_h: float,
    done_h: float,
    running: Market | None = None,
    spot: bool = True,
    total_h: float = 10.0,
    deadline_h: float = 20.0,
    overhead_h: float = 0.5,
    interval_h: float = 0.25,
) -> Situation:
    return Situation(elapsed_h * H, done_h * H, total_h * H, deadline_h * H, overhead_h * H, running, spot, interval_h * H)


def test_the_registry_holds_the_four_policies_by_name() -> None:
    assert list(POLICIES) == ["auto", "greedy", "spot-only", "on-demand"]
    assert all(policy_named(name).name == name for name in POLICIES)


def test_an_unknown_policy_is_bad_input_listing_the_known_ones() -> None:
    with pytest.raises(SpecError) as raised:
        policy_named("cheapest")

    assert raised.value.exit_code == 2
    assert str(raised.value) == "unknown policy 'cheapest'; choose one of: auto, greedy, spot-only, on-demand"


def test_situation_derives_slack_and_progress_against_the_uniform_line() -> None:
    s = situation(elapsed_h=8, done_h=3)  # 10 h of work, 20 h deadline, 0.5 h overhead, 0.25 h interval

    assert s.remaining_work_s == 7 * H
    assert s.time_left_s == 12 * H
    assert s.slack_s == 5 * H  # 12 h left - 7 h of work
    assert s.ahead_of_uniform_s == -1 * H  # the line is at 10 * 8 / 20 = 4 h of work
    assert s.spare_slack_s == 4.25 * H  # 5 - 0.5 - 0.25
    assert not s.must_run_on_demand()


def test_the_safety_net_trips_when_one_more_interval_would_leave_less_than_a_restart() -> None:
    # slack = (20 - t) - (10 - done); spare = slack - 0.5 - 0.25
    assert not situation(elapsed_h=10.8, done_h=1.56).must_run_on_demand()  # slack 0.76, spare 0.01
    assert situation(elapsed_h=10.8, done_h=1.54).must_run_on_demand()  # slack 0.74, spare -0.01


def test_spot_only_never_buys_on_demand() -> None:
    spot_only = policy_named("spot-only")

    assert spot_only.choose(situation(elapsed_h=0, done_h=0, spot=True)) is SPOT
    assert spot_only.choose(situation(elapsed_h=19, done_h=0, spot=False)) is None  # the deadline is lost: still waits


def test_on_demand_always_buys_on_demand() -> None:
    assert policy_named("on-demand").choose(situation(elapsed_h=0, done_h=0, spot=True)) is ON_DEMAND


@pytest.mark.parametrize(
    ("elapsed_h", "done_h", "running", "spot", "expected"),
    [
        (0, 0, None, True, SPOT),  # spot whenever it can be had
        (5, 2, None, False, None),  # slack 7 h: wait
        (10.8, 1.54, None, False, ON_DEMAND),  # spare slack below zero: on-demand
        (10.8, 1.54, SPOT, True, ON_DEMAND),  # even off a running spot instance: losing it now would miss the deadline
        (5, 2, ON_DEMAND, True, ON_DEMAND),  # once on on-demand, greedy stays there
        (5, 2, ON_DEMAND, False, ON_DEMAND),
    ],
)
def test_greedy(elapsed_h: float, done_h: float, running: Market | None, spot: bool, expected: Market | None) -> None:
    assert Greedy().choose(situation(elapsed_h=elapsed_h, done_h=done_h, running=running, spot=spot)) is expected


@pytest.mark.parametrize(
    ("elapsed_h", "done_h", "running", "spot", "expected"),
    [
        # line at t: 10 * t / 20 h of work; overhead 0.5 h; keep band 10 overheads = 5 h ahead
        (4, 2, None, True, SPOT),  # on the line, spot available: spot
        (4, 1, None, True, SPOT),  # behind, but spot progresses as fast as on-demand: spot
        (4, 3, None, False, None),  # 1 h ahead, no spot: wait
        (4, 1.9, None, False, ON_DEMAND),  # 0.1 h behind, no spot: on-demand
        (4, 1.9, SPOT, False, ON_DEMAND),  # (a spot instance is never held without capacity, but the rule is the same)
        (4, 6.9, ON_DEMAND, False, ON_DEMAND),  # 4.9 h ahead on on-demand: inside the band, keep it
        (4, 7.1, ON_DEMAND, False, None),  # 5.1 h ahead: drop it and wait
        (4, 2, ON_DEMAND, True, SPOT),  # spare slack 7.25 h >= two overheads: back to spot
        (10, 1.2, ON_DEMAND, True, ON_DEMAND),  # slack 1.2, spare 0.45 < 0.5: a spot start could strand the job
        (10, 1.3, ON_DEMAND, True, ON_DEMAND),  # spare 0.55: pays the spot start, but leaves no margin above the net
        (10, 1.74, ON_DEMAND, True, ON_DEMAND),  # spare 0.99 < 1.0
        (10, 1.76, ON_DEMAND, True, SPOT),  # spare 1.01 >= 1.0: the start, and a restart of margin
        (10, 1.3, None, True, SPOT),  # the margin is the price of leaving on-demand only: holding nothing, spot
        (10.8, 1.54, SPOT, True, ON_DEMAND),  # the safety net before anything else
    ],
)
def test_auto(elapsed_h: float, done_h: float, running: Market | None, spot: bool, expected: Market | None) -> None:
    assert UniformProgress().choose(situation(elapsed_h=elapsed_h, done_h=done_h, running=running, spot=spot)) is expected


def test_auto_is_registered_with_its_tuned_settings() -> None:
    assert policy_named("auto") == UniformProgress(back_to_spot_spare_overheads=2.0, keep_on_demand_overheads=10.0)


def test_in_the_simulator_a_short_return_of_spot_no_longer_costs_two_restarts() -> None:
    """On on-demand with 20 min of spare slack when spot comes back for 20 min (restarts of 15 min): one restart, not three.

    Leaving on-demand pays the spot start out of that slack and ends on the net: the spot
    instance is lost, and on-demand starts again; with a restart of margin the job stays.
    """
    trace = Trace(300.0, np.array([0] * 12 + [1] * 4 + [0] * 200))  # 5 min ticks: spot from 1 h to 1 h 20
    result = simulate(
        trace,
        policy_named("auto"),
        work_s=8 * H,
        deadline_s=9 * H,
        restart_overhead_s=900.0,
        spot_price=1.0,
        on_demand_price=3.0,
        optimum=Optimum(None, False, None),
    )

    assert result.deadline_met
    assert (result.instance_starts, result.preemptions, result.spot_hours) == (1, 0, 0.0)
