"""The trace simulator and the optimum: hand-computed runs, a reference model, brute force, and the deadline promise."""

from __future__ import annotations

import itertools
import json
import math
import random
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from cloud.provider import Market
from runner.control import simulate as simulation
from runner.control.policy import POLICIES, MarketPolicy, Situation, policy_named
from runner.control.simulate import Optimum, Trace, load_trace, optimal_cost, simulate
from runner.errors import SpecError

H = 3600.0
SPOT, ON_DEMAND = Market.SPOT, Market.ON_DEMAND
NO_OPTIMUM = Optimum(None, False, None)  # passed where only the policy's run matters: no dynamic programme to wait for


def hourly(data: list[int], prices: list[float] | None = None) -> Trace:
    return Trace(H, np.array(data), None if prices is None else np.array(prices))


def run(
    trace: Trace,
    policy: str | MarketPolicy,
    *,
    work_h: float,
    deadline_h: float,
    overhead_h: float,
    spot: float = 1.0,
    on_demand: float = 4.0,
) -> simulation.SimulationResult:
    chosen = policy_named(policy) if isinstance(policy, str) else policy
    return simulate(
        trace,
        chosen,
        work_s=work_h * H,
        deadline_s=deadline_h * H,
        restart_overhead_s=overhead_h * H,
        spot_price=spot,
        on_demand_price=on_demand,
    )


# ------------------------------------------------------------------------------------- trace files


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "trace.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def test_a_trace_file_loads_with_its_prices(tmp_path: Path) -> None:
    trace = load_trace(write(tmp_path, {"metadata": {"gap_seconds": 195, "zone": "x"}, "data": [0, 1, 1], "prices": [0.5, 0.6, 0.7]}))

    assert trace.gap_s == 195 and trace.ticks == 3 and trace.duration_s == 585
    assert trace.available.tolist() == [False, True, True]
    assert trace.spot_prices is not None and trace.spot_prices.tolist() == [0.5, 0.6, 0.7]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not JSON"),
        ([0, 1], "expected an object with metadata.gap_seconds and data, got list"),
        ({"data": [1]}, "metadata.gap_seconds must be a positive number of seconds, got None"),
        ({"metadata": {"gap_seconds": 0}, "data": [1]}, "metadata.gap_seconds must be a positive number of seconds, got 0"),
        ({"metadata": {"gap_seconds": "60"}, "data": [1]}, "metadata.gap_seconds must be a positive number of seconds, got '60'"),
        ({"metadata": {"gap_seconds": 60}, "data": "0101"}, "data must be a list of 0/1 values, one per tick"),
        ({"metadata": {"gap_seconds": 60}, "data": []}, "data is empty"),
        ({"metadata": {"gap_seconds": 60}, "data": [1, 0, 2, 1]}, "data[2] is 2; expected 0 or 1"),
        ({"metadata": {"gap_seconds": 60}, "data": [1, True]}, "data[1] is True; expected 0 or 1"),
        (
            {"metadata": {"gap_seconds": 60}, "data": [1, 0], "prices": [1.0]},
            "prices must be a list of 2 spot prices (one per tick), got 1",
        ),
        (
            {"metadata": {"gap_seconds": 60}, "data": [1, 0], "prices": [1.0, -0.5]},
            "prices[1] is -0.5; expected a non-negative price in USD/h",
        ),
    ],
)
def test_a_bad_trace_file_is_one_spec_error_naming_the_file(tmp_path: Path, content: object, message: str) -> None:
    path = write(tmp_path, content)
    with pytest.raises(SpecError) as raised:
        load_trace(path)

    assert str(raised.value).startswith(f"trace {path}: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_missing_trace_file_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read it"):
        load_trace(tmp_path / "nope.json")


# ------------------------------------------------------------------------------ hand-computed runs
# One-hour ticks, 3 h of work, 0.5 h restart overhead, spot $1/h and on-demand $4/h unless said.
# The safety net needs spare slack = slack - 0.5 h (restart) - 1 h (interval) >= 0 to wait.

OUTAGE = [1, 1, 0, 0, 0, 1, 1, 1, 1, 1]


def test_spot_only_rides_spot_and_misses_the_deadline() -> None:
    result = run(hourly(OUTAGE), "spot-only", work_h=3, deadline_h=6, overhead_h=0.5)

    # t0 start spot: 0.5 overhead + 0.5 work ($1); t1: 1.5 done ($1); t2 lost (preemption), t2-t4 idle;
    # t5 new spot: 0.5 overhead + 0.5 work = 2.0 ($1); t6: 3.0 done at 7 h ($1)
    assert result.cost == pytest.approx(4.0)
    assert result.finish_hours == pytest.approx(7.0)
    assert not result.deadline_met
    assert (result.spot_hours, result.on_demand_hours, result.idle_hours) == pytest.approx((4.0, 0.0, 3.0))
    assert (result.preemptions, result.instance_starts) == (1, 2)


def test_greedy_waits_out_its_slack_then_runs_on_demand() -> None:
    result = run(hourly(OUTAGE), "greedy", work_h=3, deadline_h=6, overhead_h=0.5)

    # t0 spot ($1, 0.5 done), t1 spot ($1, 1.5 done); t2 lost: slack (6-2)-(3-1.5) = 2.5, spare 1.0: wait;
    # t3: slack 1.5, spare 0: on-demand, 0.5 overhead + 0.5 work ($4); t4: 1 h more, done at 5 h ($4)
    assert result.cost == pytest.approx(10.0)
    assert result.finish_hours == pytest.approx(5.0)
    assert result.deadline_met
    assert (result.spot_hours, result.on_demand_hours, result.idle_hours) == pytest.approx((2.0, 2.0, 1.0))
    assert (result.preemptions, result.instance_starts) == (1, 2)
    # the optimum: spot t0-t1 ($2), then 0.5 overhead + 1.5 h of work on-demand anywhere in t2-t5 ($8)
    assert result.optimal_cost == pytest.approx(10.0)
    assert result.cost_ratio == pytest.approx(1.0)


def test_on_demand_is_billed_pro_rata_in_the_tick_the_work_completes() -> None:
    result = run(hourly(OUTAGE), "on-demand", work_h=3, deadline_h=6, overhead_h=0.5)

    # t0: 0.5 overhead + 0.5 work, t1: 1.5, t2: 2.5 (3 x $4); t3: the last 0.5 h only ($2), done at 3.5 h
    assert result.cost == pytest.approx(14.0)
    assert result.on_demand_hours == pytest.approx(3.5)
    assert result.finish_hours == pytest.approx(3.5)
    assert result.cost_ratio == pytest.approx(1.4)


def test_auto_goes_on_demand_when_behind_the_line_and_back_to_spot() -> None:
    result = run(hourly([0, 0, 1, 1, 1, 1, 1, 1, 1, 1]), "auto", work_h=3, deadline_h=8, overhead_h=0.5)

    # line: 3 h x t / 8 h. t0: on the line, no spot: wait. t1: 0.375 h behind: on-demand, 0.5 overhead
    # + 0.5 work ($4). t2: spot back, slack (8-2)-(3-0.5) = 3.5, spare 2.0 >= one overhead: spot,
    # 0.5 overhead + 0.5 work = 1.0 ($1); t3: 2.0 ($1); t4: 3.0 done at 5 h ($1)
    assert result.cost == pytest.approx(7.0)
    assert result.finish_hours == pytest.approx(5.0)
    assert (result.spot_hours, result.on_demand_hours, result.idle_hours) == pytest.approx((3.0, 1.0, 1.0))
    assert (result.preemptions, result.instance_starts) == (0, 2)
    # the optimum waits for spot: start at t2, 0.5 overhead + 3 h of work at $1 = $3.5
    assert result.optimal_cost == pytest.approx(3.5)
    assert result.cost_ratio == pytest.approx(2.0)


def test_the_overhead_spans_ticks_and_starts_over_on_a_new_instance() -> None:
    result = run(hourly([1, 0, 1, 1, 1, 1, 1]), "spot-only", work_h=1, deadline_h=6, overhead_h=1.5)

    # t0: 1 h of the 1.5 h overhead; t1 lost; t2 new instance: 1 h of a fresh 1.5 h overhead;
    # t3: 0.5 overhead + 0.5 work; t4: the last 0.5 h of work, done at 4.5 h. Billed 1 + 1 + 1 + 0.5 h.
    assert result.cost == pytest.approx(3.5)
    assert result.finish_hours == pytest.approx(4.5)
    assert result.preemptions == 1


def test_the_traces_prices_replace_the_default_spot_price() -> None:
    result = run(hourly([1, 1, 1, 1], prices=[2.0, 3.0, 5.0, 7.0]), "spot-only", work_h=2, deadline_h=4, overhead_h=0.5)

    # t0: $2 (0.5 done), t1: $3 (1.5 done), t2: the last 0.5 h at $5 = $2.5
    assert result.cost == pytest.approx(7.5)
    assert result.finish_hours == pytest.approx(2.5)


def test_a_job_that_never_finishes_within_the_trace_has_no_finish() -> None:
    result = run(hourly([1, 0, 0, 0]), "spot-only", work_h=2, deadline_h=3, overhead_h=0)

    assert result.finish_hours is None
    assert not result.deadline_met
    assert result.cost == pytest.approx(1.0)
    assert result.to_json()["finish_hours"] is None


def test_to_json_is_one_flat_dict_with_the_promised_keys() -> None:
    data = run(hourly(OUTAGE), "auto", work_h=3, deadline_h=6, overhead_h=0.5).to_json()

    assert {"cost", "finish_hours", "deadline_met", "spot_hours", "on_demand_hours", "preemptions", "optimal_cost", "cost_ratio"} <= set(
        data
    )
    assert all(not isinstance(value, (dict, list)) for value in data.values())
    json.dumps(data, allow_nan=False)


@pytest.mark.parametrize(
    ("work_h", "deadline_h", "overhead_h", "ticks", "message"),
    [
        (3, 3.4, 0.5, 10, "a deadline shorter than the work"),
        (0, 3, 0.5, 10, "work must be positive"),
        (3, 6, 0.5, 5, "shorter than the deadline"),
    ],
)
def test_impossible_jobs_are_spec_errors(work_h: float, deadline_h: float, overhead_h: float, ticks: int, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        run(hourly([1] * ticks), "auto", work_h=work_h, deadline_h=deadline_h, overhead_h=overhead_h)


def test_negative_prices_are_spec_errors() -> None:
    with pytest.raises(SpecError, match="on-demand price must be a non-negative"):
        run(hourly([1] * 8), "auto", work_h=3, deadline_h=6, overhead_h=0.5, on_demand=-1)


# ------------------------------------------------------------------------- a reference model of the rules


def reference_run(
    available: list[int], prices: list[Fraction], gap: int, overhead: int, work: int, on_demand: Fraction, actions: tuple[str, ...]
) -> tuple[Fraction, int | None] | None:
    """Cost and finish time (s) of a fixed action per tick, from the module docstring's rules; None if it asks for missing spot."""
    held, overhead_left, done, cost = None, 0, 0, Fraction(0)
    for tick, action in enumerate(actions):
        if held == "spot" and not available[tick]:
            held = None
        if action == "spot" and not available[tick]:
            return None
        if action == "idle":
            held = None
            continue
        if action != held:
            held, overhead_left = action, overhead
        price = prices[tick] if action == "spot" else on_demand
        paid = min(gap, overhead_left)
        if done + gap - paid >= work:
            seconds = paid + work - done
            return cost + price * seconds / 3600, tick * gap + seconds
        overhead_left -= paid
        done += gap - paid
        cost += price * gap / 3600
    return cost, None


@dataclass
class Replay:
    """A 'policy' that plays a fixed action sequence (to check the simulator against the reference)."""

    gap: int
    actions: tuple[str, ...]
    name: str = "replay"
    seen: list[Situation] = field(default_factory=list)

    def choose(self, situation: Situation) -> Market | None:
        self.seen.append(situation)
        action = self.actions[round(situation.elapsed_s / self.gap)]
        return {"idle": None, "spot": SPOT, "on-demand": ON_DEMAND}[action]


def random_case(rng: random.Random, max_ticks: int) -> dict:
    gap = rng.choice([2, 3, 4, 6])
    overhead = rng.choice([0, 1, 2, 3, 5, 7])
    ticks = rng.randint(2, max_ticks)
    work = rng.randint(1, max(1, ticks * gap - overhead))
    deadline = rng.randint(work + overhead, max(work + overhead, ticks * gap))
    length = -(-deadline // gap) + rng.randint(0, 2)
    available = [int(rng.random() < rng.choice([0.3, 0.6, 0.9])) for _ in range(length)]
    priced = rng.random() < 0.5
    prices = [Fraction(rng.randint(0, 5)) for _ in range(length)] if priced else [Fraction(rng.choice([1, 2]))] * length
    return {
        "gap": gap,
        "overhead": overhead,
        "work": work,
        "deadline": deadline,
        "available": available,
        "prices": prices,
        "priced": priced,
        "on_demand": Fraction(rng.choice([3, 4, 6])),
    }


def trace_of(case: dict) -> Trace:
    return Trace(case["gap"], np.array(case["available"]), np.array([float(p) for p in case["prices"]]) if case["priced"] else None)


def sim_kwargs(case: dict) -> dict:
    return {
        "work_s": case["work"],
        "deadline_s": case["deadline"],
        "restart_overhead_s": case["overhead"],
        "spot_price": float(case["prices"][0]),
        "on_demand_price": float(case["on_demand"]),
    }


def test_the_simulator_follows_the_reference_model_on_random_action_sequences() -> None:
    rng = random.Random(7)
    for _ in range(300):
        case = random_case(rng, max_ticks=8)
        length = len(case["available"])
        actions = tuple(rng.choice(["idle", "on-demand"] + ["spot"] * case["available"][i]) for i in range(length))
        expected = reference_run(case["available"], case["prices"], case["gap"], case["overhead"], case["work"], case["on_demand"], actions)
        assert expected is not None

        result = simulate(trace_of(case), Replay(case["gap"], actions), **sim_kwargs(case), optimum=NO_OPTIMUM)

        assert result.cost == pytest.approx(float(expected[0]), abs=1e-9), (case, actions)
        assert result.finish_hours == (None if expected[1] is None else pytest.approx(expected[1] / 3600)), (case, actions)
        assert result.deadline_met == (expected[1] is not None and expected[1] <= case["deadline"])


def brute_force_optimum(case: dict) -> Fraction | None:
    ticks = -(-case["deadline"] // case["gap"])
    best = None
    for actions in itertools.product(["idle", "spot", "on-demand"], repeat=ticks):
        outcome = reference_run(case["available"], case["prices"], case["gap"], case["overhead"], case["work"], case["on_demand"], actions)
        if outcome is not None and outcome[1] is not None and outcome[1] <= case["deadline"]:
            best = outcome[0] if best is None else min(best, outcome[0])
    return best


def test_the_optimum_equals_brute_force_over_every_action_sequence() -> None:
    rng = random.Random(2024)
    checked = 0
    while checked < 150:
        case = random_case(rng, max_ticks=6)
        expected = brute_force_optimum(case)
        assert expected is not None  # on-demand from the start always works: deadline >= work + overhead

        optimum = optimal_cost(trace_of(case), **sim_kwargs(case))

        assert optimum.exact
        assert optimum.cost == pytest.approx(float(expected), abs=1e-9), case
        checked += 1


def test_a_coarsened_optimum_says_so_and_never_undercuts_the_exact_one(monkeypatch: pytest.MonkeyPatch) -> None:
    case = {
        "gap": 6,
        "overhead": 5,
        "work": 20,
        "deadline": 36,
        "available": [1, 0, 1, 1, 0, 1, 1],
        "priced": False,
        "prices": [Fraction(1)] * 7,
        "on_demand": Fraction(4),
    }
    exact = optimal_cost(trace_of(case), **sim_kwargs(case))  # step gcd(6, 5) = 1 s: 20 work steps
    monkeypatch.setattr(simulation, "_MAX_WORK_STEPS", 8)

    coarse = optimal_cost(trace_of(case), **sim_kwargs(case))

    assert exact.exact and exact.work_step_s == 1.0 and exact.cost == pytest.approx(float(brute_force_optimum(case)))
    assert not coarse.exact and coarse.work_step_s == 3.0  # the finest divisor of the gap with <= 8 steps
    assert coarse.cost is not None and coarse.cost >= exact.cost - 1e-12


def test_the_optimum_on_a_real_sized_case_is_exact_in_15_second_steps() -> None:
    rng = np.random.default_rng(0)
    trace = Trace(195, rng.random(1400) < 0.6)

    optimum = optimal_cost(trace, work_s=48 * H, deadline_s=70 * H, restart_overhead_s=720, spot_price=0.918, on_demand_price=3.06)

    assert optimum.exact and optimum.work_step_s == 15.0  # gcd(195, 720)
    assert optimum.cost is not None and 48 * 0.918 < optimum.cost < 48.2 * 3.06


# --------------------------------------------------------------------- no future, and the deadline promise


@dataclass
class Recording:
    policy: MarketPolicy
    name: str = "recording"
    log: list[tuple[Situation, Market | None]] = field(default_factory=list)

    def choose(self, situation: Situation) -> Market | None:
        choice = self.policy.choose(situation)
        self.log.append((situation, choice))
        return choice


@pytest.mark.parametrize("name", list(POLICIES))
def test_no_choice_depends_on_the_trace_after_it(name: str) -> None:
    rng = np.random.default_rng(11)
    for _ in range(30):
        ticks = 60
        first = rng.random(ticks) < 0.5
        cut = int(rng.integers(1, ticks - 1))
        second = first.copy()
        second[cut + 1 :] = rng.random(ticks - cut - 1) < 0.5  # same up to tick `cut`, anything after
        logs = []
        for data in (first, second):
            recorder = Recording(POLICIES[name])
            simulate(
                Trace(600, data),
                recorder,
                work_s=4 * H,
                deadline_s=8 * H,
                restart_overhead_s=900,
                spot_price=1,
                on_demand_price=3,
                optimum=NO_OPTIMUM,
            )
            logs.append([entry for entry in recorder.log if entry[0].elapsed_s <= cut * 600])

        assert logs[0] == logs[1]


def markov(rng: np.random.Generator, ticks: int, availability: float, mean_run: float) -> np.ndarray:
    leave = (1 / mean_run, min(1.0, 1 / max(1.0, mean_run * (1 - availability) / max(availability, 1e-9))))
    state, data = int(rng.random() >= availability), np.empty(ticks, dtype=bool)
    for tick in range(ticks):
        data[tick] = state == 0
        if rng.random() < leave[state]:
            state = 1 - state
    return data


@pytest.mark.parametrize("name", ["auto", "greedy", "on-demand"])
def test_every_feasible_deadline_is_met(name: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(150):
        gap = float(rng.choice([60, 195, 300, 900]))
        overhead = float(rng.choice([0, 60, 200, 720, 1800]))
        work = float(rng.uniform(0.5, 20)) * H
        deadline = work + overhead + float(rng.choice([0, 0.01, 0.2, 1, 5])) * work  # from no slack to plenty
        ticks = int(math.ceil(deadline / gap)) + 5
        data = markov(rng, ticks, float(rng.choice([0.05, 0.3, 0.6, 0.95])), float(rng.choice([1, 3, 20])))

        result = simulate(
            Trace(gap, data),
            POLICIES[name],
            work_s=work,
            deadline_s=deadline,
            restart_overhead_s=overhead,
            spot_price=1,
            on_demand_price=3,
            optimum=NO_OPTIMUM,
        )

        assert result.deadline_met, (gap, overhead, work, deadline)
