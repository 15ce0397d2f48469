"""What people see of a job: its summary (runner.cli.summaries) as a status line, tables, and the report `spotrun run` ends with."""

from __future__ import annotations

import time

from rich.table import Table

from checkpoints.durations import format_duration
from checkpoints.errors import CheckpointError
from checkpoints.store import CheckpointStore
from runner.cli.logs import attempt_logs
from runner.cli.summaries import JobSummary, NodeSummary
from runner.state.store import Attempt, JobState

_FAILURE_LOG_LINES = 12  # a traceback's last frames and its exception
_LOG_TAIL_BYTES = 16 * 1024
_LOG_LINE_CHARS = 300
_AGENT_NOTE = "[spotrun agent "  # how the agent's own lines in a training log start (runner.instance.agent's _note)


def status_line(summary: JobSummary) -> str:
    """One line for a live display: state, progress, money, preemptions, ETA."""
    parts = [f"{summary.name}  {summary.state.value}"]
    if summary.step is not None:
        total = f"/{summary.total_steps}" if summary.total_steps else ""
        parts.append(f"step {summary.step}{total}")
    if summary.epoch is not None:
        parts.append(f"epoch {summary.epoch}")
    if summary.loss is not None:
        parts.append(f"loss {summary.loss:.3f}")
    parts.append(f"${summary.spent_usd:.4f} spent (saved ${summary.savings_usd:.4f}, {summary.savings_pct:.0f}%)")
    if summary.budget_usd is not None:
        parts.append(f"${summary.budget_left_usd:.4f} of ${summary.budget_usd:.2f} budget left")
    parts.append(f"preemptions {summary.preemptions}")
    if summary.eta_s is not None:
        parts.append(f"ETA {format_duration(summary.eta_s)}")
    return "  ".join(parts)


def jobs_table(summaries: list[JobSummary], *, show_user: bool = False) -> Table:
    """Jobs, one row each; ``show_user`` adds who launched each (a team's listing)."""
    table = Table(title="spotrun jobs")
    for column in (
        "job",
        *(("user",) if show_user else ()),
        "state",
        "step",
        "epoch",
        "preemptions",
        "attempts",
        "spent",
        "saved",
        "updated",
    ):
        table.add_column(column, justify="right" if column not in ("job", "user", "state") else "left")
    for summary in summaries:
        table.add_row(
            summary.name,
            *((summary.launched_by or "?",) if show_user else ()),
            summary.state.value,
            _progress_cell(summary),
            _cell(summary.epoch),
            str(summary.preemptions),
            str(summary.attempts),
            f"${summary.spent_usd:.4f}",
            f"{summary.savings_pct:.0f}%",
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(summary.updated_at)),
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


def nodes_table(nodes: list[NodeSummary]) -> Table:
    """One row per node of the newest attempt."""
    table = Table(title=f"nodes of attempt {nodes[0].attempt}")
    for column in ("node", "instance", "address", "zone", "state", "agent", "last heartbeat"):
        table.add_column(column)
    for node in nodes:
        beat = time.strftime("%H:%M:%S", time.localtime(node.heartbeat_at)) if node.heartbeat_at else "-"
        agent = node.agent_status.value if node.agent_status else "-"
        table.add_row(str(node.node), node.instance_id, node.address or "-", node.zone, node.state, agent, beat)
    return table


def final_report(summary: JobSummary, attempts: list[Attempt], checkpoints: CheckpointStore | None = None) -> list[str]:
    """The lines `spotrun run` ends with: outcome, training result, and the cost summary.

    A job that did not succeed says where its training got to without a stale step: the last
    step reported, when and by which attempt, and the step the newest checkpoint holds (what a
    resume starts from), read from ``checkpoints``. A failed one also shows the end of its
    failed attempt's training log and how to see all of it.
    """
    counts = f"{summary.attempts} attempts, {summary.preemptions} preempted, {summary.restarts_on_errors} restarts after errors"
    lines = [f"job {summary.name}: {summary.state.value}" + (f" — {summary.message}" if summary.message else "")]
    if summary.state is JobState.SUCCEEDED or checkpoints is None:
        lines.append(f"  training   step {_cell(summary.step)}, epoch {_cell(summary.epoch)}, {counts}")
    else:
        lines += [f"  training   {_where_training_got(summary, checkpoints)}", f"             {counts}"]
    if summary.state is JobState.FAILED and checkpoints is not None and attempts:
        lines += _failure_lines(summary.name, attempts[-1].number, checkpoints)
    metrics = {name: value for name, value in summary.metrics.items() if name.startswith("val")}
    if metrics:
        lines.append("  validation " + ", ".join(f"{name} {value:.4f}" for name, value in sorted(metrics.items())))
    lines.append(
        f"  cost       ${summary.spent_usd:.4f} spent over {summary.instance_hours * 3600:.0f} instance-seconds; "
        f"on-demand would have cost ${summary.on_demand_usd:.4f}: saved ${summary.savings_usd:.4f} ({summary.savings_pct:.1f}%)"
    )
    if summary.budget_usd is not None:
        lines.append(
            f"  budget     ${summary.budget_usd:.2f}, {100 * summary.spent_usd / summary.budget_usd:.1f}% used, "
            f"${summary.budget_left_usd:.4f} left"
        )
    lines.append(f"  checkpoints {summary.checkpoint_url}")
    return lines


def _where_training_got(summary: JobSummary, checkpoints: CheckpointStore) -> str:
    """The last step reported, with its time and attempt, and the newest checkpoint's step."""
    if summary.step is None:
        reported = "no step reported"
    else:
        at = summary.step_reported_at
        when = f" at {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(at))}" if at else ""
        by = f" by attempt {summary.step_attempt}" if summary.step_attempt is not None else ""
        reported = f"last reported step {summary.step}{when}{by}"
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


def _progress_cell(summary: JobSummary) -> str:
    if summary.step is None:
        return "-"
    return f"{summary.step}/{summary.total_steps}" if summary.total_steps else str(summary.step)


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)
