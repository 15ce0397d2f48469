"""Replay a market policy on a spot-availability trace, and the omniscient optimum on the same trace.

The model (tests pin every rule):

- Time moves in ticks of ``gap_seconds``; tick ``i`` covers ``[i * gap, (i + 1) * gap)`` from the
  job's start. ``data[i]`` is 1 when spot capacity can be had during tick ``i``.
- The job holds at most one instance. A spot instance held into a tick whose value is 0 is lost at
  the tick's start (one preemption), before the policy is asked.
- At the start of each tick the policy sees a :class:`~runner.control.policy.Situation` (``spot_available``
  is this tick's value, ``decision_interval_s`` the gap) and chooses spot, on-demand or nothing.
  Nothing releases the instance held. A request for spot in a tick without capacity gets nothing.
- Choosing the market already held keeps the instance. Choosing another market, or any market
  while holding nothing, starts an instance: its first ``restart_overhead`` seconds are billed
  without progress. The overhead may span several ticks and carries on across ticks while the same
  instance is kept; a new instance starts it again from the full amount.
- Every second an instance is held is billed at its market's price: the tick's spot price
  (``prices[i]`` when the trace has prices, else ``spot_price``) or ``on_demand_price``, in USD/h.
  Billing stops the moment the work completes, mid-tick if need be (that tick is billed pro rata).
- If the work is not done by the deadline the job carries on, same policy, until it is done or the
  trace ends; ``deadline_met`` is false, and ``finish_hours`` is None if the trace ended first.

The optimum (:func:`optimal_cost`) is the cheapest way to finish by the deadline under the same
rules, choosing every tick's action knowing the whole trace: a dynamic programme over ticks,
backwards, with the work done as a vector. Every progress a tick can make is a multiple of
``gcd(gap, overhead)`` (whole milliseconds), so that is the work step, and the result is exact.
When that step would make the vector too long the overhead is rounded up to a coarser step that
divides the gap: the figure is then an upper bound (``exact`` false), never lower than the truth.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from checkpoints.durations import format_duration
from cloud.provider import Market
from runner.control.policy import MarketPolicy, Situation
from runner.errors import SpecError

_TOLERANCE_S = 1e-6
_MAX_WORK_STEPS = 40_000  # length of the optimum's work vector before it is coarsened
_MAX_OPTIMUM_CELLS = 400_000_000  # work steps x ticks x instance ages: beyond, no optimum is computed


@dataclass(frozen=True, eq=False)
class Trace:
    """Spot capacity per tick (1 = available), optionally the spot price per tick in USD/h."""

    gap_s: float
    available: np.ndarray
    spot_prices: np.ndarray | None = None
    name: str = "trace"

    def __post_init__(self) -> None:
        available = np.asarray(self.available, dtype=bool).copy()
        available.setflags(write=False)
        object.__setattr__(self, "available", available)
        if self.spot_prices is not None:
            prices = np.asarray(self.spot_prices, dtype=float).copy()
            if prices.shape != available.shape:
                raise SpecError(f"{self.name}: {prices.size} prices for {available.size} ticks; expected one per tick")
            prices.setflags(write=False)
            object.__setattr__(self, "spot_prices", prices)
        if not self.gap_s > 0:
            raise SpecError(f"{self.name}: gap_seconds must be positive, got {self.gap_s!r}")

    @property
    def ticks(self) -> int:
        """Number of ticks."""
        return int(self.available.size)

    @property
    def duration_s(self) -> float:
        """Time the trace covers."""
        return self.ticks * self.gap_s

    def window(self, start_tick: int, ticks: int | None = None) -> Trace:
        """The trace from tick ``start_tick`` on (``ticks`` of them, or to the end): a job started later."""
        end = None if ticks is None else start_tick + ticks
        prices = None if self.spot_prices is None else self.spot_prices[start_tick:end]
        return Trace(self.gap_s, self.available[start_tick:end], prices, f"{self.name}@{start_tick}")

    def spot_price_at(self, tick: int, default: float) -> float:
        """Spot price of one tick: the trace's own if it has prices, else ``default``."""
        return default if self.spot_prices is None else float(self.spot_prices[tick])


def load_trace(path: str | Path) -> Trace:
    """Read a trace file ``{"metadata": {"gap_seconds": N}, "data": [0, 1, ...], "prices": [...]}``; SpecError naming what is wrong."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except OSError as error:
        raise SpecError(f"trace {path}: cannot read it ({error.strerror or error})") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SpecError(f"trace {path}: not JSON ({error})") from error
    if not isinstance(raw, dict):
        raise SpecError(f"trace {path}: expected an object with metadata.gap_seconds and data, got {type(raw).__name__}")
    metadata = raw.get("metadata")
    gap = metadata.get("gap_seconds") if isinstance(metadata, dict) else None
    if isinstance(gap, bool) or not isinstance(gap, (int, float)) or not math.isfinite(gap) or gap <= 0:
        raise SpecError(f"trace {path}: metadata.gap_seconds must be a positive number of seconds, got {gap!r}")
    data = raw.get("data")
    if not isinstance(data, list):
        raise SpecError(f"trace {path}: data must be a list of 0/1 values, one per tick")
    if not data:
        raise SpecError(f"trace {path}: data is empty; expected one 0/1 value per tick")
    for index, value in enumerate(data):
        if type(value) is not int or value not in (0, 1):
            raise SpecError(f"trace {path}: data[{index}] is {value!r}; expected 0 or 1")
    prices = raw.get("prices")
    if prices is not None:
        if not isinstance(prices, list) or len(prices) != len(data):
            size = len(prices) if isinstance(prices, list) else type(prices).__name__
            raise SpecError(f"trace {path}: prices must be a list of {len(data)} spot prices (one per tick), got {size}")
        for index, value in enumerate(prices):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise SpecError(f"trace {path}: prices[{index}] is {value!r}; expected a non-negative price in USD/h")
    return Trace(float(gap), np.array(data, dtype=bool), None if prices is None else np.array(prices, dtype=float), path.stem)


@dataclass(frozen=True)
class SimulatedJob:
    """What is simulated: the work, its deadline, the restart overhead and the prices (USD/h)."""

    work_s: float
    deadline_s: float
    restart_overhead_s: float
    spot_price: float
    on_demand_price: float

    def check(self, trace: Trace) -> None:
        """SpecError for a job no simulation can answer: no work, negative prices, an impossible deadline, a short trace."""
        if not self.work_s > 0:
            raise SpecError(f"work must be positive, got {format_duration(self.work_s)}")
        if self.restart_overhead_s < 0:
            raise SpecError(f"restart overhead must not be negative, got {self.restart_overhead_s} s")
        for label, price in (("spot price", self.spot_price), ("on-demand price", self.on_demand_price)):
            if not (math.isfinite(price) and price >= 0):
                raise SpecError(f"{label} must be a non-negative number of USD/h, got {price}")
        if self.deadline_s < self.work_s + self.restart_overhead_s - _TOLERANCE_S:
            raise SpecError(
                f"a deadline shorter than the work: {format_duration(self.deadline_s)} < {format_duration(self.work_s)} of work "
                f"+ {format_duration(self.restart_overhead_s)} restart overhead, not even on-demand from the start meets it"
            )
        if trace.duration_s < self.deadline_s - _TOLERANCE_S:
            raise SpecError(
                f"trace {trace.name} covers {format_duration(trace.duration_s)}, shorter than the deadline "
                f"{format_duration(self.deadline_s)}; use a longer trace or a later start"
            )


@dataclass(frozen=True)
class Optimum:
    """The omniscient optimum: least cost (USD) to finish by the deadline, None when too large to compute.

    ``exact`` is false when the work step was coarsened (the cost is then an upper bound);
    ``work_step_s`` is the step the work was counted in.
    """

    cost: float | None
    exact: bool
    work_step_s: float | None


@dataclass(frozen=True)
class SimulationResult:
    """What one policy did on one trace, next to the optimum: USD, hours billed per market, hours from the job's start."""

    policy: str
    cost: float
    finish_hours: float | None
    deadline_met: bool
    spot_hours: float
    on_demand_hours: float
    idle_hours: float
    preemptions: int
    instance_starts: int
    optimal_cost: float | None
    optimum_exact: bool

    @property
    def cost_ratio(self) -> float | None:
        """Cost over the optimum's (1.0 = as cheap as knowing the future); None without an optimum."""
        if self.optimal_cost is None:
            return None
        if self.optimal_cost == 0:
            return 1.0 if self.cost == 0 else None  # undefined: nothing to compare with
        return self.cost / self.optimal_cost

    def to_json(self) -> dict[str, Any]:
        """One flat dict for ``--json`` and benchmark files."""
        return {
            "policy": self.policy,
            "cost": self.cost,
            "finish_hours": self.finish_hours,
            "deadline_met": self.deadline_met,
            "spot_hours": self.spot_hours,
            "on_demand_hours": self.on_demand_hours,
            "idle_hours": self.idle_hours,
            "preemptions": self.preemptions,
            "instance_starts": self.instance_starts,
            "optimal_cost": self.optimal_cost,
            "optimum_exact": self.optimum_exact,
            "cost_ratio": self.cost_ratio,
        }


def simulate(
    trace: Trace,
    policy: MarketPolicy,
    *,
    work_s: float,
    deadline_s: float,
    restart_overhead_s: float,
    spot_price: float,
    on_demand_price: float,
    optimum: Optimum | None = None,
) -> SimulationResult:
    """Run ``policy`` tick by tick under the module's model; ``optimum`` may be passed in when already computed."""
    job = SimulatedJob(work_s, deadline_s, restart_overhead_s, spot_price, on_demand_price)
    job.check(trace)
    if optimum is None:
        optimum = optimal_cost(
            trace,
            work_s=work_s,
            deadline_s=deadline_s,
            restart_overhead_s=restart_overhead_s,
            spot_price=spot_price,
            on_demand_price=on_demand_price,
        )
    gap = trace.gap_s
    held: Market | None = None
    overhead_left = 0.0
    work = 0.0
    cost = 0.0
    billed = {Market.SPOT: 0.0, Market.ON_DEMAND: 0.0}
    idle_s = 0.0
    preemptions = starts = 0
    finish: float | None = None
    for tick in range(trace.ticks):
        now = tick * gap
        available = bool(trace.available[tick])
        if held is Market.SPOT and not available:
            preemptions += 1
            held = None
        choice = policy.choose(Situation(now, work, work_s, deadline_s, restart_overhead_s, held, available, gap))
        if choice is Market.SPOT and not available:
            choice = None  # asked for capacity that is not there: nothing to hold
        if choice is None:
            held = None
            idle_s += gap
            continue
        if choice is not held:
            held, overhead_left = choice, restart_overhead_s
            starts += 1
        price = trace.spot_price_at(tick, spot_price) if held is Market.SPOT else on_demand_price
        overhead_part = min(gap, overhead_left)
        progress = gap - overhead_part
        if work + progress >= work_s - _TOLERANCE_S:  # done within this tick: bill up to that moment only
            seconds = overhead_part + (work_s - work)
            finish = now + seconds
        else:
            seconds = gap
        cost += price * seconds / 3600
        billed[held] += seconds
        if finish is not None:
            work = work_s
            break
        overhead_left -= overhead_part
        work += progress
    return SimulationResult(
        policy=policy.name,
        cost=cost,
        finish_hours=None if finish is None else finish / 3600,
        deadline_met=finish is not None and finish <= deadline_s + _TOLERANCE_S,
        spot_hours=billed[Market.SPOT] / 3600,
        on_demand_hours=billed[Market.ON_DEMAND] / 3600,
        idle_hours=idle_s / 3600,
        preemptions=preemptions,
        instance_starts=starts,
        optimal_cost=optimum.cost,
        optimum_exact=optimum.exact,
    )


def optimal_cost(
    trace: Trace,
    *,
    work_s: float,
    deadline_s: float,
    restart_overhead_s: float,
    spot_price: float,
    on_demand_price: float,
) -> Optimum:
    """The least cost to finish ``work_s`` by ``deadline_s`` knowing the whole trace (see the module docstring)."""
    SimulatedJob(work_s, deadline_s, restart_overhead_s, spot_price, on_demand_price).check(trace)
    gap, overhead = _ms(trace.gap_s), _ms(restart_overhead_s)
    work, deadline = _ms(work_s), _ms(deadline_s)
    step = math.gcd(gap, overhead)  # gcd(gap, 0) = gap
    exact = True
    if -(-work // step) > _MAX_WORK_STEPS:
        exact = False
        step = _coarser_step(gap, work)
        overhead = -(-overhead // step) * step  # rounded up: more overhead can only cost more
        if work + overhead > deadline:
            return Optimum(None, False, step / 1000)
    ticks = -(-deadline // gap)  # ticks that start before the deadline
    ages = max(1, -(-overhead // gap))  # ticks after which an instance has paid its overhead
    steps = -(-work // step)  # work done is j * step for j < steps; j >= steps means finished
    if steps * ticks * (ages + 1) > _MAX_OPTIMUM_CELLS:
        return Optimum(None, False, None)
    cost = _optimum_dp(trace, gap, overhead, work, deadline, step, ticks, ages, steps, spot_price, on_demand_price)
    return Optimum(None if math.isinf(cost) else cost, exact, step / 1000)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _coarser_step(gap: int, work: int) -> int:
    """The finest divisor of the gap that keeps the work vector within bounds (the gap itself at worst)."""
    for divisions in range(gap, 0, -1):
        if gap % divisions == 0 and -(-work // (gap // divisions)) <= _MAX_WORK_STEPS:
            return gap // divisions
    return gap


def _optimum_dp(
    trace: Trace,
    gap: int,
    overhead: int,
    work: int,
    deadline: int,
    step: int,
    ticks: int,
    ages: int,
    steps: int,
    spot_price: float,
    on_demand_price: float,
) -> float:
    """Backward induction. State at a tick's start: work done (vector index j) and the instance held.

    The instance held is nothing, or (market, age) with age = ticks it has run, 1..ages (capped once
    its overhead is paid). Running an instance of age a for a tick pays ``min(gap, overhead - a*gap)``
    of overhead and makes the rest of the tick progress; a new instance has age 0.
    """
    per_ms = 1 / 3_600_000
    done = np.arange(steps, dtype=np.int64) * step  # work done, ms
    overhead_part = [min(gap, max(0, overhead - age * gap)) for age in range(ages + 1)]
    infinite = np.full(steps, np.inf)
    nothing = infinite.copy()  # value at the next tick's start, holding nothing
    held = {market: [infinite] * (ages + 1) for market in Market}  # held[market][age], age 1..ages used

    def run(market: Market, age: int, price: float, start: int, later: list[np.ndarray]) -> np.ndarray:
        """Cost from now on of running ``market`` at ``age`` this tick, then acting optimally."""
        part = overhead_part[age]
        shift = (gap - part) // step
        value = np.empty(steps)
        keep = max(0, steps - shift)  # indices that do not finish in this tick
        value[:keep] = price * gap * per_ms + later[min(age + 1, ages)][shift : shift + keep]
        billed = part + work - done[keep:]
        value[keep:] = np.where(start + billed <= deadline, price * billed * per_ms, np.inf)
        return value

    for tick in range(ticks - 1, -1, -1):
        start = tick * gap
        available = bool(trace.available[tick])
        options = {Market.ON_DEMAND: on_demand_price}
        if available:
            options[Market.SPOT] = trace.spot_price_at(tick, spot_price)
        fresh = {market: run(market, 0, price, start, held[market]) for market, price in options.items()}
        best_fresh = np.minimum.reduce([nothing, *fresh.values()])
        new_held: dict[Market, list[np.ndarray]] = {}
        for market in Market:
            others = [nothing] + [value for other, value in fresh.items() if other is not market]
            switch = np.minimum.reduce(others)
            if market in options:
                new_held[market] = [infinite] + [
                    np.minimum(switch, run(market, age, options[market], start, held[market])) for age in range(1, ages + 1)
                ]
            else:  # a spot instance held into a tick without capacity is lost: as if holding nothing
                new_held[market] = [infinite] + [best_fresh] * ages
        nothing, held = best_fresh, new_held
    return float(nothing[0])
