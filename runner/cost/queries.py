"""Cost reports read from the state store, with the database doing the sums where it can.

A team's store holds every interval of thousands of jobs, too many to read only to sum them in
Python. Grouped by a ledger column, the database sums the
closed intervals (one row per job comes back) and only the running ones, whose cost grows until
now, are priced here. The HTML page's daily chart needs every interval, cut at midnight.
"""

from __future__ import annotations

from runner.cost.ledger import closed_sums, summarize
from runner.cost.reports import LEDGER_COLUMNS, Report, group_report, grouped_report, job_report
from runner.state.store import StateStore


def report_for(store: StateStore, job: str | None, by: str, *, now: float, since: float | None, charts: bool) -> Report:
    """One job's report, or every job's grouped ``by``; ``charts``: with the daily spend the HTML page draws."""
    if job is not None:
        return job_report(job, store.intervals(job, since=since), now=now, since=since)
    if by in LEDGER_COLUMNS and not charts:
        key = LEDGER_COLUMNS[by]
        running = [
            (getattr(interval, key), interval.job, summarize([interval], now)) for interval in store.intervals(since=since, priced=False)
        ]
        return grouped_report([*closed_sums(store, key, since=since), *running], by, now=now, since=since)
    return group_report(store.intervals(since=since), by, now=now, since=since)  # every interval, cut at midnight for the daily spend
