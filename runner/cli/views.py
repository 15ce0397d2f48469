"""What people and scripts see of a job: one summary dict, rendered as JSON, a status line or tables."""

from __future__ import annotations

import time
from typing import Any

from rich.table import Table

from checkpoints.durations import format_duration
from checkpoints.errors import CheckpointError
from checkpoints.store import CheckpointStore
from runner.cli.logs import attempt_logs
from runner.cost.ledger import summarize
from runner.instance.protocol import JobChannel, ProtocolError
from runner.state.store import Attempt, Interval, Job, JobState, Outcome

_FAILURE_LOG_LINES = 12  # a traceback's last frames and its exception
_LOG_TAIL_BYTES = 16 * 1024
_LOG_LINE_CHARS = 300
_AGENT_NOTE = "[spotrun agent "  # how the agent's own lines in a training log start (runner.instance.agent's _note)


def job_summary(job: Job, attempts: list[Attempt], intervals: list[Interval], now: float | None = None) -> dict[str, Any]:
    """The facts about a job that ``status --json`` and ``jobs --json`` promise, plus what displays need."""
    now = time.time() if now is None else now
    progress = job.progress
    cost = summarize(intervals, now)
    step, total = progress.get("step"), progress.get("total_steps")
    rate = progress.get("steps_per_s") or 0.0
    eta_s = (total - step) / rate if (step is not None and total and rate > 0 and not job.state.is_final) else None
    checkpoint = progress.get("checkpoint") or {}
    budget = job.spec.get("budget") or {}
    return {
        "name": job.name,
        "state": job.state.value,
        "step": step,
        "total_steps": total,
        "step_reported_at": progress.get("time"),  # when, and by which attempt, the step was reported
        "step_attempt": progress.get("attempt"),
        "epoch": progress.get("epoch"),
        "loss": progress.get("loss"),
        "steps_per_s": rate,
        "eta_s": eta_s,
        "metrics": progress.get("metrics") or {},
        "preemptions": job.preemptions,
        "attempts": len(attempts),
        "restarts_on_errors": job.restarts_on_errors,
        "spent_usd": round(cost.spent_usd, 6),
        "on_demand_usd": round(cost.on_demand_usd, 6),
        "savings_usd": round(cost.savings_usd, 6),
        "savings_pct": round(cost.savings_pct, 2),
        "instance_hours": round(cost.instance_seconds / 3600, 6),
        "gpu_hours": round(cost.gpu_hours, 6),
        "work_lost_s": round(cost.work_lost_s, 3),
        "budget_usd": budget.get("max_usd"),
        "budget_left_usd": round(budget["max_usd"] - cost.spent_usd, 6) if budget.get("max_usd") is not None else None,
        "deadline_at": budget.get("deadline_at"),
        "market": job.spec.get("resources", {}).get("market"),
        "checkpoint_step": checkpoint.get("step"),
        # False when a train loader cannot resume mid-epoch exactly (a stateless IterableDataset, say).
        "resume_exact": progress.get("resume_exact", True),
        "resume_inexact_reason": progress.get("resume_inexact_reason"),
        "checkpoint_url": job.checkpoint_url,
        "message": job.message,
        "launched_by": job.launched_by,
        "controller": job.lease_owner,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def status_line(summary: dict[str, Any]) -> str:
    """One line for a live display: state, progress, money, preemptions, ETA."""
    parts = [f"{summary['name']}  {summary['state']}"]
    if summary["step"] is not None:
        total = f"/{summary['total_steps']}" if summary["total_steps"] else ""
        parts.append(f"step {summary['step']}{total}")
    if summary["epoch"] is not None:
        parts.append(f"epoch {summary['epoch']}")
    if summary["loss"] is not None:
        parts.append(f"loss {summary['loss']:.3f}")
    parts.append(f"${summary['spent_usd']:.4f} spent (saved ${summary['savings_usd']:.4f}, {summary['savings_pct']:.0f}%)")
    if summary["budget_usd"] is not None:
        parts.append(f"${summary['budget_left_usd']:.4f} of ${summary['budget_usd']:.2f} budget left")
    parts.append(f"preemptions {summary['preemptions']}")
    if summary["eta_s"] is not None:
        parts.append(f"ETA {format_duration(summary['eta_s'])}")
    return "  ".join(parts)


def jobs_table(summaries: list[dict[str, Any]], *, show_user: bool = False) -> Table:
    """Jobs, one row each; ``show_user`` adds who launched each (a team's listing)."""
    table = Table(title="spotrun jobs")
    for column in ("job", *(("user",) if show_user else ()), "state", "step", "epoch", "preemptions", "attempts", "spent", "saved", "updated"):
        table.add_column(column, justify="right" if column not in ("job", "user", "state") else "left")
    for summary in summaries:
        table.add_row(
            summary["name"],
            *((summary["launched_by"] or "?",) if show_user else ()),
            summary["state"],
            _progress_cell(summary),
            _cell(summary["epoch"]),
            str(summary["preemptions"]),
            str(summary["attempts"]),
            f"${summary['spent_usd']:.4f}",
            f"{summary['savings_pct']:.0f}%",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary["updated_at"])),
        )
    return table


def attempts_table(attempts: list[Attempt], now: float | None = None) -> Table:
    """One row per attempt: the billed intervals behind the job's cost."""
    now = time.time() if now is None else now
    table = Table(title="attempts")
    for column in ("#", "instance", "type", "zone", "market", "$/h", "ran", "outcome", "reason"):
        table.add_column(column)
    for attempt in attempts:
        end = attempt.ended_at if attempt.ended_at is not None else now
        ran = format_duration(end - attempt.launched_at) if attempt.launched_at else "-"
        table.add_row(
            str(attempt.number),
            attempt.instance_id or "(launching)",
            attempt.instance_type,
            attempt.zone,
            attempt.market,
            f"{attempt.price_usd_per_hour:.3f}",
            ran,
            attempt.outcome.value if attempt.outcome else "running",
            attempt.end_reason or "",
        )
    return table


def node_summaries(intervals: list[Interval], channel: JobChannel) -> list[dict[str, Any]]:
    """Every node of the newest attempt: its instance, address, state, and its own newest heartbeat (forged ones left out)."""
    if not intervals:
        return []
    newest = max(interval.attempt for interval in intervals)
    rows = sorted((interval for interval in intervals if interval.attempt == newest), key=lambda interval: interval.node)
    summaries = []
    for row in rows:
        try:
            heartbeat = channel.read_heartbeat(row.node) or {}
        except ProtocolError:
            heartbeat = {}
        current = heartbeat if heartbeat.get("attempt") == newest else {}
        summaries.append({
            "node": row.node, "attempt": newest, "instance_id": row.instance_id, "address": row.address, "zone": row.zone,
            "state": "running" if row.end is None else (row.outcome or "ended"),
            "agent_status": current.get("status"), "heartbeat_at": current.get("time"),
        })
    return summaries


def nodes_table(nodes: list[dict[str, Any]]) -> Table:
    """One row per node of the newest attempt."""
    table = Table(title=f"nodes of attempt {nodes[0]['attempt']}")
    for column in ("node", "instance", "address", "zone", "state", "agent", "last heartbeat"):
        table.add_column(column)
    for node in nodes:
        beat = time.strftime("%H:%M:%S", time.localtime(node["heartbeat_at"])) if node["heartbeat_at"] else "-"
        table.add_row(str(node["node"]), node["instance_id"], node["address"] or "-", node["zone"], node["state"], node["agent_status"] or "-", beat)
    return table


def final_report(summary: dict[str, Any], attempts: list[Attempt], checkpoints: CheckpointStore | None = None) -> list[str]:
    """The lines `spotrun run` ends with: outcome, training result, and the cost summary.

    A job that did not succeed says where its training got to without a stale step: the last
    step reported, when and by which attempt, and the step the newest checkpoint holds (what a
    resume starts from), read from ``checkpoints``. A failed one also shows the end of its
    failed attempt's training log and how to see all of it.
    """
    preempted = sum(1 for attempt in attempts if attempt.outcome is Outcome.PREEMPTED)
    counts = f"{summary['attempts']} attempts, {preempted} preempted, {summary['restarts_on_errors']} restarts after errors"
    lines = [f"job {summary['name']}: {summary['state']}" + (f" — {summary['message']}" if summary["message"] else "")]
    if summary["state"] == JobState.SUCCEEDED.value or checkpoints is None:
        lines.append(f"  training   step {_cell(summary['step'])}, epoch {_cell(summary['epoch'])}, {counts}")
    else:
        lines += [f"  training   {_where_training_got(summary, checkpoints)}", f"             {counts}"]
    if summary["state"] == JobState.FAILED.value and checkpoints is not None and attempts:
        lines += _failure_lines(summary["name"], attempts[-1].number, checkpoints)
    metrics = {name: value for name, value in summary["metrics"].items() if name.startswith("val")}
    if metrics:
        lines.append("  validation " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())))
    lines.append(
        f"  cost       ${summary['spent_usd']:.4f} spent over {summary['instance_hours'] * 3600:.0f} instance-seconds; "
        f"on-demand would have cost ${summary['on_demand_usd']:.4f}: saved ${summary['savings_usd']:.4f} ({summary['savings_pct']:.1f}%)"
    )
    if summary["budget_usd"] is not None:
        lines.append(
            f"  budget     ${summary['budget_usd']:.2f}, {100 * summary['spent_usd'] / summary['budget_usd']:.1f}% used, "
            f"${summary['budget_left_usd']:.4f} left"
        )
    lines.append(f"  checkpoints {summary['checkpoint_url']}")
    return lines


def _where_training_got(summary: dict[str, Any], checkpoints: CheckpointStore) -> str:
    """The last step reported, with its time and attempt, and the newest checkpoint's step."""
    if summary["step"] is None:
        reported = "no step reported"
    else:
        at = summary["step_reported_at"]
        when = f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}" if at else ""
        by = f" by attempt {summary['step_attempt']}" if summary["step_attempt"] is not None else ""
        reported = f"last reported step {summary['step']}{when}{by}"
    try:
        newest = checkpoints.latest()
    except CheckpointError as error:
        return f"{reported}; the newest checkpoint could not be read ({error})"
    return f"{reported}; " + (f"the newest checkpoint holds step {newest.step}" if newest else "no checkpoint was committed")


def _failure_lines(name: str, attempt: int, checkpoints: CheckpointStore) -> list[str]:
    """The end of the failed attempt's training output (the agent's own notes left out), and where the whole log is."""
    hint = f"  logs       all of it: `spotrun logs {name}` (`--attempt {attempt}` for this attempt only)"
    try:
        path = attempt_logs(checkpoints).get(attempt)
        tail = checkpoints.fs.tail(path, _LOG_TAIL_BYTES).decode(errors="replace") if path else ""
    except (CheckpointError, OSError) as error:
        return [f"  error      the log of attempt {attempt} could not be read ({error})", hint]
    output = [line.rstrip() for line in tail.splitlines() if line.strip() and not line.startswith(_AGENT_NOTE)]
    if not output:
        return [f"  error      attempt {attempt}'s training printed nothing before it failed", hint]
    shown = [f"               {line[:_LOG_LINE_CHARS]}" for line in output[-_FAILURE_LOG_LINES:]]
    return [f"  error      the training output of attempt {attempt} ends with:", *shown, hint]


def _progress_cell(summary: dict[str, Any]) -> str:
    if summary["step"] is None:
        return "-"
    return f"{summary['step']}/{summary['total_steps']}" if summary["total_steps"] else str(summary["step"])


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)
