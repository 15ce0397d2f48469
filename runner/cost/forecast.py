"""How much work a job has left, how long restarts take, and what finishing will cost.

Measured figures win over the spec's estimates as soon as there are any: throughput comes from
the newest heartbeat, restart overhead from the job's own intervals (launch to first progress),
the preemption rate from its own preemptions per spot hour. Before that the spec's
``budget.expected_runtime`` and ``budget.restart_overhead`` stand in, and a provider prior for
the preemption rate. The same estimates feed the budget forecast and the deadline policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from runner.state.store import Interval, Outcome

# Launch to first progress before anything is measured: boot, install and resume on a cloud; a process start here.
DEFAULT_RESTART_OVERHEAD_S = {"local": 15.0, "aws": 300.0}
# EC2 gives no rate per pool; a spot instance in a middling pool lasts about a day. Local jobs know theirs.
AWS_SPOT_HOURS_BETWEEN_PREEMPTIONS = 24.0


@dataclass(frozen=True)
class Work:
    """Progress in seconds of uninterrupted training: ``basis`` says where the figures come from."""

    done_s: float
    total_s: float
    basis: str  # "measured" (steps and throughput) or "estimated" (budget.expected_runtime)

    @property
    def remaining_s(self) -> float:
        """Training still to do."""
        return max(0.0, self.total_s - self.done_s)


def work(spec: dict[str, Any], progress: dict[str, Any]) -> Work | None:
    """The job's work, from its newest heartbeat's steps and throughput, else from the spec's estimate."""
    step, total, rate = progress.get("step"), progress.get("total_steps"), progress.get("steps_per_s") or 0.0
    if step is not None and total and rate > 0:
        return Work(done_s=step / rate, total_s=total / rate, basis="measured")
    expected = (spec.get("budget") or {}).get("expected_runtime_s")
    if expected:
        fraction = step / total if step is not None and total else 0.0
        return Work(done_s=fraction * expected, total_s=expected, basis="estimated")
    return None


def restart_overhead_s(spec: dict[str, Any], intervals: Sequence[Interval]) -> float:
    """Mean billed time from launch to training progress over the job's intervals, else the spec's, else the provider's prior."""
    measured = [interval.productive_at - interval.start for interval in intervals if interval.productive_at is not None]
    if measured:
        return sum(measured) / len(measured)
    configured = (spec.get("budget") or {}).get("restart_overhead_s")
    return float(configured) if configured is not None else DEFAULT_RESTART_OVERHEAD_S[spec["resources"]["provider"]]


def spot_seconds_between_preemptions(spec: dict[str, Any], intervals: Sequence[Interval], now: float) -> float | None:
    """Expected spot run time between preemptions: the job's own rate once it has one, else the provider's prior."""
    spot = [interval for interval in intervals if interval.market == "spot"]
    preempted = sum(1 for interval in spot if interval.outcome == Outcome.PREEMPTED.value)
    if preempted:
        ran = sum((interval.end if interval.end is not None else now) - interval.start for interval in spot)
        return ran / preempted
    if spec["resources"]["provider"] == "local":
        every = spec["local"]["preempt_every_s"]
        return float(every) if every else None
    return AWS_SPOT_HOURS_BETWEEN_PREEMPTIONS * 3600.0


def nodes(spec: dict[str, Any]) -> int:
    """Instances the job runs on at once: everything it buys is bought that many times."""
    return int(spec["resources"].get("nodes", 1))


def start_cost_usd(spec: dict[str, Any], intervals: Sequence[Interval], usd_per_hour: float, *, reserve_s: float) -> float:
    """What starting the job's instances costs before training makes progress, plus ``reserve_s`` kept to checkpoint and stop."""
    return (restart_overhead_s(spec, intervals) + reserve_s) * nodes(spec) * usd_per_hour / 3600.0


@dataclass(frozen=True)
class Forecast:
    """The cost to finish from now, and how it was reckoned."""

    remaining_s: float  # training left
    expected_preemptions: float
    overhead_s: float  # restarts and lost work they are expected to add
    usd_per_hour: float  # for the whole gang
    basis: str

    @property
    def cost_usd(self) -> float:
        """(remaining work + expected overhead) at the price."""
        return (self.remaining_s + self.overhead_s) * self.usd_per_hour / 3600.0


def forecast(spec: dict[str, Any], progress: dict[str, Any], intervals: Sequence[Interval], usd_per_hour: float, *, spot: bool, now: float) -> Forecast | None:
    """The cost to finish at ``usd_per_hour`` per instance (times the gang's nodes), or None without a measurement or an estimate."""
    left = work(spec, progress)
    if left is None:
        return None
    restart = restart_overhead_s(spec, intervals)
    between = spot_seconds_between_preemptions(spec, intervals, now) if spot else None
    preemptions = left.remaining_s / between if between else 0.0
    lost = [interval.work_lost_s for interval in intervals if interval.outcome == Outcome.PREEMPTED.value and interval.work_lost_s is not None]
    lost_each = sum(lost) / len(lost) if lost else 0.0
    running = any(interval.end is None for interval in intervals)
    overhead = preemptions * (restart + lost_each) + (0.0 if running else restart)
    return Forecast(
        remaining_s=left.remaining_s, expected_preemptions=preemptions, overhead_s=overhead, usd_per_hour=usd_per_hour * nodes(spec), basis=left.basis,
    )
