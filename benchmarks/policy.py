"""How close each market policy gets to the omniscient optimum, and whether it meets the deadline.

Every policy of ``runner.control.policy`` is simulated (``runner.control.simulate``) on two sets of traces:

- ``synthetic-markov``: two-state Markov chains (seeded), one tick = 120 s, at spot availability
  20, 50, 80 and 95 % and mean runs of availability of 1, 4 and 16 h (the runs without capacity
  follow from the availability), so run lengths are geometric: many short, few long.
- ``synthetic-lognormal``: the same availabilities and means, with run lengths drawn from a
  lognormal (sigma 1.5): heavy-tailed, as measured spot capacity tends to be (most runs much
  shorter than the mean, a few very long). The auto policy's settings were chosen on these two.
- the real traces under ``--traces-dir`` (default ``../shared/traces`` from the repository root,
  one folder per set), each started every 5 days for as long as the longest deadline fits.

The job: 48 h of work, deadlines 52 h (4 h of slack) and 70 h (22 h), 0.2 h restart overhead,
spot 0.918 and on-demand 3.06 USD/h (p3.2xlarge) unless a trace has its own prices. Reported per
trace set, deadline and policy: deadlines met, and the cost over the optimum's (mean, p90).

    .venv/bin/python benchmarks/policy.py            # everything, ~1-2 min on 2 cores
    .venv/bin/python benchmarks/policy.py --quick    # a few seconds

Prints a table and the goals, and writes benchmarks/results/policy.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from runner.control.policy import POLICIES, MarketPolicy
from runner.control.simulate import Trace, load_trace, optimal_cost, simulate

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "policy.json"
DEFAULT_TRACES = REPO.parent / "shared" / "traces"
HOUR = 3600.0
WORK_H = 48.0
DEADLINES_H = (52.0, 70.0)
OVERHEAD_H = 0.2
SPOT_PRICE, ON_DEMAND_PRICE = 0.918, 3.06
OFFSET_DAYS = 5.0
SYNTHETIC_GAP_S = 120.0
SYNTHETIC_HOURS = 240.0  # beyond the deadline, so late finishes are still seen
AVAILABILITIES = (0.2, 0.5, 0.8, 0.95)
MEAN_RUNS_H = (1.0, 4.0, 16.0)
GOAL_RATIO = 1.10


def markov_trace(
    availability: float, mean_run_h: float, seed: int, *, gap_s: float = SYNTHETIC_GAP_S, hours: float = SYNTHETIC_HOURS
) -> Trace:
    """Capacity as a two-state Markov chain: runs with capacity last ``mean_run_h`` on average, the stationary share is ``availability``."""
    rng = np.random.default_rng(seed)
    ticks = int(hours * HOUR / gap_s)
    mean_on = mean_run_h * HOUR / gap_s  # ticks
    mean_off = max(1.0, mean_on * (1 - availability) / availability)
    leave = (1 / mean_on, 1 / mean_off)  # chance per tick to leave state on (index 0) / off (index 1)
    state = 0 if rng.random() < availability else 1
    data = np.empty(ticks, dtype=bool)
    draws = rng.random(ticks)
    for tick in range(ticks):
        data[tick] = state == 0
        if draws[tick] < leave[state]:
            state = 1 - state
    return Trace(gap_s, data, name=f"a{round(availability * 100)}-run{mean_run_h:g}h-s{seed}")


def lognormal_trace(
    availability: float, mean_run_h: float, seed: int, *, sigma: float = 1.5, gap_s: float = SYNTHETIC_GAP_S, hours: float = SYNTHETIC_HOURS
) -> Trace:
    """Capacity in alternating runs of lognormal length: mean ``mean_run_h`` with capacity, the share ``availability``."""
    rng = np.random.default_rng(seed)
    ticks = int(hours * HOUR / gap_s)
    mean_on = mean_run_h * HOUR / gap_s
    mean_off = max(1.0, mean_on * (1 - availability) / availability)
    data = np.empty(ticks, dtype=bool)
    state, tick = bool(rng.random() < availability), 0
    while tick < ticks:
        mean = mean_on if state else mean_off
        length = max(1, int(round(rng.lognormal(np.log(mean) - sigma**2 / 2, sigma))))
        data[tick : tick + length] = state
        tick += length
        state = not state
    return Trace(gap_s, data, name=f"ln-a{round(availability * 100)}-run{mean_run_h:g}h-s{seed}")


def synthetic_traces(seeds: int) -> list[tuple[str, Trace]]:
    """Every family x availability x mean run x seed."""
    traces = []
    for a_index, availability in enumerate(AVAILABILITIES):
        for r_index, run_h in enumerate(MEAN_RUNS_H):
            for seed in range(seeds):
                number = 1000 * a_index + 100 * r_index + seed
                traces.append(("synthetic-markov", markov_trace(availability, run_h, seed=number)))
                traces.append(("synthetic-lognormal", lognormal_trace(availability, run_h, seed=50_000 + number)))
    return traces


def real_traces(traces_dir: Path, offset_days: float, longest_deadline_h: float, limit: int | None = None) -> list[tuple[str, Trace]]:
    """Windows of every trace under ``traces_dir`` (one folder per set), starting every ``offset_days``."""
    windows = []
    for path in sorted(traces_dir.glob("*/*.json"))[:limit]:
        trace = load_trace(path)
        step = int(round(offset_days * 24 * HOUR / trace.gap_s))
        needed = int(np.ceil(longest_deadline_h * HOUR / trace.gap_s))
        for start in range(0, trace.ticks - needed + 1, step):
            windows.append((path.parent.name, trace.window(start)))
    return windows


def run_case(case: tuple[str, Trace, float, list[MarketPolicy]]) -> list[dict[str, Any]]:
    """The optimum once, then every policy, on one trace and deadline."""
    trace_set, trace, deadline_h, policies = case
    job = {
        "work_s": WORK_H * HOUR,
        "deadline_s": deadline_h * HOUR,
        "restart_overhead_s": OVERHEAD_H * HOUR,
        "spot_price": SPOT_PRICE,
        "on_demand_price": ON_DEMAND_PRICE,
    }
    optimum = optimal_cost(trace, **job)
    availability = float(trace.available[: int(np.ceil(deadline_h * HOUR / trace.gap_s))].mean())
    rows = []
    for policy in policies:
        result = simulate(trace, policy, **job, optimum=optimum)
        rows.append(
            {"set": trace_set, "trace": trace.name, "deadline_h": deadline_h, "availability": round(availability, 4), **result.to_json()}
        )
    return rows


def run_all(traces: Iterable[tuple[str, Trace]], policies: list[MarketPolicy], workers: int) -> list[dict[str, Any]]:
    """Every trace x deadline x policy, in ``workers`` processes."""
    cases = [(trace_set, trace, deadline_h, policies) for trace_set, trace in traces for deadline_h in DEADLINES_H]
    if workers <= 1:
        return [row for case in cases for row in run_case(case)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [row for rows in pool.imap(run_case, cases, chunksize=4) for row in rows]


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per trace set, deadline (and all deadlines together) and policy: deadlines met, cost ratio mean and p90."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        for deadline in (f"{row['deadline_h']:g}h", "all"):
            groups.setdefault((row["set"], deadline, row["policy"]), []).append(row)
    summary = []
    for (trace_set, deadline, policy), members in groups.items():
        ratios = np.array([r["cost_ratio"] for r in members if r["cost_ratio"] is not None])
        met = sum(r["deadline_met"] for r in members)
        summary.append(
            {
                "set": trace_set,
                "deadline": deadline,
                "policy": policy,
                "cases": len(members),
                "met": met,
                "met_pct": round(100 * met / len(members), 1),
                "ratio_mean": round(float(ratios.mean()), 4) if ratios.size else None,
                "ratio_p90": round(float(np.percentile(ratios, 90)), 4) if ratios.size else None,
                "ratio_max": round(float(ratios.max()), 4) if ratios.size else None,
                "optimum_exact": all(r["optimum_exact"] for r in members),
            }
        )
    return summary


def goals(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """auto: every deadline met; mean ratio <= 1.10; strictly cheaper than greedy on average. Per trace set and deadline."""
    index = {(s["set"], s["deadline"], s["policy"]): s for s in summary}
    checked = []
    for (trace_set, deadline, policy), auto in sorted(index.items()):
        if policy != "auto":
            continue
        greedy = index.get((trace_set, deadline, "greedy"))
        where = f"{trace_set} {deadline}"
        checked.append(
            {"where": where, "goal": "auto meets 100 % of deadlines", "value": auto["met_pct"], "ok": auto["met"] == auto["cases"]}
        )
        checked.append(
            {
                "where": where,
                "goal": f"auto mean cost ratio <= {GOAL_RATIO}",
                "value": auto["ratio_mean"],
                "ok": auto["ratio_mean"] is not None and auto["ratio_mean"] <= GOAL_RATIO,
            }
        )
        if greedy is not None:
            checked.append(
                {
                    "where": where,
                    "goal": "auto mean ratio < greedy's",
                    "value": f"{auto['ratio_mean']} vs {greedy['ratio_mean']}",
                    "ok": auto["ratio_mean"] < greedy["ratio_mean"],
                }
            )
    return checked


def print_summary(summary: list[dict[str, Any]]) -> None:
    header = f"{'set':24} {'deadline':8} {'policy':10} {'cases':>5} {'met':>11} {'mean ratio':>10} {'p90 ratio':>9} {'max':>6}"
    print(header)
    print("-" * len(header))
    order = {name: index for index, name in enumerate(POLICIES)}
    for s in sorted(summary, key=lambda s: (s["set"], s["deadline"] == "all", s["deadline"], order.get(s["policy"], 99))):
        met = f"{s['met']} ({s['met_pct']:g}%)"
        print(
            f"{s['set']:24} {s['deadline']:8} {s['policy']:10} {s['cases']:5d} {met:>11} {s['ratio_mean']:10.3f} {s['ratio_p90']:9.3f} {s['ratio_max']:6.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces-dir", type=Path, default=DEFAULT_TRACES, help="folders of real traces (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one seed per synthetic setting, two real traces")
    parser.add_argument("--seeds", type=int, default=5, help="synthetic traces per family x availability x run length")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--output", type=Path, default=None, help=f"default: {RESULTS} (policy_quick.json with --quick)")
    args = parser.parse_args()
    started = time.time()
    policies = list(POLICIES.values())
    traces = synthetic_traces(1 if args.quick else args.seeds)
    if args.traces_dir.is_dir():
        traces += real_traces(args.traces_dir, OFFSET_DAYS * (3 if args.quick else 1), max(DEADLINES_H), limit=2 if args.quick else None)
    else:
        print(f"no real traces: {args.traces_dir} is not a folder (pass --traces-dir); synthetic traces only", file=sys.stderr)
    print(f"{len(traces)} traces x {len(DEADLINES_H)} deadlines x {len(policies)} policies, {args.workers} worker(s) ...", flush=True)
    rows = run_all(traces, policies, args.workers)
    summary = summarise(rows)
    print()
    print_summary(summary)
    checked = goals(summary)
    print()
    for g in checked:
        print(f"{'PASS' if g['ok'] else 'GAP ':4}  {g['where']:32} {g['goal']:34} {g['value']}")
    output = args.output or (RESULTS.with_name("policy_quick.json") if args.quick else RESULTS)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpu_cores": os.cpu_count(), "python": platform.python_version()},
        "total_wall_s": round(time.time() - started, 1),
        "job": {
            "work_h": WORK_H,
            "deadlines_h": list(DEADLINES_H),
            "restart_overhead_h": OVERHEAD_H,
            "spot_price": SPOT_PRICE,
            "on_demand_price": ON_DEMAND_PRICE,
        },
        "synthetic": {
            "families": ["markov", "lognormal (sigma 1.5)"],
            "gap_s": SYNTHETIC_GAP_S,
            "hours": SYNTHETIC_HOURS,
            "availabilities": list(AVAILABILITIES),
            "mean_runs_h": list(MEAN_RUNS_H),
            "seeds": 1 if args.quick else args.seeds,
        },
        "real": {"traces_dir": str(args.traces_dir), "offset_days": OFFSET_DAYS * (3 if args.quick else 1)},
        "summary": summary,
        "goals": checked,
        "cases": rows,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {output} in {result['total_wall_s']} s")


if __name__ == "__main__":
    main()
