"""A job's figures: how many attempts it made, how many the cloud ended, and what it spent and saved.

Every display of one job takes its counts and money from here: ``spotrun status`` (text and
JSON), the job list and the report ``spotrun run`` ends with; ``spotrun cost JOB`` totals the same
ledger rows through the same ``ledger.summarize``. Nothing is counted as it happens and stored: a
stored count would be a second copy of what the attempts and the ledger already say, and copies drift.

The definitions:

- an **attempt** is one try at running the job, recorded before its launch (the one still being
  provisioned counts);
- a **preemption** is one attempt the cloud ended (``ledger.count_preemptions``): a two-node gang
  whose nodes were both taken was preempted once, and relaunched once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from runner.cost.ledger import CostSummary, summarize
from runner.state.store import Attempt, Interval


@dataclass(frozen=True)
class JobFigures:
    """What one job's attempts and ledger rows add up to at a moment."""

    attempts: int
    cost: CostSummary  # spend, the on-demand equivalent and savings, instance time, lost work, preemptions

    @property
    def preemptions(self) -> int:
        """Attempts the cloud ended, each once however many of its nodes were taken."""
        return self.cost.preemptions


def job_figures(attempts: Sequence[Attempt], intervals: Sequence[Interval], now: float) -> JobFigures:
    """The figures of the job whose ``attempts`` and ledger ``intervals`` these are, running intervals priced up to ``now``."""
    return JobFigures(attempts=len(attempts), cost=summarize(intervals, now))
