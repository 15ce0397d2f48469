"""A cost report as one self-contained HTML page, for people who never ran spotrun.

No network: inline CSS, inline SVG charts, system fonts. Every string that came from a user
(job names, teams, users, zones) passes through ``html.escape``. The page says in words what it
shows, the totals in a sentence, then cumulative spend and savings per day per group (values on
hover, via SVG ``<title>``), then the table and what its columns mean.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from html import escape

from checkpoints.durations import format_duration
from runner.cost.ledger import ON_DEMAND_EQUIVALENT, CostSummary
from runner.cost.reports import DailySpend, GroupReport, JobReport, Report, format_usd, group_label

_COLORS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")  # Okabe-Ito: colour-blind safe
_MAX_SERIES = len(_COLORS)
_WIDTH, _HEIGHT = 760, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 78, 200, 20, 58

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: #1d1d1f;
       margin: 0; background: #fafafa; line-height: 1.45; }
main { max-width: 1100px; margin: 0 auto; padding: 24px; background: #fff; }
h1 { font-size: 1.6em; margin: 0 0 8px; }
h2 { font-size: 1.15em; margin: 28px 0 8px; }
p.lead { color: #444; margin: 0 0 12px; }
p.totals { font-size: 1.1em; background: #eef6ee; border-left: 4px solid #009e73; padding: 10px 14px; }
figure { margin: 0 0 16px; }
figcaption { color: #555; font-size: 0.9em; }
svg { max-width: 100%; height: auto; font-size: 11px; }
svg text { fill: #333; }
svg .grid { stroke: #e3e3e3; }
svg .axis { stroke: #888; }
svg circle:hover { r: 5; }
table { border-collapse: collapse; width: 100%; font-size: 0.92em; }
th, td { padding: 5px 8px; border-bottom: 1px solid #e5e5e5; text-align: left; white-space: nowrap; }
th { background: #f3f3f3; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tfoot td { font-weight: bold; border-top: 2px solid #999; }
dl { font-size: 0.9em; color: #444; }
dt { font-weight: bold; margin-top: 6px; }
dd { margin-left: 16px; }
footer { color: #777; font-size: 0.85em; margin-top: 24px; }
"""

_GLOSSARY = (
    (
        "Spend",
        "what the cloud charged for the instances, by its billing rules (per second; spot instances the cloud "
        "interrupts within their first hour are free). Instances still running are counted up to the report's time.",
    ),
    (
        "On-demand equivalent",
        f"{ON_DEMAND_EQUIVALENT}. Boots after the first, work lost and time between instances "
        "are what spot costs on top, so they are not counted.",
    ),
    ("Saved", "on-demand equivalent minus spend: what using spot instances saved."),
    ("GPU-hours", "hours of instance time multiplied by the GPUs of each instance."),
    ("Preemptions", "times the cloud took a spot instance back; spotrun then resumed the job from its last checkpoint."),
    ("Work lost", "training time done after the last saved checkpoint when an instance was taken back, done again later."),
    ("Restart", "billed time before training made progress on an instance: boot, installation, loading the checkpoint."),
)


@dataclass(frozen=True)
class _Series:
    name: str
    values: tuple[float, ...]  # cumulative, one per day
    dashed: bool = False


def render_html(report: Report) -> str:
    """The report as one HTML document (a string), with nothing fetched from anywhere."""
    title, lead = _title_and_lead(report)
    totals = report.totals if isinstance(report, JobReport) else report.totals.summary
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{escape(title)}</h1>",
        f'<p class="lead">{lead}</p>',
        f'<p class="totals">{_totals_sentence(report, totals)}</p>',
        *_charts(report),
        f"<h2>{'Attempt by attempt' if isinstance(report, JobReport) else 'By ' + escape(report.by)}</h2>",
        _job_table(report) if isinstance(report, JobReport) else _group_table(report),
        "<h2>What the columns mean</h2><dl>",
        *(f"<dt>{escape(term)}</dt><dd>{escape(meaning)}</dd>" for term, meaning in _GLOSSARY),
        "</dl>",
        f"<footer>Generated {escape(_when(report.generated_at))} by spotrun from its cost ledger. "
        "Times are UTC. Figures for running instances grow until they stop.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _period(report: Report) -> str:
    if report.since is not None:
        return f"from {_when(report.since)} to {_when(report.generated_at)}"
    if report.daily:
        return f"from {report.daily[0].day} (the first recorded instance) to {_when(report.generated_at)}"
    return f"up to {_when(report.generated_at)}"


def _title_and_lead(report: Report) -> tuple[str, str]:
    if isinstance(report, JobReport):
        title = f"Cost of training job {report.job}"
        lead = (
            f"What the cloud instances of the training job <strong>{escape(report.job)}</strong> cost, {escape(_period(report))}, "
            "one row per instance it ran on, and what one uninterrupted on-demand instance would have cost for the same work."
        )
        return title, lead + _job_labels(report)
    noun = {"instance-type": "instance type", "user": "person who launched the job"}.get(report.by, report.by)
    title = f"Training spend by {noun}"
    lead = (
        f"What spotrun training jobs spent on cloud spot instances, {escape(_period(report))}, grouped by {escape(noun)}, "
        "and what one uninterrupted on-demand instance per job would have cost for the same work."
    )
    return title, lead


def _job_labels(report: JobReport) -> str:
    if not report.attempts:
        return ""
    first = report.attempts[0].interval
    labels = [f"team {escape(first.team)}" if first.team else "", f"launched by {escape(first.launched_by)}" if first.launched_by else ""]
    if first.tags:
        labels.append("tags " + ", ".join(f"{escape(key)}={escape(value)}" for key, value in sorted(first.tags.items())))
    kept = [label for label in labels if label]
    return f" Recorded with it: {'; '.join(kept)}." if kept else ""


def _totals_sentence(report: Report, totals: CostSummary) -> str:
    if totals.intervals == 0:
        return "No instance time was recorded in this period."
    jobs = 1 if isinstance(report, JobReport) else report.totals.jobs
    return (
        f"In total, {jobs} job{'s' if jobs != 1 else ''} spent <strong>{format_usd(totals.spent_usd)}</strong>; "
        f"one uninterrupted on-demand instance per job (and node) would have cost <strong>{format_usd(totals.on_demand_usd)}</strong> "
        "for the training kept, "
        f"so spot instances saved <strong>{format_usd(totals.savings_usd)} ({totals.savings_pct:.1f} %)</strong>. "
        f"That bought {totals.gpu_hours:,.1f} GPU-hours over {totals.instance_seconds / 3600:,.1f} instance-hours; "
        + (
            f"the cloud took instances back {totals.preemptions} time{'s' if totals.preemptions != 1 else ''}, "
            f"losing {escape(format_duration(totals.work_lost_s))} of training that was done again."
            if totals.preemptions
            else "the cloud took no instance back."
        )
    )


# ---------------------------------------------------------------- charts


def _days(daily: tuple[DailySpend, ...]) -> list[str]:
    first, last = date.fromisoformat(daily[0].day), date.fromisoformat(daily[-1].day)
    return [(first + timedelta(days=offset)).isoformat() for offset in range((last - first).days + 1)]


def _cumulative(points: list[DailySpend], days: list[str], value: str) -> tuple[float, ...]:
    per_day: dict[str, float] = defaultdict(float)
    for point in points:
        per_day[point.day] += point.spent_usd if value == "spent" else point.on_demand_usd - point.spent_usd
    running, values = 0.0, []
    for day in days:
        running += per_day[day]
        values.append(running)
    return tuple(values)


def _charts(report: Report) -> list[str]:
    if not report.daily:
        return []
    days = _days(report.daily)
    groups = {point.group for point in report.daily}
    if isinstance(report, JobReport) or len(groups) == 1:
        points = list(report.daily)
        series = [_Series("spend", _cumulative(points, days, "spent")), _Series("saved", _cumulative(points, days, "saved"), dashed=True)]
        name = "this job" if isinstance(report, JobReport) else "all jobs"
        return ["<h2>Spend and savings over time</h2>", _figure(days, series, f"Cumulative spend and savings of {name}, per day (UTC)")]
    by = report.by
    spend_by_group: dict[str | None, list[DailySpend]] = defaultdict(list)
    for point in report.daily:
        spend_by_group[point.group].append(point)
    ranked = sorted(spend_by_group, key=lambda group: (-sum(p.spent_usd for p in spend_by_group[group]), group or ""))
    shown, rest = ranked[: _MAX_SERIES - 1], ranked[_MAX_SERIES - 1 :]
    if len(rest) == 1:
        shown, rest = ranked, []
    named = [(group_label(by, group), spend_by_group[group]) for group in shown]
    if rest:
        named.append((f"{len(rest)} others", [point for group in rest for point in spend_by_group[group]]))
    spend = [_Series(label, _cumulative(points, days, "spent")) for label, points in named]
    saved = [_Series(label, _cumulative(points, days, "saved")) for label, points in named]
    return [
        "<h2>Spend over time</h2>",
        _figure(days, spend, f"Cumulative spend per {by}, per day (UTC)"),
        "<h2>Savings over time</h2>",
        _figure(days, saved, f"Cumulative savings against on-demand per {by}, per day (UTC)"),
    ]


def _figure(days: list[str], series: list[_Series], caption: str) -> str:
    return f"<figure>{_line_chart(days, series, caption)}<figcaption>{escape(caption)}. Hover a point for its value.</figcaption></figure>"


def _ticks(low: float, high: float) -> list[float]:
    """Round axis values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if high - low <= 0:
        high = low + 1.0
    raw = (high - low) / 4
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(factor * magnitude for factor in (1, 2, 5, 10) if factor * magnitude >= raw)
    first, last = math.floor(low / step), math.ceil(high / step)
    return [index * step for index in range(first, last + 1)]


def _line_chart(days: list[str], series: list[_Series], caption: str) -> str:
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    values = [value for line in series for value in line.values]
    ticks = _ticks(min(0.0, *values), max(0.0, *values))
    low, high = ticks[0], ticks[-1]

    def x(index: int) -> float:
        return _LEFT + (plot_w * index / (len(days) - 1) if len(days) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return _TOP + plot_h * (1 - (value - low) / (high - low))

    out = [
        f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" role="img" aria-label="{escape(caption)}">',
        f"<title>{escape(caption)}</title>",
    ]
    for tick in ticks:
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{escape(format_usd(tick))}</text>')
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT}" y1="{_TOP}" y2="{_TOP + plot_h}"/>')
    out.append(f'<line class="axis" x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y(0):.1f}" y2="{y(0):.1f}"/>')
    stride = max(1, math.ceil(len(days) / 8))
    for index in range(0, len(days), stride):
        label = date.fromisoformat(days[index]).strftime("%b %d")
        out.append(f'<text x="{x(index):.1f}" y="{_TOP + plot_h + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_HEIGHT - 8}" text-anchor="middle">day (UTC)</text>')
    out.append(f'<text transform="translate(14 {_TOP + plot_h / 2:.1f}) rotate(-90)" text-anchor="middle">USD, cumulative</text>')
    for number, line in enumerate(series):
        color = _COLORS[number % len(_COLORS)]
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        points = " ".join(f"{x(index):.1f},{y(value):.1f}" for index, value in enumerate(line.values))
        out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{points}"/>')
        previous = 0.0
        for index, value in enumerate(line.values):
            hover = f"{line.name}, {days[index]}: {format_usd(value)} so far ({format_usd(value - previous)} that day)"
            out.append(f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="3" fill="{color}"><title>{escape(hover)}</title></circle>')
            previous = value
        legend_y = _TOP + 10 + 18 * number
        legend_x = _LEFT + plot_w + 16
        name = line.name if len(line.name) <= 22 else line.name[:21] + "…"
        out.append(f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{legend_y}" y2="{legend_y}" stroke="{color}" stroke-width="3"{dash}/>')
        out.append(f'<text x="{legend_x + 24}" y="{legend_y + 4}"><title>{escape(line.name)}</title>{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


# ---------------------------------------------------------------- tables

_NUMERIC_HEADERS = ("Spend", "On-demand equivalent", "Saved", "Saved %", "GPU-hours", "Instance-hours", "Preemptions", "Work lost")


def _figure_cells(summary: CostSummary) -> str:
    cells = (
        format_usd(summary.spent_usd),
        format_usd(summary.on_demand_usd),
        format_usd(summary.savings_usd),
        f"{summary.savings_pct:.1f} %",
        f"{summary.gpu_hours:,.2f}",
        f"{summary.instance_seconds / 3600:,.2f}",
        str(summary.preemptions),
        format_duration(summary.work_lost_s),
    )
    return "".join(f'<td class="num">{escape(cell)}</td>' for cell in cells)


def _group_table(report: GroupReport) -> str:
    header = f"<th>{escape(report.by.capitalize())}</th>" + "".join(f'<th class="num">{name}</th>' for name in (*_NUMERIC_HEADERS, "Jobs"))
    rows = [
        f'<tr><td>{escape(group_label(report.by, group.key))}</td>{_figure_cells(group.summary)}<td class="num">{group.jobs}</td></tr>'
        for group in report.groups
    ]
    footer = f'<tr><td>Total</td>{_figure_cells(report.totals.summary)}<td class="num">{report.totals.jobs}</td></tr>'
    return f"<table><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody><tfoot>{footer}</tfoot></table>"


def _job_table(report: JobReport) -> str:
    headers = (
        "Attempt",
        "Node",
        "Instance",
        "Type",
        "Zone",
        "Market",
        "Start (UTC)",
        "End (UTC)",
        "How it ended",
        "Cost",
        "On-demand equivalent",
        "Saved",
        "Work lost",
        "Restart",
    )
    numeric = {"Attempt", "Node", "Cost", "On-demand equivalent", "Saved", "Work lost", "Restart"}
    head = "".join(f'<th class="num">{name}</th>' if name in numeric else f"<th>{name}</th>" for name in headers)
    rows = []
    for row in report.attempts:
        interval, summary = row.interval, row.summary
        ended = "still running" if interval.end is None else " / ".join(filter(None, (interval.outcome, interval.end_reason)))
        texts = (
            interval.instance_id,
            interval.instance_type,
            interval.zone,
            interval.market,
            datetime.fromtimestamp(interval.start, UTC).strftime("%Y-%m-%d %H:%M"),
            "" if interval.end is None else datetime.fromtimestamp(interval.end, UTC).strftime("%Y-%m-%d %H:%M"),
            ended,
        )
        numbers = (
            format_usd(summary.spent_usd),
            format_usd(summary.on_demand_usd),
            format_usd(summary.savings_usd),
            format_duration(summary.work_lost_s),
            format_duration(summary.restart_s),
        )
        rows.append(
            f'<tr><td class="num">{interval.attempt}</td><td class="num">{interval.node}</td>'
            + "".join(f"<td>{escape(text)}</td>" for text in texts)
            + "".join(f'<td class="num">{escape(number)}</td>' for number in numbers)
            + "</tr>"
        )
    totals = report.totals
    footer = (
        f'<tr><td colspan="9">Total ({totals.intervals} intervals)</td>'
        + "".join(
            f'<td class="num">{escape(value)}</td>'
            for value in (
                format_usd(totals.spent_usd),
                format_usd(totals.on_demand_usd),
                format_usd(totals.savings_usd),
                format_duration(totals.work_lost_s),
                format_duration(totals.restart_s),
            )
        )
        + "</tr>"
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody><tfoot>{footer}</tfoot></table>"
