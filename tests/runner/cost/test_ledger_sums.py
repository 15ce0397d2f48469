"""The database's sums of the ledger (what `spotrun cost --by` reads over a team's store) agree with summarizing every
interval in Python, on SQLite and on PostgreSQL."""

from __future__ import annotations

import random

import pytest
from ledger_rows import add_interval

from runner.cost.queries import report_for
from runner.cost.reports import LEDGER_COLUMNS, group_report, report_json
from runner.state.store import Outcome, StateStore

NOW = 1_800_000_000.0


def _random_ledger(store: StateStore, rng: random.Random) -> None:
    for number in range(40):
        job = f"job-{number:02d}"
        team = rng.choice(["vision", "speech", None, ""])
        user = rng.choice(["ana", "ben", ""])
        clock = NOW - rng.uniform(5 * 86400, 40 * 86400)
        for attempt in range(1, rng.randint(2, 5)):
            start = clock + rng.uniform(0, 600)
            end = start + rng.uniform(30, 20000)
            running = attempt == 4 or (number % 7 == 0 and attempt == 2)
            preempted = not running and rng.random() < 0.4
            add_interval(
                store,
                job,
                attempt,
                start,
                None if running else end,
                cost_usd=rng.uniform(0, 30),
                on_demand_usd=rng.uniform(30, 90),
                price=rng.uniform(0.2, 3.0),
                instance_type=rng.choice(["g5.xlarge", "p4d.24xlarge"]),
                zone=rng.choice(["us-east-1a", "us-east-1b"]),
                gpus=rng.choice([1, 8]),
                team=team,
                launched_by=user,
                outcome=Outcome.PREEMPTED if preempted else Outcome.FINISHED,
                work_lost_s=rng.uniform(0, 300) if rng.random() < 0.7 else None,
                productive_at=start + rng.uniform(-10, 400) if rng.random() < 0.8 else None,
                requested_at=start - rng.uniform(-5, 120),
            )
            clock = end + rng.uniform(0, 3600)
            if running:
                break


@pytest.mark.parametrize("since", [None, NOW - 20 * 86400])
def test_summed_by_the_database_every_grouping_agrees_with_every_interval_summarized(database_url: str, since: float | None) -> None:
    store = StateStore(database_url)
    _random_ledger(store, random.Random(7))
    for by in LEDGER_COLUMNS:
        fast = report_json(report_for(store, None, by, now=NOW, since=since, charts=False))
        slow = report_json(group_report(store.intervals(since=since), by, now=NOW, since=since, daily=False))
        assert [group["key"] for group in fast["groups"]] == [group["key"] for group in slow["groups"]], by
        for fast_row, slow_row in zip([*fast["groups"], fast["totals"]], [*slow["groups"], slow["totals"]], strict=True):
            assert fast_row.keys() == slow_row.keys()
            for field, value in fast_row.items():
                expected = slow_row[field]
                assert value == (expected if isinstance(expected, str | None) else pytest.approx(expected, rel=1e-9, abs=1e-6)), (
                    by,
                    fast_row.get("key"),
                    field,
                )
    assert any(interval.end is None for interval in store.intervals())  # running intervals were in the mix
