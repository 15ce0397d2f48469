"""``spotrun simulate``: replay a market policy on a spot-availability trace and compare it with the optimum.

A thin command over ``runner.control.simulate``: every input is checked first, each bad one named by its
option in a one-line SpecError (exit 2). ``--json`` prints one JSON object and nothing else.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from checkpoints.durations import format_duration, parse_duration
from runner.control.policy import POLICIES, policy_named
from runner.control.simulate import SimulationResult, load_trace
from runner.control.simulate import simulate as simulate_policy
from runner.errors import SpecError

out = Console()


def simulate(
    trace: Annotated[
        Path,
        typer.Option(
            "--trace",
            help="Trace (JSON): metadata.gap_seconds, data (one 0/1 per tick, 1 = spot available), optional prices (spot USD/h per tick).",
        ),
    ],
    work: Annotated[str, typer.Option("--work", help="Useful running time the job needs, e.g. 48h.")],
    deadline: Annotated[str, typer.Option("--deadline", help="Deadline counted from the job's start, e.g. 60h.")],
    restart_overhead: Annotated[
        str, typer.Option("--restart-overhead", help="Billed time without progress each time an instance starts, e.g. 12m.")
    ],
    on_demand_price: Annotated[float, typer.Option("--on-demand-price", help="On-demand price, USD/h.")],
    spot_price: Annotated[
        float | None, typer.Option("--spot-price", help="Spot price, USD/h, for traces without their own prices.")
    ] = None,
    policy: Annotated[str, typer.Option("--policy", help=f"Market policy: {', '.join(POLICIES)}.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts instead of a table.")] = False,
) -> None:
    """Replay a market policy on a spot-availability trace: cost, deadline, and the omniscient optimum."""
    chosen = policy_named(policy)
    work_s, deadline_s, overhead_s = (
        _duration(name, value) for name, value in (("--work", work), ("--deadline", deadline), ("--restart-overhead", restart_overhead))
    )
    if work_s <= 0:
        raise SpecError(f"--work must be more than zero, got {work!r}")
    for name, price in (("--on-demand-price", on_demand_price), ("--spot-price", spot_price)):
        if price is not None and not (math.isfinite(price) and price >= 0):
            raise SpecError(f"{name} must be a non-negative price in USD/h, got {price}")
    if deadline_s < work_s + overhead_s:
        raise SpecError(
            f"--deadline {deadline} is shorter than --work {work} plus one --restart-overhead {restart_overhead}: "
            "not even on-demand from the start meets it"
        )
    loaded = load_trace(trace)
    if loaded.spot_prices is None and spot_price is None:
        raise SpecError(f"--spot-price is needed: trace {trace} has no prices")
    result = simulate_policy(
        loaded,
        chosen,
        work_s=work_s,
        deadline_s=deadline_s,
        restart_overhead_s=overhead_s,
        spot_price=spot_price or 0.0,
        on_demand_price=on_demand_price,
    )
    if as_json:
        print(json.dumps({"trace": str(trace), **result.to_json()}))
        return
    out.print(
        _table(
            result,
            f"{chosen.name} on {trace.name}: {format_duration(work_s)} of work, deadline "
            f"{format_duration(deadline_s)}, restart overhead {format_duration(overhead_s)}",
        )
    )


def _duration(option: str, value: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as error:
        raise SpecError(f"{option}: {error}") from None


def _table(result: SimulationResult, title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    optimum = "-" if result.optimal_cost is None else f"${result.optimal_cost:,.2f}" + ("" if result.optimum_exact else " (upper bound)")
    ratio = result.cost_ratio
    finish = "not within the trace" if result.finish_hours is None else f"{result.finish_hours:.2f} h"
    rows = [
        ("cost", f"${result.cost:,.2f}"),
        ("optimum (knowing the trace)", optimum),
        ("cost / optimum", "-" if ratio is None else f"{ratio:.3f}"),
        ("spot hours", f"{result.spot_hours:.2f}"),
        ("on-demand hours", f"{result.on_demand_hours:.2f}"),
        ("idle hours", f"{result.idle_hours:.2f}"),
        ("preemptions", str(result.preemptions)),
        ("instance starts", str(result.instance_starts)),
        ("finished after", finish),
        ("deadline met", "yes" if result.deadline_met else "[red]no[/]"),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table
