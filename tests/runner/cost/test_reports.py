"""Cost reports over ledger rows written through the real StateStore; every expected figure computed by hand."""

from __future__ import annotations

import csv
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from ledger_rows import add_interval, at
from rich.console import Console

from runner.cost.reports import group_report, job_report, render_csv, render_json, render_table, split_by_day
from runner.cost.reports_html import render_html
from runner.state.database import default_database_url
from runner.state.store import Outcome, StateStore

NOW = at("2026-03-12T00:00")


@pytest.fixture
def store(tmp_path: Path) -> StateStore:
    return StateStore(default_database_url(tmp_path))


@pytest.fixture
def three_jobs(store: StateStore) -> StateStore:
    """a (team ml): a 2 h spot attempt preempted, then 1 h; b (team vision): 4 h on a 4-GPU spot instance; c (no team): 30 min on demand."""
    add_interval(
        store,
        "a",
        1,
        at("2026-03-10T10:00"),
        at("2026-03-10T12:00"),
        cost_usd=1.0,
        on_demand_usd=3.0,
        team="ml",
        outcome=Outcome.PREEMPTED,
        work_lost_s=300,
        productive_at=at("2026-03-10T10:02"),
    )
    add_interval(
        store,
        "a",
        2,
        at("2026-03-10T12:05"),
        at("2026-03-10T13:05"),
        cost_usd=0.5,
        on_demand_usd=1.5,
        team="ml",
        requested_at=at("2026-03-10T12:00"),
        productive_at=at("2026-03-10T12:10"),
    )
    add_interval(
        store,
        "b",
        1,
        at("2026-03-10T10:00"),
        at("2026-03-10T14:00"),
        cost_usd=2.0,
        on_demand_usd=6.0,
        team="vision",
        gpus=4,
        instance_type="p3.8xlarge",
        zone="us-east-1b",
        launched_by="bob",
    )
    add_interval(
        store,
        "c",
        1,
        at("2026-03-10T11:00"),
        at("2026-03-10T11:30"),
        cost_usd=0.75,
        on_demand_usd=0.75,
        market="on-demand",
        price=1.5,
        gpus=0,
        instance_type="m5.large",
        launched_by="alice",
    )
    return store


def test_groups_by_team_sum_each_teams_intervals(three_jobs: StateStore) -> None:
    report = group_report(three_jobs.intervals(), "team", now=NOW)

    rows = {row.key: row for row in report.groups}
    assert [row.key for row in report.groups] == ["vision", "ml", None]  # most spend first
    ml = rows["ml"].summary
    assert (ml.spent_usd, ml.on_demand_usd, ml.savings_usd) == pytest.approx((1.5, 4.5, 3.0))
    assert ml.savings_pct == pytest.approx(200 / 3)
    assert (ml.gpu_hours, ml.instance_seconds, ml.preemptions, ml.work_lost_s) == pytest.approx((3.0, 3 * 3600, 1, 300))
    assert rows["ml"].jobs == 1
    vision = rows["vision"].summary
    assert (vision.spent_usd, vision.on_demand_usd, vision.gpu_hours, vision.preemptions) == pytest.approx((2.0, 6.0, 16.0, 0))
    none = rows[None].summary
    assert (none.spent_usd, none.savings_usd, none.gpu_hours, none.instance_seconds) == pytest.approx((0.75, 0.0, 0.0, 1800))
    totals = report.totals
    assert (totals.summary.spent_usd, totals.summary.on_demand_usd, totals.summary.savings_usd) == pytest.approx((4.25, 11.25, 7.0))
    assert totals.summary.savings_pct == pytest.approx(100 * 7.0 / 11.25)
    assert (totals.summary.gpu_hours, totals.summary.intervals, totals.jobs) == pytest.approx((19.0, 4, 3))


@pytest.mark.parametrize(
    ("by", "expected"),
    [
        ("job", {"b": 2.0, "a": 1.5, "c": 0.75}),
        ("user", {"bob": 2.0, None: 1.5, "alice": 0.75}),
        ("instance-type", {"p3.8xlarge": 2.0, "g5.xlarge": 1.5, "m5.large": 0.75}),
        ("zone", {"us-east-1a": 2.25, "us-east-1b": 2.0}),
    ],
)
def test_every_grouping_splits_the_same_spend(three_jobs: StateStore, by: str, expected: dict[str | None, float]) -> None:
    report = group_report(three_jobs.intervals(), by, now=NOW)

    assert {row.key: row.summary.spent_usd for row in report.groups} == pytest.approx(expected)
    assert report.totals.summary.spent_usd == pytest.approx(4.25)


def test_an_interval_across_midnight_is_split_between_days_by_seconds(store: StateStore) -> None:
    add_interval(
        store,
        "night",
        1,
        at("2026-03-10T22:00"),
        at("2026-03-11T04:00"),
        cost_usd=6.0,
        on_demand_usd=12.0,
        outcome=Outcome.PREEMPTED,
        work_lost_s=600,
        productive_at=at("2026-03-10T22:30"),
    )

    report = group_report(store.intervals(), "day", now=NOW)

    first, second = report.groups
    assert (first.key, second.key) == ("2026-03-10", "2026-03-11")
    assert (first.summary.spent_usd, first.summary.on_demand_usd, first.summary.instance_seconds) == pytest.approx((2.0, 4.0, 2 * 3600))
    assert (second.summary.spent_usd, second.summary.on_demand_usd, second.summary.instance_seconds) == pytest.approx((4.0, 8.0, 4 * 3600))
    # restart time lies in the first day; the preemption and its lost work in the day it happened
    assert (first.summary.restart_s, first.summary.preemptions, first.summary.work_lost_s) == pytest.approx((1800, 0, 0))
    assert (second.summary.restart_s, second.summary.preemptions, second.summary.work_lost_s) == pytest.approx((0, 1, 600))
    assert (report.totals.summary.spent_usd, report.totals.summary.intervals) == pytest.approx((6.0, 1))


def test_since_keeps_intervals_running_after_it_and_clips_days_to_the_window(store: StateStore) -> None:
    add_interval(store, "old", 1, at("2026-03-01T00:00"), at("2026-03-01T01:00"), cost_usd=9.0, on_demand_usd=9.0)
    add_interval(store, "night", 1, at("2026-03-10T22:00"), at("2026-03-11T04:00"), cost_usd=6.0, on_demand_usd=12.0)
    since = at("2026-03-11T01:00")

    by_job = group_report(store.intervals(since=since), "job", now=NOW, since=since)
    by_day = group_report(store.intervals(), "day", now=NOW, since=since)  # the report filters too

    assert {row.key: row.summary.spent_usd for row in by_job.groups} == pytest.approx({"night": 6.0})
    assert {row.key: row.summary.spent_usd for row in by_day.groups} == pytest.approx({"2026-03-11": 3.0})
    assert by_day.totals.summary.on_demand_usd == pytest.approx(6.0)


def test_running_intervals_are_priced_up_to_now_by_the_billing_rules(store: StateStore) -> None:
    now = at("2026-03-11T00:30")
    add_interval(store, "live", 1, at("2026-03-10T23:30"), None, price=0.6, on_demand_price=1.5)
    add_interval(store, "brief", 1, now - 30, None, market="on-demand", price=3.6, on_demand_price=3.6)

    by_job = group_report(store.intervals(), "job", now=now)
    by_day = group_report(store.intervals(), "day", now=now)

    rows = {row.key: row.summary for row in by_job.groups}
    assert (rows["live"].spent_usd, rows["live"].on_demand_usd) == pytest.approx((0.6, 1.5))
    assert rows["brief"].spent_usd == pytest.approx(60 * 3.6 / 3600)  # on demand: at least a minute is billed
    days = {row.key: row.summary for row in by_day.groups}
    assert days["2026-03-10"].spent_usd == pytest.approx(0.3)
    assert days["2026-03-11"].spent_usd == pytest.approx(0.3 + 0.06)


def test_split_by_day_pieces_add_up_to_the_interval(store: StateStore) -> None:
    add_interval(store, "long", 1, at("2026-03-08T12:00"), at("2026-03-10T06:00"), cost_usd=42.0, on_demand_usd=84.0)

    pieces = split_by_day(store.intervals(), NOW)

    assert [piece.end - piece.start for piece in pieces] == [12 * 3600, 24 * 3600, 6 * 3600]
    assert [piece.cost_usd for piece in pieces] == pytest.approx([12.0, 24.0, 6.0])
    assert sum(piece.on_demand_usd or 0 for piece in pieces) == pytest.approx(84.0)


def test_job_report_lists_each_interval_with_its_figures(three_jobs: StateStore) -> None:
    report = job_report("a", three_jobs.intervals("a"), now=NOW)

    first, second = report.attempts
    assert (first.interval.attempt, first.interval.outcome) == (1, "preempted")
    assert (first.summary.spent_usd, first.summary.on_demand_usd, first.summary.savings_usd) == pytest.approx((1.0, 3.0, 2.0))
    assert (first.summary.work_lost_s, first.summary.restart_s) == pytest.approx((300, 120))
    assert (second.summary.work_lost_s, second.summary.restart_s, second.summary.provisioning_s) == pytest.approx((0, 300, 300))
    assert (report.totals.spent_usd, report.totals.restart_s, report.totals.preemptions) == pytest.approx((1.5, 420, 1))


def test_json_holds_groups_totals_and_the_window(three_jobs: StateStore) -> None:
    since = at("2026-03-01T00:00")
    document = json.loads(render_json(group_report(three_jobs.intervals(), "team", now=NOW, since=since)))

    assert (document["by"], document["since"], document["generated_at"]) == ("team", "2026-03-01T00:00:00Z", "2026-03-12T00:00:00Z")
    assert [group["key"] for group in document["groups"]] == ["vision", "ml", None]
    assert document["groups"][1]["jobs"] == 1
    assert document["groups"][1]["savings_usd"] == pytest.approx(3.0)
    assert document["totals"]["spent_usd"] == pytest.approx(4.25) and document["totals"]["jobs"] == 3


def test_csv_has_a_header_and_one_unformatted_row_per_group(three_jobs: StateStore) -> None:
    text = render_csv(group_report(three_jobs.intervals(), "instance-type", now=NOW))

    rows = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0].startswith("instance_type,spent_usd,on_demand_usd,savings_usd,savings_pct")
    assert [row["instance_type"] for row in rows] == ["p3.8xlarge", "g5.xlarge", "m5.large"]
    assert float(rows[0]["spent_usd"]) == 2.0 and float(rows[0]["gpu_hours"]) == 16.0 and rows[0]["jobs"] == "1"

    attempts = list(csv.DictReader(io.StringIO(render_csv(job_report("a", three_jobs.intervals("a"), now=NOW)))))
    assert [(row["attempt"], row["outcome"], float(row["spent_usd"])) for row in attempts] == [
        ("1", "preempted", 1.0),
        ("2", "finished", 0.5),
    ]
    assert attempts[0]["start"] == "2026-03-10T10:00:00Z"


def test_tables_render_user_strings_as_text(three_jobs: StateStore) -> None:
    add_interval(three_jobs, "[bold]x[/bold]", 1, at("2026-03-11T10:00"), at("2026-03-11T11:00"), cost_usd=0.1, on_demand_usd=0.3)
    console = Console(record=True, width=220)

    console.print(render_table(group_report(three_jobs.intervals(), "job", now=NOW)))
    console.print(render_table(job_report("a", three_jobs.intervals("a"), now=NOW)))

    text = console.export_text()
    assert "[bold]x[/bold]" in text and "total" in text and "$4.35" in text
    assert "preempted" in text and "spot-interruption" in text


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parsed(document: str) -> _Page:
    page = _Page()
    page.feed(document)
    page.close()
    return page


@pytest.fixture
def hostile(three_jobs: StateStore) -> StateStore:
    """A job whose name, team and tags are HTML, running over two days."""
    add_interval(
        three_jobs,
        "<script>alert(1)</script>",
        1,
        at("2026-03-11T09:00"),
        at("2026-03-11T10:00"),
        cost_usd=0.2,
        on_demand_usd=0.9,
        team="<b>ops</b>",
        tags={"note": "<img src=x onerror=alert(2)>"},
    )
    return three_jobs


def test_html_is_one_self_contained_page_with_a_chart(hostile: StateStore) -> None:
    document = render_html(group_report(hostile.intervals(), "team", now=NOW))

    page = _parsed(document)
    assert "http://" not in document and "https://" not in document
    assert not [value for name, value in page.attributes if name in ("src", "href")]
    assert "svg" in page.tags and "polyline" in page.tags and "title" in page.tags
    assert not {"script", "link", "img", "iframe", "object"} & set(page.tags)
    text = "".join(page.text)
    assert "spent $4.45" in text and "would have cost $12.15" in text and "saved $7.70 (63.4 %)" in text
    assert "<b>ops</b>" in text  # shown as text, not markup
    assert "<b>ops</b>, 2026-03-11: $0.20 so far ($0.20 that day)" in text  # a point's hover value


def test_html_of_a_job_escapes_its_name_and_tags(hostile: StateStore) -> None:
    document = render_html(job_report("<script>alert(1)</script>", hostile.intervals("<script>alert(1)</script>"), now=NOW))

    page = _parsed(document)
    assert not {"script", "img"} & set(page.tags)
    assert "&lt;script&gt;" in document
    text = "".join(page.text)
    assert "Cost of training job <script>alert(1)</script>" in text
    assert "note=<img src=x onerror=alert(2)>" in text
    assert "svg" in page.tags


def test_html_of_an_empty_ledger_says_so(store: StateStore) -> None:
    page = _parsed(render_html(group_report(store.intervals(), "day", now=NOW)))

    assert "No instance time was recorded in this period." in "".join(page.text)
    assert "svg" not in page.tags
