"""Which market a job with a deadline should hold right now: spot, on-demand, or nothing (wait).

A policy is a small stateless callable on one frozen :class:`Situation`. The controller asks it
every poll cycle on a real job (continuous time); ``runner.control.simulate`` asks it once per trace tick.
Nothing here knows about ticks: the only hint of how often the question comes is
``decision_interval_s``, how long a choice stands before the policy is asked again.

Every policy but ``spot-only`` keeps one promise: **if the deadline can be met at all** (the work
plus one restart overhead fits before it), **it is met**. The argument, shared by all of them
through :meth:`Situation.must_run_on_demand`:

- Starting on-demand now finishes by the deadline exactly when ``slack >= restart overhead``
  (slack = time left - work left).
- A choice other than on-demand stands for at most one decision interval and, in the worst case
  (idle, or a spot instance lost at once), makes no progress: the slack drops by at most the
  interval. So a policy may choose anything else only while ``slack - interval >= overhead``;
  otherwise it must run on-demand, and must keep it: on on-demand the slack never drops below what
  its own remaining overhead needs, and once it is below ``overhead + interval`` nothing else is
  allowed again.

Example, 10 h of work, 12 h deadline, 0.2 h overhead, a 0.1 h interval: slack 2 h at the start;
spot capacity vanishes at 3 h with 2 h done (slack 1 h left: 12 - 3 - 8); ``greedy`` waits until
the slack is below 0.3 h, i.e. until 3.7 h, then runs on-demand to the end: 0.2 h of overhead and
8 h of work end at 11.9 h.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cloud.provider import Market
from runner.errors import SpecError

# Times are float seconds; comparisons that decide a deadline give way by this much towards safety.
_TOLERANCE_S = 1e-6


@dataclass(frozen=True)
class Situation:
    """Everything a policy may know at one moment of a job: the past and present, never the future."""

    elapsed_s: float  # time since the job started
    work_done_s: float  # progress so far, in seconds of useful running time
    total_work_s: float  # progress needed in all
    deadline_s: float  # the deadline, counted from the job's start
    restart_overhead_s: float  # billed time without progress each time an instance starts
    running: Market | None  # market of the instance the job holds right now (None: none)
    spot_available: bool  # spot capacity can be had right now
    decision_interval_s: float = 0.0  # how long the choice stands before the next one (a tick, a poll interval)

    @property
    def remaining_work_s(self) -> float:
        """Useful running time still needed."""
        return max(0.0, self.total_work_s - self.work_done_s)

    @property
    def time_left_s(self) -> float:
        """Time until the deadline (negative once it has passed)."""
        return self.deadline_s - self.elapsed_s

    @property
    def slack_s(self) -> float:
        """Time that may still be spent without progress: time left minus work left."""
        return self.time_left_s - self.remaining_work_s

    @property
    def ahead_of_uniform_s(self) -> float:
        """Progress beyond the uniform line ``total_work * elapsed / deadline``; negative when behind it.

        Equivalently: the slack left minus the slack the uniform line would have left by now,
        ``(deadline - work) * (1 - elapsed / deadline)``; uniform progress spends the slack evenly.
        """
        if self.deadline_s <= 0:
            return self.work_done_s - self.total_work_s
        fraction = min(1.0, max(0.0, self.elapsed_s / self.deadline_s))
        return self.work_done_s - self.total_work_s * fraction

    @property
    def spare_slack_s(self) -> float:
        """Slack beyond what an on-demand start needs after one more interval spent without progress."""
        return self.slack_s - self.restart_overhead_s - self.decision_interval_s

    def must_run_on_demand(self) -> bool:
        """Whether anything but on-demand now could miss a deadline that can still be met (see the module docstring)."""
        return self.spare_slack_s < _TOLERANCE_S


class MarketPolicy(Protocol):
    """Chooses the market to hold now; ``None`` means hold no instance and wait."""

    @property
    def name(self) -> str:
        """The name a spec or `spotrun simulate --policy` gives it."""
        ...

    def choose(self, situation: Situation) -> Market | None:
        """The market to hold from now until the next decision."""
        ...


POLICIES: dict[str, MarketPolicy] = {}


def _register(policy: MarketPolicy) -> MarketPolicy:
    POLICIES[policy.name] = policy
    return policy


def policy_named(name: str) -> MarketPolicy:
    """The registered policy called ``name``; SpecError listing the known names for any other."""
    try:
        return POLICIES[name]
    except KeyError:
        raise SpecError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}") from None


@dataclass(frozen=True)
class SpotOnly:
    """Spot when there is capacity, otherwise wait. Cheapest per hour, but blind to the deadline.

    Example: capacity 1 1 0 0 1 → spot spot wait wait spot (restart overhead again after the gap).
    """

    name: str = "spot-only"

    def choose(self, situation: Situation) -> Market | None:
        """Spot if available, else nothing."""
        return Market.SPOT if situation.spot_available else None


@dataclass(frozen=True)
class OnDemandOnly:
    """Always on-demand: the most expensive way, and the reference the others are measured against."""

    name: str = "on-demand"

    def choose(self, situation: Situation) -> Market | None:
        """On-demand, always."""
        return Market.ON_DEMAND


@dataclass(frozen=True)
class Greedy:
    """Spot whenever it can be had; without it, wait as long as the slack allows, then on-demand to the end.

    Example (slack 2 h, overhead 0.2 h): spot, spot, capacity gone → wait ~1.8 h → on-demand for
    good, even if spot comes back: once the slack is spent, a lost spot instance would miss the
    deadline. "For good" needs no memory: greedy only ever holds on-demand after that moment, so
    holding on-demand means it is past it.
    """

    name: str = "greedy"

    def choose(self, situation: Situation) -> Market | None:
        """On-demand if already on it or out of slack; else spot if available; else wait."""
        if situation.running is Market.ON_DEMAND or situation.must_run_on_demand():
            return Market.ON_DEMAND
        return Market.SPOT if situation.spot_available else None


@dataclass(frozen=True)
class UniformProgress:
    """Uniform Progress (Wu et al., "Can't Be Late", NSDI'24): spend the slack evenly over the time to the deadline.

    The uniform line is ``total_work * elapsed / deadline``. Spot is used whenever there is capacity.
    Without it, the job waits while it is ahead of the line and runs on-demand while it is behind:
    waiting is free only if spot comes back, which no one knows, so the job never spends the slack
    that the rest of its time will need to ride out outages and pay spot restarts. Greedy, by
    contrast, spends all of it at the first outage and then runs on-demand to the end.

    Hysteresis, both derived from ``running`` (no memory), keeps it from thrashing:

    - On on-demand with spot back, switch to spot only while the slack pays two more restarts beyond
      what the safety net keeps (``back_to_spot_spare_overheads``): one for the spot start, and one
      of margin, so that once that start is paid the job is still a restart away from the net. With
      no margin it lands exactly on the net, and whatever the switch costs beyond its estimate
      (stopping the on-demand instance, a restart slower than measured, a throughput estimate that
      dips between two polls) trips the net and sends it straight back: spot, on-demand, spot
      within seconds on a job polled every second, a restart paid each time. Being behind the line
      is no reason to stay: spot progresses as fast as on-demand, for less.
    - On on-demand without spot, keep it until ahead of the line by ``keep_on_demand_overheads``
      overheads instead of dropping it at the line: each drop is paid for by a restart when the job
      falls behind again; with a band of 10 overheads that restart is under 10 % of the on-demand
      time run between two drops, and the job finishes at most about that much before the deadline.

    Both settings were chosen on synthetic traces only (``benchmarks/policy.py``: Markov and
    lognormal-run traces at 20 to 95 % availability, mean runs of 1 to 16 h). The band hardly
    matters between 8 and 32 overheads. The margin of a restart costs little there (``--quick``,
    both deadlines, cost over the optimum with the margin and without: Markov 1.081 and 1.081,
    lognormal 1.112 and 1.113, the real traces 1.113 and 1.101); a dwell on on-demand instead (a
    minimum time held before leaving it) cost up to 3 % more at half an overhead and up to 9 % at
    one, since spot often comes back soon after an outage. Going back to spot only when ahead of the line (the
    paper's variant) cost up to 6 % more on the Markov traces and gained nothing on the lognormal
    ones; a reserve below the line traded the tight deadline against the loose one for no net gain. The
    safety net of :meth:`Situation.must_run_on_demand` comes first and guarantees the deadline.
    """

    name: str = "auto"
    back_to_spot_spare_overheads: float = 2.0
    keep_on_demand_overheads: float = 10.0

    def choose(self, situation: Situation) -> Market | None:
        """Spot when available (from on-demand only with slack to spare), on-demand when behind, else wait."""
        if situation.must_run_on_demand():
            return Market.ON_DEMAND
        on_demand = situation.running is Market.ON_DEMAND
        overhead_s = situation.restart_overhead_s
        if situation.spot_available:
            if on_demand and situation.spare_slack_s < self.back_to_spot_spare_overheads * overhead_s:
                return Market.ON_DEMAND
            return Market.SPOT
        ahead_s = situation.ahead_of_uniform_s
        if ahead_s < 0 or (on_demand and ahead_s < self.keep_on_demand_overheads * overhead_s):
            return Market.ON_DEMAND
        return None


for _policy in (UniformProgress(), Greedy(), SpotOnly(), OnDemandOnly()):
    _register(_policy)
