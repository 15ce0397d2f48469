"""The facts about a job and its nodes that ``status --json`` and ``jobs --json`` promise, and that every display of a job reads.

A summary is built once from the store's rows (and, for nodes, the job's mailbox); ``to_json`` is
the one place it becomes the object scripts parse: its keys are the fields, in declared order, so a
field added here is a key added there.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python

from runner.cost.figures import job_figures
from runner.instance.protocol import AgentStatus, JobChannel, ProtocolError
from runner.spec.job_spec import MarketChoice
from runner.state.store import Attempt, Interval, Job, JobState


@dataclass(frozen=True, kw_only=True)
class JobSummary:
    """One job at a moment; money is rounded as ``--json`` promises it (dollars and hours to 6 places, percentages to 2)."""

    name: str
    state: JobState
    step: int | None
    total_steps: int | None
    step_reported_at: float | None  # when, and by which attempt, the step was reported
    step_attempt: int | None
    epoch: int | None
    loss: float | None
    steps_per_s: float
    eta_s: float | None
    metrics: Mapping[str, float]
    preemptions: int  # attempts the cloud ended: a gang whose nodes were all taken counts once
    attempts: int
    restarts_on_errors: int
    spent_usd: float
    on_demand_usd: float
    savings_usd: float
    savings_pct: float
    instance_hours: float
    gpu_hours: float
    work_lost_s: float
    budget_usd: float | None
    budget_left_usd: float | None
    deadline_at: datetime | None
    market: MarketChoice
    checkpoint_step: int | None
    resume_exact: bool  # False when a train loader cannot resume mid-epoch exactly (a stateless IterableDataset, say)
    resume_inexact_reason: str | None
    checkpoint_url: str
    message: str | None
    launched_by: str
    controller: str | None  # the lease owner driving the job, None when none does
    created_at: float
    updated_at: float

    def to_json(self) -> dict[str, Any]:
        """The object ``jobs --json`` lists and ``status JOB --json`` prints (with its nodes); ``deadline_at`` as the stored spec writes it."""
        return _json_object(self)


@dataclass(frozen=True, kw_only=True)
class NodeSummary:
    """One node of a job's newest attempt: where it runs and what its own newest heartbeat said."""

    node: int
    attempt: int
    instance_id: str
    address: str  # "" while the provider has not given one
    zone: str
    state: str  # "running" while its interval is open, then the interval's outcome ("ended" without one)
    agent_status: AgentStatus | None  # None without a heartbeat of this attempt
    heartbeat_at: float | None

    def to_json(self) -> dict[str, Any]:
        """The node as ``status JOB --json`` lists it."""
        return _json_object(self)


def job_summary(job: Job, attempts: list[Attempt], intervals: list[Interval], now: float | None = None) -> JobSummary:
    """The job's summary at ``now`` (the current time when left out): its spend counts open intervals up to then."""
    now = time.time() if now is None else now
    heartbeat, progress = job.progress, job.training_progress
    figures = job_figures(attempts, intervals, now)
    cost = figures.cost
    step = progress.step if progress else None
    total = progress.total_steps if progress else None
    rate = progress.steps_per_s if progress else 0.0
    eta_s = (total - step) / rate if (step is not None and total and rate > 0 and not job.state.is_final) else None
    budget = job.spec.budget
    return JobSummary(
        name=job.name,
        state=job.state,
        step=step,
        total_steps=total,
        step_reported_at=heartbeat.time if heartbeat else None,
        step_attempt=heartbeat.attempt if heartbeat else None,
        epoch=progress.epoch if progress else None,
        loss=progress.loss if progress else None,
        steps_per_s=rate,
        eta_s=eta_s,
        metrics=dict(progress.metrics) if progress else {},
        preemptions=figures.preemptions,
        attempts=figures.attempts,
        restarts_on_errors=job.restarts_on_errors,
        spent_usd=round(cost.spent_usd, 6),
        on_demand_usd=round(cost.on_demand_usd, 6),
        savings_usd=round(cost.savings_usd, 6),
        savings_pct=round(cost.savings_pct, 2),
        instance_hours=round(cost.instance_seconds / 3600, 6),
        gpu_hours=round(cost.gpu_hours, 6),
        work_lost_s=round(cost.work_lost_s, 3),
        budget_usd=budget.max_usd,
        budget_left_usd=round(budget.max_usd - cost.spent_usd, 6) if budget.max_usd is not None else None,
        deadline_at=budget.deadline_at,
        market=job.spec.resources.market,
        checkpoint_step=progress.checkpoint_step if progress else None,
        resume_exact=progress.resume_exact if progress else True,
        resume_inexact_reason=progress.resume_inexact_reason if progress else None,
        checkpoint_url=job.checkpoint_url,
        message=job.message,
        launched_by=job.launched_by,
        controller=job.lease_owner,
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


def node_summaries(intervals: list[Interval], channel: JobChannel) -> list[NodeSummary]:
    """Every node of the newest attempt: its instance, address, state, and its own newest heartbeat (forged ones left out)."""
    if not intervals:
        return []
    newest = max(interval.attempt for interval in intervals)
    rows = sorted((interval for interval in intervals if interval.attempt == newest), key=lambda interval: interval.node)
    summaries = []
    for row in rows:
        try:
            heartbeat = channel.read_heartbeat(row.node)
        except ProtocolError:
            heartbeat = None
        current = heartbeat if heartbeat is not None and heartbeat.attempt == newest else None
        summaries.append(
            NodeSummary(
                node=row.node,
                attempt=newest,
                instance_id=row.instance_id,
                address=row.address,
                zone=row.zone,
                state="running" if row.end is None else (row.outcome or "ended"),
                agent_status=current.status if current else None,
                heartbeat_at=current.time if current else None,
            )
        )
    return summaries


def _json_object(summary: JobSummary | NodeSummary) -> dict[str, Any]:
    """``summary``'s fields in declared order, enums as their values, datetimes in ISO 8601 (NaN stays NaN: the CLI's JSON writer nulls it)."""
    data: dict[str, Any] = to_jsonable_python(summary)
    return data
