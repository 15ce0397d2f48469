"""One count of preemptions and attempts, whatever shows it: a preemption is one attempt the cloud ended, however many nodes it took.

The gang case is the one that used to disagree: both nodes of a two-node gang taken in one attempt
were one preemption in the job row and the final report, and two in the cost reports (one per
ledger row). Here it is recorded through the real SQLite store the way the controller records it
(the attempt preempted, each lost node's row preempted), and read back by `spotrun status --json`,
the report `spotrun run` ends with, and `spotrun cost`, one job and grouped.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from specs import job_spec
from typer.testing import CliRunner

from checkpoints.store import CheckpointStore
from cloud.provider import ProviderPriors
from runner.cli import views
from runner.cli.app import app
from runner.cli.summaries import job_summary
from runner.cost import forecast
from runner.cost.figures import job_figures
from runner.cost.reports import group_report, job_report
from runner.state.database import default_database_url
from runner.state.store import Attempt, Interval, JobState, Outcome, StateStore

NOW = 1_800_000_000.0


def _attempt(job: str, number: int, start: float, *, nodes_end: float | None = None, outcome: Outcome | None = None) -> Attempt:
    return Attempt(
        job=job,
        number=number,
        token=f"{job}-{number}",
        provider="local",
        instance_type="g5.xlarge",
        zone="local-a",
        market="spot",
        price_usd_per_hour=0.4,
        on_demand_price_usd_per_hour=1.2,
        instance_id=f"i-{number}-0",
        requested_at=start,
        launched_at=start,
        ended_at=nodes_end,
        end_reason=None if outcome is None else "spot-interruption",
        outcome=outcome,
        exit_code=None,
        gpus=1,
    )


def _row(job: str, attempt: int, node: int, start: float, end: float | None, outcome: Outcome | None) -> Interval:
    closed = end is not None
    return Interval(
        job=job,
        attempt=attempt,
        node=node,
        instance_id=f"i-{attempt}-{node}",
        provider="local",
        instance_type="g5.xlarge",
        zone="local-a",
        market="spot",
        gpus=1,
        price_usd_per_hour=0.4,
        on_demand_price_usd_per_hour=1.2,
        requested_at=start,
        start=start,
        end=end,
        end_reason="spot-interruption" if outcome is Outcome.PREEMPTED else ("exited" if closed else None),
        outcome=None if outcome is None else outcome.value,
        cost_usd=0.01 if closed else None,
        on_demand_usd=0.03 if closed else None,
        prices=((start, 0.4),),
        productive_at=start + 5.0,
        work_lost_s=20.0 if outcome is Outcome.PREEMPTED else None,
        steps_lost=None,
        team="ml",
        tags={},
        launched_by="ana",
    )


def _record_attempt(store: StateStore, attempt: Attempt, node_outcomes: dict[int, Outcome], end: float) -> None:
    """What the controller writes for one attempt of a gang: the attempt, each node's open row, then the end of both."""
    store.start_attempt(_open(attempt))
    for node in node_outcomes:
        store.set_launched(_row(attempt.job, attempt.number, node, attempt.requested_at, None, None))
    assert attempt.outcome is not None
    store.end_attempt(attempt.job, attempt.number, ended_at=end, end_reason="spot-interruption", outcome=attempt.outcome, exit_code=None)
    for node, outcome in node_outcomes.items():
        closed = _row(attempt.job, attempt.number, node, attempt.requested_at, end, outcome)
        assert closed.end_reason is not None and closed.cost_usd is not None and closed.on_demand_usd is not None
        store.close_interval(
            attempt.job,
            attempt.number,
            node=node,
            end=end,
            end_reason=closed.end_reason,
            outcome=outcome,
            cost_usd=closed.cost_usd,
            on_demand_usd=closed.on_demand_usd,
            prices=closed.prices,
            work_lost_s=closed.work_lost_s,
            steps_lost=None,
        )


def _open(attempt: Attempt) -> Attempt:
    """The attempt as recorded before its launch: no end yet."""
    return replace(attempt, ended_at=None, end_reason=None, outcome=None)


def test_a_gang_preempted_whole_once_then_finishing_shows_one_preemption_and_two_attempts_everywhere(
    spotrun_home: Path, tmp_path: Path
) -> None:
    store = StateStore(default_database_url(spotrun_home))
    url = f"file://{tmp_path}/ckpt"
    spec = job_spec({"resources": {"provider": "local", "nodes": 2}, "team": "ml"}, name="gang", workdir=str(tmp_path))
    store.create_job(spec, spec_path="gang.yaml", checkpoint_url=url)
    now = time.time()
    # attempt 1: the cloud takes both nodes at once; attempt 2 trains to the end
    _record_attempt(
        store, _attempt("gang", 1, now - 600, outcome=Outcome.PREEMPTED), {0: Outcome.PREEMPTED, 1: Outcome.PREEMPTED}, now - 400
    )
    _record_attempt(store, _attempt("gang", 2, now - 390, outcome=Outcome.FINISHED), {0: Outcome.FINISHED, 1: Outcome.FINISHED}, now - 60)
    store.set_state("gang", JobState.SUCCEEDED, "training finished")
    attempts = store.attempts("gang")
    documented = sum(1 for attempt in attempts if attempt.outcome is Outcome.PREEMPTED)
    assert documented == 1 and sum(1 for row in store.intervals("gang") if row.outcome == "preempted") == 2  # two rows, one preemption

    status = CliRunner().invoke(app, ["status", "gang", "--json"])
    cost = CliRunner().invoke(app, ["cost", "gang", "--format", "json"])
    by_team = CliRunner().invoke(app, ["cost", "--by", "team", "--format", "json"])  # summed by the database
    by_day = CliRunner().invoke(app, ["cost", "--by", "day", "--format", "json"])  # every interval, cut at midnight
    summary = job_summary(store.job("gang"), attempts, store.intervals("gang"))
    report = "\n".join(views.final_report(summary, attempts, CheckpointStore(url)))

    assert [result.exit_code for result in (status, cost, by_team, by_day)] == [0, 0, 0, 0], [status.output, cost.output]
    shown = json.loads(status.stdout)
    assert (shown["preemptions"], shown["attempts"]) == (documented, 2)
    assert f"2 attempts, {documented} preempted, 0 restarts after errors" in report
    job_cost = json.loads(cost.stdout)
    assert job_cost["totals"]["preemptions"] == documented
    assert sorted({row["attempt"] for row in job_cost["attempts"]}) == [1, 2] and len(job_cost["attempts"]) == 4  # a row per node
    assert [group["preemptions"] for group in json.loads(by_team.stdout)["groups"]] == [documented]
    assert json.loads(by_team.stdout)["totals"]["preemptions"] == json.loads(by_day.stdout)["totals"]["preemptions"] == documented


# One attempt: how many nodes it launched, how it ended (None: still running), and, preempted, which nodes the cloud took.
_ENDS = st.sampled_from([None, *Outcome])
_SHAPE = st.integers(1, 4).flatmap(lambda nodes: st.tuples(st.just(nodes), _ENDS, st.sets(st.integers(0, nodes - 1), min_size=1)))


def _ledger(shapes: list[tuple[int, Outcome | None, set[int]]]) -> tuple[list[Attempt], list[Interval]]:
    """Attempts of shapes, one after the other, with their rows as the controller closes them: preempted nodes lost, the rest stopped."""
    attempts, rows = [], []
    for number, (nodes, outcome, lost) in enumerate(shapes, start=1):
        start = NOW - 86400 + number * 1000.0
        end = None if outcome is None else start + 600.0
        attempts.append(_attempt("job", number, start, nodes_end=end, outcome=outcome))
        for node in range(nodes):
            ended = outcome if outcome is not Outcome.PREEMPTED else (Outcome.PREEMPTED if node in lost else Outcome.STOPPED)
            rows.append(_row("job", number, node, start, end, ended))
    return attempts, rows


@settings(max_examples=150, deadline=None)
@given(st.lists(_SHAPE, max_size=6))
def test_preemptions_are_the_attempts_the_cloud_ended_however_many_nodes_it_took(
    shapes: list[tuple[int, Outcome | None, set[int]]],
) -> None:
    attempts, rows = _ledger(shapes)
    preempted = sum(1 for attempt in attempts if attempt.outcome is Outcome.PREEMPTED)

    figures = job_figures(attempts, rows, NOW)

    assert (figures.preemptions, figures.attempts) == (preempted, len(shapes))
    assert job_report("job", rows, now=NOW).totals.preemptions == preempted
    for by in ("job", "team", "zone", "day"):
        assert group_report(rows, by, now=NOW).totals.summary.preemptions == preempted, by


def test_an_attempt_not_launched_yet_is_an_attempt_without_a_row() -> None:
    attempts, rows = _ledger([(2, Outcome.PREEMPTED, {1})])
    provisioning = _open(_attempt("job", 2, NOW - 10))

    figures = job_figures([*attempts, provisioning], rows, NOW)

    assert (figures.attempts, figures.preemptions, figures.cost.intervals) == (2, 1, 2)


def test_a_gang_s_preemption_rate_is_per_gang_time_not_per_node() -> None:
    """Two nodes for 600 s, one of them taken: the gang ran 600 s per preemption (not 1200 s of instance time)."""
    _, rows = _ledger([(2, Outcome.PREEMPTED, {1})])

    assert (
        forecast.spot_seconds_between_preemptions(rows, NOW, ProviderPriors(restart_overhead_s=15.0, spot_s_between_preemptions=None))
        == 600.0
    )
