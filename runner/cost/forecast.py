"""How much work a job has left, how long restarts take, and what finishing will cost.

Measured figures win over the spec's estimates as soon as there are any: throughput comes from
the newest heartbeat, restart overhead from the job's own intervals (launch to first progress),
the preemption rate from its own preemptions per spot hour. Before that the spec's
``budget.expected_runtime`` and ``budget.restart_overhead`` stand in, and the provider's priors
(``Provider.priors``) for what the spec does not say. The same estimates feed the budget
forecast and the deadline policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from checkpoints.progress import Progress
from cloud.provider import ProviderPriors
from runner.cost.ledger import count_preemptions
from runner.spec.job_spec import JobSpec
from runner.state.store import Interval, Outcome


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


def work(spec: JobSpec, progress: Progress | None) -> Work | None:
    """The job's work, from its newest report's steps and throughput (None before the first), else from the spec's estimate."""
    step = progress.step if progress else None
    total = progress.total_steps if progress else None
    rate = progress.steps_per_s if progress else 0.0
    if step is not None and total and rate > 0:
        return Work(done_s=step / rate, total_s=total / rate, basis="measured")
    expected = spec.budget.expected_runtime_s
    if expected:
        fraction = step / total if step is not None and total else 0.0
        return Work(done_s=fraction * expected, total_s=expected, basis="estimated")
    return None


def restart_overhead_s(spec: JobSpec, intervals: Sequence[Interval], priors: ProviderPriors) -> float:
    """Mean billed time from launch to training progress over the job's intervals, else the spec's, else the provider's prior."""
    measured = [interval.productive_at - interval.start for interval in intervals if interval.productive_at is not None]
    if measured:
        return sum(measured) / len(measured)
    configured = spec.budget.restart_overhead_s
    return configured if configured is not None else priors.restart_overhead_s


def spot_seconds_between_preemptions(intervals: Sequence[Interval], now: float, priors: ProviderPriors) -> float | None:
    """Expected spot run time between preemptions: the job's own rate once it has one, else the provider's prior.

    A gang runs, is preempted and restarts as one (``ledger.count_preemptions``), so its time is
    rank 0's: two nodes taken in one attempt are one restart, not two.
    """
    spot = [interval for interval in intervals if interval.market == "spot"]
    preempted = count_preemptions(spot)
    if preempted:
        ran = sum((interval.end if interval.end is not None else now) - interval.start for interval in spot if interval.node == 0)
        return ran / preempted
    return priors.spot_s_between_preemptions


def start_cost_usd(spec: JobSpec, intervals: Sequence[Interval], usd_per_hour: float, *, priors: ProviderPriors, reserve_s: float) -> float:
    """What starting the job's instances costs before training makes progress, plus ``reserve_s`` kept to checkpoint and stop."""
    return (restart_overhead_s(spec, intervals, priors) + reserve_s) * spec.resources.nodes * usd_per_hour / 3600.0


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


def forecast(
    spec: JobSpec,
    progress: Progress | None,
    intervals: Sequence[Interval],
    usd_per_hour: float,
    *,
    priors: ProviderPriors,
    spot: bool,
    now: float,
) -> Forecast | None:
    """The cost to finish at ``usd_per_hour`` per instance (times the gang's nodes), or None without a measurement or an estimate."""
    left = work(spec, progress)
    if left is None:
        return None
    restart = restart_overhead_s(spec, intervals, priors)
    between = spot_seconds_between_preemptions(intervals, now, priors) if spot else None
    preemptions = left.remaining_s / between if between else 0.0
    lost = [
        interval.work_lost_s for interval in intervals if interval.outcome == Outcome.PREEMPTED.value and interval.work_lost_s is not None
    ]
    lost_each = sum(lost) / len(lost) if lost else 0.0
    running = any(interval.end is None for interval in intervals)
    overhead = preemptions * (restart + lost_each) + (0.0 if running else restart)
    return Forecast(
        remaining_s=left.remaining_s,
        expected_preemptions=preemptions,
        overhead_s=overhead,
        usd_per_hour=usd_per_hour * spec.resources.nodes,
        basis=left.basis,
    )
