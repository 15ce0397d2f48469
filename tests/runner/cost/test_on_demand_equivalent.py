"""The on-demand equivalent savings are measured against: one uninterrupted on-demand instance doing the job's productive work.

Ledger rows are closed the way the controller closes them (``ledger.share_at_close_usd``), and the
expected figures are worked out from the definition by hand: the first start's boot plus the
training kept, billed per second with one 60 s minimum for the whole job.
"""

from __future__ import annotations

from dataclasses import replace
from html import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from runner.cli.app import app
from runner.cost import ledger
from runner.cost.reports import group_report
from runner.cost.reports_html import render_html
from runner.state.store import Interval, Outcome

T0 = 1_773_136_800.0  # 2026-03-10T10:00Z
G5_ON_DEMAND = 1.006  # USD per hour


def _row(attempt: int, *, start: float, end: float | None, productive_at: float | None, lost_s: float | None, **fields: object) -> Interval:
    """A ledger row of job ``job`` on node 0: spot at $1/h, $3.60/h on demand unless ``fields`` say otherwise."""
    row = Interval(
        job="job",
        attempt=attempt,
        node=0,
        instance_id=f"i-{attempt}",
        provider="aws",
        instance_type="g5.xlarge",
        zone="us-east-1a",
        market="spot",
        gpus=1,
        price_usd_per_hour=1.0,
        on_demand_price_usd_per_hour=3.6,
        requested_at=start,
        start=start,
        end=end,
        end_reason=None,
        outcome=None,
        cost_usd=None,
        on_demand_usd=None,
        prices=(),
        productive_at=productive_at,
        work_lost_s=lost_s,
        steps_lost=None,
        team=None,
        tags={},
        launched_by="",
    )
    return replace(row, **fields)


def _closed(rows: list[Interval], row: Interval, *, outcome: Outcome, cost_usd: float = 0.0) -> Interval:
    """``row`` as the controller closes it after the job's ``rows``: billed, with its share of the on-demand equivalent."""
    assert row.end is not None
    share = ledger.share_at_close_usd([*rows, row], row, row.end, row.work_lost_s)
    return replace(row, outcome=outcome.value, cost_usd=cost_usd, on_demand_usd=share)


def test_many_short_preempted_intervals_are_compared_with_one_instance_doing_the_work_kept() -> None:
    """The issue's job: 74 spot intervals, 1420 instance-seconds, all but the last preempted within their first minute.

    Each one billed at the on-demand minimum made "on-demand would have cost $1.2407". Each interval
    boots for 4 s; the preempted ones train 15 s and lose the 5 s since their last checkpoint, the
    last trains 29 s and finishes: one instance would have booted once (4 s) and trained
    73 x 10 s + 29 s, 763 s in all.
    """
    rows: list[Interval] = []
    clock = T0
    for attempt in range(1, 75):
        last = attempt == 74
        seconds = 33.0 if last else 19.0
        row = _row(
            attempt,
            start=clock,
            end=clock + seconds,
            productive_at=clock + 4.0,
            lost_s=None if last else 5.0,
            instance_type="g5.xlarge" if attempt % 2 else "g5.2xlarge",
            team="vision",
            on_demand_price_usd_per_hour=G5_ON_DEMAND,
        )
        rows.append(
            _closed(rows, row, outcome=Outcome.FINISHED if last else Outcome.PREEMPTED, cost_usd=seconds * 0.4 / 3600 if last else 0.0)
        )
        clock += seconds + 7.0

    assert sum(row.end - row.start for row in rows if row.end is not None) == pytest.approx(1420.0)
    assert 74 * 60.0 * G5_ON_DEMAND / 3600 == pytest.approx(1.2407, abs=5e-5)  # the inflated figure: one minimum per interval
    summary = ledger.summarize(rows, clock)
    assert summary.on_demand_usd == pytest.approx(763.0 * G5_ON_DEMAND / 3600)  # $0.2132
    assert summary.savings_usd == pytest.approx((763.0 * G5_ON_DEMAND - 33.0 * 0.4) / 3600)
    by_type = group_report(rows, "instance-type", now=clock)
    by_team = group_report(rows, "team", now=clock)
    assert {row.key for row in by_type.groups} == {"g5.xlarge", "g5.2xlarge"}  # the figure is shared out between the types
    assert sum(row.summary.on_demand_usd for row in by_type.groups) == pytest.approx(summary.on_demand_usd)
    assert [row.summary.on_demand_usd for row in by_team.groups] == pytest.approx([summary.on_demand_usd])


def test_work_lost_on_every_start_leaves_one_boot_at_one_minimum() -> None:
    """200 starts that each train 3 s and lose it all (no checkpoint yet): the work kept is the first boot, billed as one minute."""
    rows: list[Interval] = []
    for attempt in range(1, 201):
        start = T0 + 10.0 * attempt
        rows.append(
            _closed(rows, _row(attempt, start=start, end=start + 5.0, productive_at=start + 2.0, lost_s=3.0), outcome=Outcome.PREEMPTED)
        )

    summary = ledger.summarize(rows, T0 + 3000.0)
    assert summary.on_demand_usd == pytest.approx(60 * 3.6 / 3600)  # 2 s of boot at the 60 s minimum, once
    assert summary.savings_usd == pytest.approx(0.06)  # not 200 minutes' worth ($12)


def test_a_running_interval_priced_alone_gets_the_same_share_as_with_its_job() -> None:
    """What the controller stores in a running row (its node's earlier work) is all a report needs to price it alone."""
    first = _row(1, start=0.0, end=20.0, productive_at=5.0, lost_s=None)  # 5 s boot + 15 s kept: inside the minimum
    first = replace(first, on_demand_usd=ledger.share_at_close_usd([first], first, 20.0, None), cost_usd=0.0)
    running = _row(2, start=30.0, end=None, productive_at=40.0, lost_s=None)
    alone = replace(running, on_demand_usd=ledger.open_row_on_demand_usd(running, ledger.worked_before_s([first, running], running, 100.0)))

    assert ledger.priced(alone, 100.0)[1] == pytest.approx(20 * 3.6 / 3600)  # 80 s of work in all, the first minute billed already
    assert ledger.summarize([first, alone], 100.0).on_demand_usd == pytest.approx(80 * 3.6 / 3600)


_span = st.tuples(
    st.floats(0, 600),  # wait before the launch
    st.floats(0.5, 4000),  # instance seconds
    st.one_of(st.none(), st.floats(0, 1)),  # when training began, as a fraction of the interval (None: it never did)
    st.floats(0, 1),  # the part of the training lost at the end
)


@settings(max_examples=150, deadline=None)
@given(spans=st.lists(_span, min_size=1, max_size=40), still_running=st.booleans())
def test_the_equivalent_never_exceeds_one_instance_from_first_launch_to_end_and_never_counts_lost_work(
    spans: list[tuple[float, float, float | None, float]], still_running: bool
) -> None:
    rows: list[Interval] = []
    clock = 1_700_000_000.0
    boot = kept = 0.0
    for number, (wait, seconds, training_from, lost_part) in enumerate(spans, 1):
        start = clock + wait
        end = start + seconds
        productive_at = None if training_from is None else start + training_from * seconds
        trained = 0.0 if productive_at is None else end - productive_at
        running = still_running and number == len(spans)
        lost = None if running else lost_part * trained
        row = _row(number, start=start, end=None if running else end, productive_at=productive_at, lost_s=lost)
        if running:  # priced alone, from what the controller stores in its row
            row = replace(row, on_demand_usd=ledger.open_row_on_demand_usd(row, ledger.worked_before_s([*rows, row], row, end)))
        else:
            row = replace(row, cost_usd=0.0, on_demand_usd=ledger.share_at_close_usd([*rows, row], row, end, lost))
        rows.append(row)
        boot = boot if number > 1 else (end if productive_at is None else productive_at) - start
        kept += trained - (lost or 0.0)
        clock = end

    equivalent = ledger.summarize(rows, clock).on_demand_usd
    one_instance_all_along = max(60.0, clock - rows[0].start) * 3.6 / 3600  # on demand from the first launch to the end
    assert equivalent <= one_instance_all_along * (1 + 1e-9)
    one_instance_for_the_work_kept = (max(60.0, boot + kept) if boot + kept > 0 else 0.0) * 3.6 / 3600
    assert equivalent == pytest.approx(one_instance_for_the_work_kept, rel=1e-9, abs=1e-12)


def test_cost_help_and_the_html_report_say_what_savings_are_measured_against() -> None:
    help_text = CliRunner().invoke(app, ["cost", "--help"], terminal_width=100).output
    rows = [_closed([], _row(1, start=T0, end=T0 + 600, productive_at=T0 + 30, lost_s=None), outcome=Outcome.FINISHED)]
    page = render_html(group_report(rows, "job", now=T0 + 600))

    assert ledger.ON_DEMAND_EQUIVALENT in " ".join(help_text.replace("│", " ").split())
    assert escape(ledger.ON_DEMAND_EQUIVALENT) in page
