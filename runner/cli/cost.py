"""`spotrun cost`: what jobs cost and saved, grouped, one job attempt by attempt, or against AWS Cost Explorer.

A thin command over ``runner.cost.reports`` and ``runner.cost.reconcile``: every option is checked before the
store is opened or AWS is called, and ``-o FILE`` is written through a temporary file and a rename,
so a failed run leaves the previous report whole.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from checkpoints.durations import parse_duration
from runner.cost.queries import report_for
from runner.cost.reports import FORMATS, GROUPINGS, JobReport, Report, render_csv, render_json, render_table
from runner.cost.reports_html import render_html
from runner.errors import SpecError, SpotrunError
from runner.state.paths import spotrun_home
from runner.state.store import open_store

out = Console()
err = Console(stderr=True)
_TEXT_WIDTH = 200  # a table written to a file is not wrapped to a terminal


def cost(
    job: Annotated[str | None, typer.Argument(help="A job: its spend attempt by attempt. Left out: every job, grouped with --by.")] = None,
    by: Annotated[str | None, typer.Option("--by", help=f"Group every job's spend by {', '.join(GROUPINGS)} (default: job).")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only instances still running in this window back from now, e.g. 30d, 12h.")
    ] = None,
    output_format: Annotated[
        str, typer.Option("--format", help="table, json, csv, or html: one self-contained page to share, usually written with -o.")
    ] = "table",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file (replaced whole) instead of stdout.")] = None,
    reconcile: Annotated[
        bool, typer.Option("--reconcile", help="Compare each job's AWS spend in the ledger with AWS Cost Explorer (spotrun:job tag).")
    ] = False,
) -> None:
    """What jobs cost and saved against on-demand: grouped, one job attempt by attempt, or reconciled with AWS.

    Savings compare with what one uninterrupted on-demand instance per node would have cost for the job's productive work: the training whose results were kept (not the work lost since the last checkpoint when an instance was taken away or stopped) plus one start's boot to its first training step, billed per second with one 60 s minimum per job, not one per interval.
    """
    _check_choice("--format", output_format, FORMATS)
    if by is not None:
        _check_choice("--by", by, GROUPINGS)
        if job is not None:
            raise SpecError(f"--by groups every job's spend; leave it out to see job {job!r} attempt by attempt")
        if reconcile:
            raise SpecError("--by does not apply to --reconcile, which compares job by job")
    if reconcile and output_format == "html":
        raise SpecError("--format html is not available with --reconcile; use table, json or csv")
    window_s = _since_seconds(since)
    store = open_store(spotrun_home())
    now = time.time()
    since_at = None if window_s is None else now - window_s
    if job is not None:
        store.job(job)  # JobNotFoundError lists the jobs there are
    if reconcile:  # compares whole UTC days: it clips the intervals to the first day itself
        from runner.cost.reconcile import reconcile as reconcile_with_cost_explorer  # boto3: imported for --reconcile only
        from runner.cost.reconcile import render_reconcile_csv, render_reconcile_json, render_reconcile_table

        result = reconcile_with_cost_explorer(store.intervals(job), now=now, since=since_at, job=job)
        for note in result.notes:
            err.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        renderers = {"json": render_reconcile_json, "csv": render_reconcile_csv}
        _emit(render_reconcile_table(result) if output_format == "table" else renderers[output_format](result), output)
        return
    report = report_for(store, job, by or "job", now=now, since=since_at, charts=output_format == "html")
    if _intervals(report) == 0 and output_format == "table":
        window = f" in the last {since}" if since is not None else ""
        err.print(f"no instance time in the ledger{window}" + (f" for job {job}" if job else ""), markup=False, highlight=False)
    if output_format == "table":
        _emit(render_table(report), output)
    else:
        _emit({"json": render_json, "csv": render_csv, "html": render_html}[output_format](report), output)


def _intervals(report: Report) -> int:
    return len(report.attempts) if isinstance(report, JobReport) else report.totals.summary.intervals


def _check_choice(option: str, value: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        raise SpecError(f"{option}: expected one of {', '.join(accepted)}; got {value!r}")


def _since_seconds(since: str | None) -> float | None:
    if since is None:
        return None
    try:
        seconds = parse_duration(since)
    except ValueError as error:
        raise SpecError(f"--since: {error} (counted back from now; 30d is thirty days)") from None
    if seconds <= 0:
        raise SpecError(f"--since: expected a window longer than zero, such as 30d or 12h; got {since!r}")
    return seconds


def _emit(rendered: str | Table, output: Path | None) -> None:
    """Print to stdout, or replace ``output`` whole; a table written to a file is plain text."""
    if output is None:
        if isinstance(rendered, Table):
            out.print(rendered)
        else:
            sys.stdout.write(rendered)
        return
    if isinstance(rendered, Table):
        buffer = io.StringIO()
        Console(file=buffer, width=_TEXT_WIDTH, no_color=True, highlight=False, force_terminal=False).print(rendered)
        rendered = buffer.getvalue()
    write_atomically(output, rendered)
    err.print(f"wrote {output}", markup=False, highlight=False, soft_wrap=True)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` through a temporary file in the same folder and a rename: readers never see half a file."""
    path = path.expanduser()
    if path.is_dir():
        raise SpecError(f"-o: {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise SpecError(f"-o: the folder {path.parent} does not exist")
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise SpotrunError(f"-o: cannot write in {path.parent}: {error.strerror or error}") from None
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        if isinstance(error, OSError):
            raise SpotrunError(f"-o: could not write {path}: {error.strerror or error}") from None
        raise
