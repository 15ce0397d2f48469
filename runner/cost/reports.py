"""Cost reports: the ledger's intervals grouped (by job, team, instance type, zone, day or user) and rendered.

Every figure is ``ledger.summarize`` over a group's intervals, so a report agrees with the ledger
to the cent. Grouping by day cuts each interval at UTC midnight and shares its cost between the
days pro rata by seconds: an instance billed $3 for 23:00-02:00 costs $1 on the first day and $2
on the second. The same daily pieces feed the HTML report's charts. Rendering is pure: a report
becomes a rich Table, JSON, CSV (here) or one self-contained HTML page (``runner.cost.reports_html``).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from checkpoints.durations import format_duration
from runner.cost.ledger import CostSummary, count_preemptions, priced, summarize
from runner.state.store import Interval

DAY_S = 86400.0
FORMATS = ("table", "json", "csv", "html")

_KEYS: dict[str, Callable[[Interval], str | None]] = {
    "job": lambda interval: interval.job,
    "team": lambda interval: interval.team or None,
    "instance-type": lambda interval: interval.instance_type,
    "zone": lambda interval: interval.zone,
    "day": lambda interval: utc_day(interval.start),  # on pieces that lie within one day
    "user": lambda interval: interval.launched_by or None,
}
GROUPINGS = tuple(_KEYS)
LEDGER_COLUMNS = {
    "job": "job",
    "team": "team",
    "instance-type": "instance_type",
    "zone": "zone",
    "user": "launched_by",
}  # groupings the database can sum
_MISSING_LABELS = {"team": "(no team)", "user": "(unknown user)"}


def utc_day(when: float) -> str:
    """The UTC calendar day of a unix time, as YYYY-MM-DD."""
    return datetime.fromtimestamp(when, UTC).date().isoformat()


def utc_iso(when: float | None) -> str | None:
    """A unix time as an ISO 8601 UTC string (what JSON and CSV outputs carry); None stays None."""
    return None if when is None else datetime.fromtimestamp(when, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def format_usd(amount: float) -> str:
    """Dollars for people: cents from $1 up, up to four decimals below (short test runs cost fractions of a cent)."""
    sign = "-" if amount < 0 and round(abs(amount), 4) > 0 else ""
    if abs(amount) >= 1:
        return f"{sign}${abs(amount):,.2f}"
    whole, _, decimals = f"{abs(amount):.4f}".partition(".")
    return f"{sign}${whole}.{decimals.rstrip('0').ljust(2, '0')}"


def group_label(by: str, key: str | None) -> str:
    """The group key as people read it: a missing team or user is named, not left blank."""
    return key if key is not None else _MISSING_LABELS.get(by, "(none)")


def split_by_day(intervals: Iterable[Interval], now: float, *, since: float | None = None) -> list[Interval]:
    """Each interval cut at UTC midnights (and clipped at ``since``) into closed pieces, each priced pro rata by seconds.

    A piece carries its share of the interval's cost and on-demand equivalent, so ``summarize`` over
    one day's pieces gives that day's figures. Provisioning time belongs to the first piece; the
    outcome (a preemption) and the work lost belong to the piece the interval ended in.
    """
    pieces: list[Interval] = []
    for interval in intervals:
        cost, equivalent = priced(interval, now)
        end = interval.end if interval.end is not None else max(now, interval.start)
        if since is not None and end < since:
            continue
        total_s = end - interval.start
        cut = interval.start if since is None else max(interval.start, since)
        if cut == interval.start and end <= _next_midnight(cut) and _is_own_piece(interval):
            pieces.append(interval)  # closed and priced within one day: the piece would be a copy of it
            continue
        while True:
            piece_end = min(end, _next_midnight(cut))
            share = (piece_end - cut) / total_s if total_s > 0 else 1.0
            last = piece_end >= end
            productive_at = None if interval.productive_at is None else min(max(interval.productive_at, cut), piece_end)
            pieces.append(
                replace(
                    interval,
                    requested_at=interval.requested_at if cut == interval.start else cut,
                    start=cut,
                    end=piece_end,
                    cost_usd=cost * share,
                    on_demand_usd=equivalent * share,
                    productive_at=productive_at,
                    end_reason=interval.end_reason if last else None,
                    outcome=interval.outcome if last else None,
                    work_lost_s=interval.work_lost_s if last else None,
                    steps_lost=interval.steps_lost if last else None,
                )
            )
            if last:
                break
            cut = piece_end
    return pieces


def _next_midnight(when: float) -> float:
    return (math.floor(when / DAY_S) + 1) * DAY_S


def _is_own_piece(interval: Interval) -> bool:
    """A closed, priced interval whose productive time lies within it: cut nowhere, it is its own single piece."""
    if interval.end is None or interval.cost_usd is None or interval.on_demand_usd is None:
        return False
    return interval.productive_at is None or interval.start <= interval.productive_at <= interval.end


@dataclass(frozen=True)
class GroupRow:
    """One row of a grouped report: the group's key (None: no team / no user) and its figures."""

    key: str | None
    summary: CostSummary
    jobs: int

    def to_json(self) -> dict[str, Any]:
        """The summary's figures plus the number of jobs."""
        return {**self.summary.to_json(), "jobs": self.jobs}


@dataclass(frozen=True)
class DailySpend:
    """Spend of one group on one UTC day: the points of the HTML charts."""

    group: str | None
    day: str
    spent_usd: float
    on_demand_usd: float


@dataclass(frozen=True)
class GroupReport:
    """Spend grouped ``by`` one key, at ``generated_at``, over intervals still running after ``since``."""

    by: str
    groups: tuple[GroupRow, ...]  # most spend first; by day: in date order
    totals: GroupRow  # key None
    daily: tuple[DailySpend, ...]
    generated_at: float
    since: float | None


@dataclass(frozen=True)
class AttemptRow:
    """One ledger interval of a job (an attempt on one node) and its figures."""

    interval: Interval
    summary: CostSummary


@dataclass(frozen=True)
class JobReport:
    """One job's spend, interval by interval."""

    job: str
    attempts: tuple[AttemptRow, ...]
    totals: CostSummary
    daily: tuple[DailySpend, ...]
    generated_at: float
    since: float | None


Report = GroupReport | JobReport


def _still_running_after(intervals: Iterable[Interval], since: float | None) -> list[Interval]:
    return [interval for interval in intervals if since is None or interval.end is None or interval.end >= since]


def _daily(pieces: Iterable[Interval], key: Callable[[Interval], str | None], now: float) -> tuple[DailySpend, ...]:
    cells: dict[tuple[str | None, str], list[Interval]] = defaultdict(list)
    for piece in pieces:
        cells[(key(piece), utc_day(piece.start))].append(piece)
    points = []
    for (group, day), members in cells.items():
        summary = summarize(members, now)
        points.append(DailySpend(group, day, summary.spent_usd, summary.on_demand_usd))
    return tuple(sorted(points, key=lambda point: (point.day, point.group or "")))


def group_report(intervals: Iterable[Interval], by: str, *, now: float, since: float | None = None, daily: bool = True) -> GroupReport:
    """Spend grouped ``by`` one of GROUPINGS; running intervals priced up to ``now``.

    ``since`` keeps the intervals still running after it, whole, except by day, where the report
    is clipped to the window (the days before it would otherwise show up half-counted).
    ``daily=False`` leaves ``daily`` empty: only the HTML page charts it, and over a team's ledger
    cutting every interval at midnight costs more than the rest of the report.
    """
    if by not in _KEYS:
        raise ValueError(f"unknown grouping {by!r}; expected one of: {', '.join(GROUPINGS)}")
    key = _KEYS[by]
    kept = _still_running_after(intervals, since)
    pieces = split_by_day(kept, now, since=since if by == "day" else None) if daily or by == "day" else []
    units = pieces if by == "day" else kept
    per_day = _daily(pieces, (lambda _piece: None) if by == "day" else key, now) if daily else ()
    members: dict[tuple[str | None, str], list[Interval]] = defaultdict(list)
    for unit in units:  # summarized per group and job, where the preempted nodes of one gang are one preemption
        members[(key(unit), unit.job)].append(unit)
    parts = [(group, job, summarize(rows, now)) for (group, job), rows in members.items()]
    # by day an interval across midnight is two pieces, and a gang's nodes may end either side of it: the totals count each once
    return grouped_report(parts, by, now=now, since=since, daily=per_day, pieces_of=kept)


def grouped_report(
    parts: Iterable[tuple[str | None, str, CostSummary]],
    by: str,
    *,
    now: float,
    since: float | None = None,
    daily: tuple[DailySpend, ...] = (),
    pieces_of: Sequence[Interval] | None = None,
) -> GroupReport:
    """A grouped report from partial figures, each (group key, job, summary) of some of a job's intervals in the group.

    A part is what the database summed, one running interval, or all of the job's units in the
    group: preemptions add up as long as no part splits the preempted rows of one attempt.
    ``pieces_of``: the intervals the parts were made of (cut at midnight by day); the totals count
    each of them, and each preemption, once.
    """
    figures: dict[str | None, CostSummary] = defaultdict(CostSummary)
    jobs: dict[str | None, set[str]] = defaultdict(set)
    for group, job, summary in parts:
        group = group or None  # no team, no user
        figures[group] += summary
        jobs[group].add(job)
    rows = [GroupRow(group, summary, len(jobs[group])) for group, summary in figures.items()]
    if by == "day":
        rows.sort(key=lambda row: row.key or "")
    else:
        rows.sort(key=lambda row: (-row.summary.spent_usd, row.key is None, row.key or ""))
    total = sum((row.summary for row in rows), CostSummary())
    if pieces_of is not None:
        total = replace(total, intervals=len(pieces_of), preemptions=count_preemptions(pieces_of))
    totals = GroupRow(None, total, len(set().union(*jobs.values())))
    return GroupReport(by, tuple(rows), totals, daily, now, since)


def job_report(job: str, intervals: Iterable[Interval], *, now: float, since: float | None = None) -> JobReport:
    """One job's intervals, attempt by attempt, with its totals; running intervals priced up to ``now``."""
    kept = [interval for interval in _still_running_after(intervals, since) if interval.job == job]
    rows = tuple(AttemptRow(interval, summarize([interval], now)) for interval in kept)
    daily = _daily(split_by_day(kept, now), lambda _piece: None, now)
    return JobReport(job, rows, summarize(kept, now), daily, now, since)


# ------------------------------------------------------------------ JSON


def _attempt_json(row: AttemptRow) -> dict[str, Any]:
    interval = row.interval
    return {
        "attempt": interval.attempt,
        "node": interval.node,
        "instance_id": interval.instance_id,
        "provider": interval.provider,
        "instance_type": interval.instance_type,
        "zone": interval.zone,
        "market": interval.market,
        "start": utc_iso(interval.start),
        "end": utc_iso(interval.end),
        "end_reason": interval.end_reason,
        "outcome": interval.outcome,
        **row.summary.to_json(),
        "steps_lost": interval.steps_lost,
        "team": interval.team,
        "tags": interval.tags,
        "launched_by": interval.launched_by,
    }


def report_json(report: Report) -> dict[str, Any]:
    """The report as one JSON-ready object."""
    common = {"generated_at": utc_iso(report.generated_at), "since": utc_iso(report.since)}
    if isinstance(report, JobReport):
        return {
            "job": report.job,
            "by": "attempt",
            **common,
            "attempts": [_attempt_json(row) for row in report.attempts],
            "totals": {**report.totals.to_json(), "jobs": 1 if report.attempts else 0},
        }
    return {
        "by": report.by,
        **common,
        "groups": [{"key": row.key, **row.to_json()} for row in report.groups],
        "totals": report.totals.to_json(),
    }


def render_json(report: Report) -> str:
    """The report as JSON text (one object)."""
    return json.dumps(report_json(report), indent=2) + "\n"


# ------------------------------------------------------------------- CSV

_GROUP_COLUMNS = (
    "spent_usd",
    "on_demand_usd",
    "savings_usd",
    "savings_pct",
    "gpu_hours",
    "instance_hours",
    "preemptions",
    "work_lost_s",
    "jobs",
    "intervals",
    "restart_s",
    "provisioning_s",
)
_ATTEMPT_COLUMNS = (
    "attempt",
    "node",
    "instance_id",
    "provider",
    "instance_type",
    "zone",
    "market",
    "start",
    "end",
    "end_reason",
    "outcome",
    "spent_usd",
    "on_demand_usd",
    "savings_usd",
    "savings_pct",
    "instance_hours",
    "gpu_hours",
    "preemptions",
    "work_lost_s",
    "steps_lost",
    "restart_s",
    "provisioning_s",
    "team",
    "launched_by",
    "tags",
)


def render_csv(report: Report) -> str:
    """A header row and one row per group (or per interval of a job); numbers unformatted, times ISO 8601 UTC."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    if isinstance(report, JobReport):
        writer.writerow(_ATTEMPT_COLUMNS)
        for row in map(_attempt_json, report.attempts):
            writer.writerow([json.dumps(row[name], sort_keys=True) if name == "tags" else csv_cell(row[name]) for name in _ATTEMPT_COLUMNS])
        return buffer.getvalue()
    key_column = report.by.replace("-", "_")
    writer.writerow([key_column, *_GROUP_COLUMNS])
    for group in report.groups:
        figures = group.to_json()
        writer.writerow([csv_cell(group.key), *(figures[name] for name in _GROUP_COLUMNS)])
    return buffer.getvalue()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula (OWASP CSV injection)


def csv_cell(value: Any) -> Any:
    """``value`` as a CSV cell: None is empty, and text a spreadsheet would run as a formula is quoted with ``'``.

    A team, tag or user is anyone's text (``=HYPERLINK(...)`` runs when the report is opened), so
    text starting with ``= + - @``, tab or CR gets a leading ``'``. Numbers are written as they
    are: a negative saving is a number, not a formula.
    """
    if value is None:
        return ""
    return f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


# ----------------------------------------------------------------- table

_FIGURE_HEADERS = ("spend", "on-demand", "saved", "saved %", "GPU h", "inst. h", "preempted", "work lost")


def _figures(summary: CostSummary) -> list[str]:
    return [
        format_usd(summary.spent_usd),
        format_usd(summary.on_demand_usd),
        format_usd(summary.savings_usd),
        f"{summary.savings_pct:.1f}%",
        f"{summary.gpu_hours:.2f}",
        f"{summary.instance_seconds / 3600.0:.2f}",
        str(summary.preemptions),
        format_duration(summary.work_lost_s),
    ]


def report_title(report: Report) -> str:
    """One line naming what the report covers."""
    window = f" since {utc_iso(report.since)}" if report.since is not None else ""
    if isinstance(report, JobReport):
        return f"cost of job {report.job}, attempt by attempt{window}"
    return f"spend by {report.by}{window}"


def render_table(report: Report) -> Table:
    """A rich Table for people; the last row holds the totals. User strings are never read as markup."""
    if isinstance(report, JobReport):
        multi_node = any(row.interval.node for row in report.attempts)
        # the money first: on a narrow terminal the columns on the right are the ones cut
        lead = ["#", *(["node"] if multi_node else [])]
        headers = [*lead, "ran (UTC)", "ended", "cost", "on-demand", "saved", "work lost", "restart", "type", "zone", "instance"]
        rows = []
        for row in report.attempts:
            interval, summary = row.interval, row.summary
            ended = "running" if interval.end is None else ": ".join(filter(None, (interval.outcome, interval.end_reason)))
            rows.append(
                [
                    str(interval.attempt),
                    *([str(interval.node)] if multi_node else []),
                    _span(interval.start, interval.end),
                    ended,
                    format_usd(summary.spent_usd),
                    format_usd(summary.on_demand_usd),
                    format_usd(summary.savings_usd),
                    format_duration(summary.work_lost_s),
                    format_duration(summary.restart_s),
                    f"{interval.instance_type} {interval.market}",
                    interval.zone,
                    interval.instance_id,
                ]
            )
        totals = report.totals
        total = [
            *[""] * len(lead),
            "total",
            f"{totals.intervals} intervals",
            format_usd(totals.spent_usd),
            format_usd(totals.on_demand_usd),
            format_usd(totals.savings_usd),
            format_duration(totals.work_lost_s),
            format_duration(totals.restart_s),
            "",
            "",
            "",
        ]
        numeric = set(range(len(lead))) | set(range(len(lead) + 2, len(lead) + 7))
        return _table(report_title(report), headers, rows, total, numeric)
    per_job = report.by != "job"  # by job, every row is one job
    headers = [report.by, *_FIGURE_HEADERS, *(["jobs"] if per_job else [])]
    rows = [
        [group_label(report.by, group.key), *_figures(group.summary), *([str(group.jobs)] if per_job else [])] for group in report.groups
    ]
    total = ["total", *_figures(report.totals.summary), *([str(report.totals.jobs)] if per_job else [])]
    return _table(report_title(report), headers, rows, total, set(range(1, len(headers))))


_TEXT_MIN_WIDTH = 10  # a text column folds on a narrow terminal, but not to nothing


def _table(title: str, headers: list[str], rows: list[list[str]], total: list[str], numeric: set[int]) -> Table:
    """Numbers are never cut short: on a narrow terminal the text columns fold instead. Cells are plain text, never markup."""
    table = Table(title=Text(title), box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for index, header in enumerate(headers):
        widest = max(len(cells[index]) for cells in [*rows, total])
        if index in numeric:  # as wide as its widest figure: only the header may wrap
            table.add_column(header, justify="right", min_width=widest)
        else:
            table.add_column(header, overflow="fold", min_width=min(widest, _TEXT_MIN_WIDTH))
    for index, cells in enumerate(rows):
        table.add_row(*map(Text, cells), end_section=index == len(rows) - 1)
    table.add_row(*map(Text, total), style="bold")
    return table


def _span(start: float, end: float | None) -> str:
    begun = datetime.fromtimestamp(start, UTC)
    if end is None:
        return f"{begun:%Y-%m-%d %H:%M} -> now"
    ended = datetime.fromtimestamp(end, UTC)
    return f"{begun:%Y-%m-%d %H:%M}-{ended:%H:%M}" if ended.date() == begun.date() else f"{begun:%Y-%m-%d %H:%M} -> {ended:%m-%d %H:%M}"
