"""The ledger against what AWS billed, job by job, from AWS Cost Explorer.

Every instance spotrun launches carries the ``spotrun:job`` tag; once that tag is activated as a
cost allocation tag, Cost Explorer splits EC2 compute spend by it. Both sides cover the same whole
UTC days: the ledger's AWS intervals are cut at midnight (``reports.split_by_day``) and clipped to
the first day of the period. Example: ledger $4.10 for job ``a``, Cost Explorer $4.30: +$0.20
(+4.9 %). A job Cost Explorer does not know yet (its data lags up to 24 h) shows as ledger only;
a job another state store launched in the same account shows as Cost Explorer only.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError
from rich.table import Table
from rich.text import Text

from cloud.errors import ProviderError
from cloud.provider import TAG_JOB
from runner.cost.ledger import summarize
from runner.cost.reports import csv_cell, format_usd, split_by_day, utc_day, utc_iso
from runner.state.store import Interval

CE_REGION = "us-east-1"  # Cost Explorer has one endpoint, in us-east-1, whatever region the instances ran in
EC2_COMPUTE_SERVICE = "Amazon Elastic Compute Cloud - Compute"  # instance-hours only: what the ledger prices
CE_HISTORY_DAYS = 365  # Cost Explorer keeps 13 months by default; older days would be refused
DEFAULT_PERIOD_DAYS = 30  # when the ledger has no AWS interval to start from
_LAG_HINT = "Cost Explorer data lags up to 24 h"
_TAG_HINT = (
    f"activate the {TAG_JOB} cost allocation tag in the Billing console (Billing > Cost allocation tags; "
    f"costs are tagged from activation on); {_LAG_HINT}"
)
_ERROR_ADVICE = {
    "AccessDeniedException": "this AWS identity may not read Cost Explorer: it needs ce:GetCostAndUsage, "
    "and Cost Explorer must be enabled for the account (Billing console > Cost Explorer)",
    "DataUnavailableException": f"no Cost Explorer data for {{period}} yet: {_LAG_HINT}, and about a day after Cost Explorer is first enabled",
    "LimitExceededException": "Cost Explorer is rate limiting this account; try again in a minute",
    "ValidationException": f"Cost Explorer refused the request; --since may reach further back than the {CE_HISTORY_DAYS} days it keeps",
    "UnrecognizedClientException": "the AWS credentials were not accepted; refresh them (aws sso login, or new access keys)",
    "ExpiredTokenException": "the AWS session has expired; refresh it (aws sso login) and try again",
}
_ERROR_ADVICE["AccessDenied"] = _ERROR_ADVICE["AccessDeniedException"]


def cost_explorer_client() -> Any:
    """A boto3 Cost Explorer client in us-east-1 with a few quick retries (honours AWS_ENDPOINT_URL)."""
    config = Config(region_name=CE_REGION, retries={"mode": "standard", "total_max_attempts": 3}, connect_timeout=10, read_timeout=30)
    return boto3.client("ce", region_name=CE_REGION, config=config)


@dataclass(frozen=True)
class CostExplorerSpend:
    """EC2 compute spend per ``spotrun:job`` tag value over a period, and what carried no such tag."""

    by_job: dict[str, float]
    untagged_usd: float
    estimated: bool  # some days are not final yet


def cost_explorer_spend(client: Any, start_day: str, end_day: str) -> CostExplorerSpend:
    """EC2 compute UnblendedCost per job tag, DAILY from ``start_day`` up to (not including) ``end_day``, every page."""
    request: dict[str, Any] = {
        "TimePeriod": {"Start": start_day, "End": end_day},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        "GroupBy": [{"Type": "TAG", "Key": TAG_JOB}],
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": [EC2_COMPUTE_SERVICE]}},
    }
    by_job: dict[str, float] = defaultdict(float)
    untagged = 0.0
    estimated = False
    seen_tokens: set[str] = set()
    while True:
        try:
            page = client.get_cost_and_usage(**request)
        except (ClientError, BotoCoreError) as error:
            raise ProviderError(_explain(error, f"{start_day}..{end_day}")) from error
        for day in page.get("ResultsByTime", []):
            estimated = estimated or bool(day.get("Estimated"))
            for group in day.get("Groups", []):
                key = group["Keys"][0]
                job = key.split("$", 1)[1] if "$" in key else key  # "spotrun:job$NAME"; "spotrun:job$" is untagged
                amount = float(group["Metrics"]["UnblendedCost"]["Amount"])
                if job:
                    by_job[job] += amount
                else:
                    untagged += amount
        token = page.get("NextPageToken")
        if not token:
            return CostExplorerSpend(dict(by_job), untagged, estimated)
        if token in seen_tokens:
            raise ProviderError(f"Cost Explorer returned page token {token!r} twice; stopped reading to avoid looping")
        seen_tokens.add(token)
        request["NextPageToken"] = token


def _explain(error: ClientError | BotoCoreError, period: str) -> str:
    """One line the user can act on, for an error from Cost Explorer."""
    if isinstance(error, NoCredentialsError):
        return "Cost Explorer: no AWS credentials found; configure them (aws configure, aws sso login or AWS_PROFILE)"
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        code, message = str(details.get("Code", "error")), str(details.get("Message", "")).strip()
        advice = _ERROR_ADVICE.get(code)
        said = f" ({message})" if message else ""
        if advice is None:
            return f"Cost Explorer: {code}{said}"
        return f"Cost Explorer: {code}{said}: {advice.format(period=period)}"
    return f"Cost Explorer could not be reached: {error}"


@dataclass(frozen=True)
class ReconcileRow:
    """One job's spend on both sides; ``difference_usd`` > 0: AWS billed more than the ledger shows."""

    job: str
    ledger_usd: float
    cost_explorer_usd: float
    in_ledger: bool
    in_cost_explorer: bool

    @property
    def difference_usd(self) -> float:
        """Cost Explorer minus ledger."""
        return self.cost_explorer_usd - self.ledger_usd

    @property
    def difference_pct(self) -> float | None:
        """The difference as a percentage of the ledger's figure; None when the ledger has nothing."""
        return 100.0 * self.difference_usd / self.ledger_usd if self.ledger_usd > 0 else None

    @property
    def seen_in(self) -> str:
        """both, ledger only, or Cost Explorer only."""
        if self.in_ledger and self.in_cost_explorer:
            return "both"
        return "ledger only" if self.in_ledger else "Cost Explorer only"

    def to_json(self) -> dict[str, Any]:
        """The row's figures, rounded to the micro-dollar."""
        pct = self.difference_pct
        return {
            "job": self.job,
            "ledger_usd": round(self.ledger_usd, 6),
            "cost_explorer_usd": round(self.cost_explorer_usd, 6),
            "difference_usd": round(self.difference_usd, 6),
            "difference_pct": None if pct is None else round(pct, 2),
            "seen_in": self.seen_in,
        }


@dataclass(frozen=True)
class Reconciliation:
    """Ledger vs Cost Explorer per job over the whole UTC days ``start_day`` up to (not including) ``end_day``."""

    start_day: str
    end_day: str
    rows: tuple[ReconcileRow, ...]
    untagged_usd: float
    estimated: bool
    generated_at: float
    notes: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """One JSON-ready object: period, rows, totals and notes."""
        ledger = sum(row.ledger_usd for row in self.rows)
        explorer = sum(row.cost_explorer_usd for row in self.rows)
        return {
            "start": self.start_day,
            "end": self.end_day,
            "generated_at": utc_iso(self.generated_at),
            "jobs": [row.to_json() for row in self.rows],
            "totals": {
                "ledger_usd": round(ledger, 6),
                "cost_explorer_usd": round(explorer, 6),
                "difference_usd": round(explorer - ledger, 6),
            },
            "untagged_usd": round(self.untagged_usd, 6),
            "estimated": self.estimated,
            "notes": list(self.notes),
        }


def reconcile(
    intervals: Iterable[Interval], *, now: float, since: float | None = None, job: str | None = None, client: Any = None
) -> Reconciliation:
    """Each job's AWS spend in the ledger against Cost Explorer's, from ``since``'s day (else the first AWS interval's) to today."""
    aws = [interval for interval in intervals if interval.provider == "aws" and (job is None or interval.job == job)]
    today = date.fromisoformat(utc_day(now))
    notes = []
    if since is not None:
        first = date.fromisoformat(utc_day(since))
    elif aws:
        first = date.fromisoformat(utc_day(min(interval.start for interval in aws)))
    else:
        first = today - timedelta(days=DEFAULT_PERIOD_DAYS)
    if first < today - timedelta(days=CE_HISTORY_DAYS):
        first = today - timedelta(days=CE_HISTORY_DAYS)
        notes.append(f"only the last {CE_HISTORY_DAYS} days are compared: Cost Explorer keeps no older data by default")
    start_day, end_day = first.isoformat(), (today + timedelta(days=1)).isoformat()
    period_start = (first - date(1970, 1, 1)).days * 86400.0
    pieces: dict[str, list[Interval]] = defaultdict(list)
    for piece in split_by_day(aws, now, since=period_start):
        pieces[piece.job].append(piece)
    ledger = {name: summarize(members, now).spent_usd for name, members in pieces.items()}
    spend = cost_explorer_spend(client if client is not None else cost_explorer_client(), start_day, end_day)
    explorer = {name: usd for name, usd in spend.by_job.items() if job is None or name == job}
    if not explorer and sum(ledger.values()) > 0:
        raise ProviderError(
            f"Cost Explorer shows no EC2 spend tagged {TAG_JOB} for {start_day}..{end_day} while the ledger has "
            f"{format_usd(sum(ledger.values()))}: {_TAG_HINT}"
        )
    rows = tuple(
        ReconcileRow(name, ledger.get(name, 0.0), explorer.get(name, 0.0), name in ledger, name in explorer)
        for name in sorted(set(ledger) | set(explorer))
    )
    if any(row.in_ledger and not row.in_cost_explorer for row in rows):
        notes.append(f"jobs in the ledger only may have run in the last day: {_LAG_HINT}")
    if spend.estimated:
        notes.append("Cost Explorer marks some of these days as estimated: its figures may still change")
    return Reconciliation(start_day, end_day, rows, spend.untagged_usd, spend.estimated, now, tuple(notes))


def render_reconcile_json(result: Reconciliation) -> str:
    """The reconciliation as JSON text."""
    return json.dumps(result.to_json(), indent=2) + "\n"


def render_reconcile_csv(result: Reconciliation) -> str:
    """A header row and one row per job; numbers unformatted."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    columns = ("job", "ledger_usd", "cost_explorer_usd", "difference_usd", "difference_pct", "seen_in")
    writer.writerow(columns)
    for row in result.rows:
        figures = row.to_json()
        writer.writerow([csv_cell(figures[name]) for name in columns])
    return buffer.getvalue()


def render_reconcile_table(result: Reconciliation) -> Table:
    """A rich Table: job, ledger, Cost Explorer, difference $ and %, where the job was seen; totals last."""
    table = Table(
        title=Text(f"ledger vs AWS Cost Explorer (EC2 compute), {result.start_day} to {result.end_day} (exclusive)"),
        caption=Text(f"untagged EC2 compute in the account: {format_usd(result.untagged_usd)}; {_LAG_HINT}"),
    )
    table.add_column("job")
    for header in ("ledger", "Cost Explorer", "difference", "difference %"):
        table.add_column(header, justify="right")
    table.add_column("seen in")
    for index, row in enumerate(result.rows):
        pct = row.difference_pct
        table.add_row(
            Text(row.job),
            format_usd(row.ledger_usd),
            format_usd(row.cost_explorer_usd),
            format_usd(row.difference_usd),
            "-" if pct is None else f"{pct:+.1f}%",
            row.seen_in,
            end_section=index == len(result.rows) - 1,
        )
    ledger = sum(row.ledger_usd for row in result.rows)
    explorer = sum(row.cost_explorer_usd for row in result.rows)
    table.add_row(
        "total",
        format_usd(ledger),
        format_usd(explorer),
        format_usd(explorer - ledger),
        f"{100 * (explorer - ledger) / ledger:+.1f}%" if ledger > 0 else "-",
        "",
        style="bold",
    )
    return table
