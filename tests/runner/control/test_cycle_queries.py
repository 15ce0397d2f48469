"""One controller cycle reads every live job's rows in a constant number of SQL statements, however many jobs it drives.

A real SQLite store, the real local provider polling the files of running instances, and real
signed heartbeats in each job's prefix (``tests/support/running_jobs.py``); only the agents are
missing, so each heartbeat stays as written until the test writes the next. Every statement the
store's engine sends during the cycle is counted (``before_cursor_execute``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from running_jobs import ON_DEMAND_USD_PER_HOUR, SPOT_USD_PER_HOUR, RunningInstance, RunningJob, idle_host, local_instance, record_running
from specs import job_spec

from cloud.local import LocalProvider
from runner.control.controller import Controller, ControllerSettings
from runner.state import store as store_module
from runner.state.database import default_database_url
from runner.state.store import JobRows, JobState, StateStore

SETTINGS = ControllerSettings(poll_interval_s=0.2, stop_grace_s=1.0)


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[list[str]]:
    """Every SQL statement ``engine`` sends inside the block, in order."""
    sent: list[str] = []

    def count(connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        sent.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        yield sent
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)


def _selects(statements: list[str]) -> int:
    return sum(statement.lstrip().upper().startswith("SELECT") for statement in statements)


def _cycles(tmp_path: Path, jobs: int) -> tuple[list[str], list[str]]:
    """What a cycle over ``jobs`` running jobs sends when nothing changed, and when every job reported a new step."""
    home = tmp_path / f"{jobs}-jobs"
    store = StateStore(default_database_url(home))
    sections = {
        "resources": {"provider": "local", "market": "spot"},
        "local": {"notice_s": 5.0, "spot_price": SPOT_USD_PER_HOUR, "on_demand_price": ON_DEMAND_USD_PER_HOUR},
        "budget": {"max_usd": 50.0},  # a budget and its spending horizon, checked and renewed every cycle
    }
    with idle_host() as host:
        running: list[RunningJob] = []
        for number in range(jobs):
            spec = job_spec(
                {**sections, "checkpoint": {"url": f"file://{home}/checkpoints/job-{number:02d}"}},
                name=f"job-{number:02d}",
                workdir=str(home),
            )
            running.append(record_running(store, spec, lambda job: local_instance(home, job, host)))
        provider = LocalProvider(
            home,
            preempt_every_s=0.0,
            notice_s=5.0,
            seed=0,
            spot_price_usd_per_hour=SPOT_USD_PER_HOUR,
            on_demand_price_usd_per_hour=ON_DEMAND_USD_PER_HOUR,
        )
        controller = Controller(store, provider, agent_command=lambda job, attempt: ("spotrun", "agent"), settings=SETTINGS)
        names = [job.job.name for job in running]
        controller.cycle_many(names)  # the first look: takes the leases, notes each first heartbeat, grants each horizon
        with _statements(store.engine) as steady:
            controller.cycle_many(names)
        for job in running:
            job.beat(1300)
        with _statements(store.engine) as beating:
            after = controller.cycle_many(names)
    assert [job.state for job in after] == [JobState.RUNNING] * jobs
    steps = [job.training_progress.step if job.training_progress else None for job in after]
    assert steps == [1300] * jobs  # every job was watched: its new heartbeat is its progress
    return steady, beating


def test_a_cycle_reads_two_or_twenty_running_jobs_in_the_same_statements(tmp_path: Path) -> None:
    steady_2, beating_2 = _cycles(tmp_path, 2)
    steady_20, beating_20 = _cycles(tmp_path, 20)

    assert len(steady_20) == len(steady_2), "\n".join(steady_20)  # leases renewed together, every job's rows read together
    assert _selects(beating_20) == _selects(beating_2)  # each job's new progress is written (fenced by its lease), never read back


def test_the_snapshot_holds_what_reading_each_job_alone_gives_across_in_list_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five jobs read two names to an IN list (as 30,000 a list would split a bigger store), and one name that is no job."""
    store = StateStore(default_database_url(tmp_path))
    names = []
    for number in range(5):
        spec = job_spec({"checkpoint": {"url": f"file://{tmp_path}/checkpoints/job-{number}"}}, name=f"job-{number}", workdir=str(tmp_path))
        instance = RunningInstance(f"i-{number:017x}", "local", "local", 1_780_000_000.0 + number)
        names.append(record_running(store, spec, lambda job, instance=instance: instance).job.name)
    monkeypatch.setattr(store_module, "_NAMES_PER_STATEMENT", 2)

    with _statements(store.engine) as sent:
        snapshot = store.live_snapshot([*reversed(names), "no-such-job"])

    assert _selects(sent) == 3 * 3  # jobs, attempts, ledger rows: one SELECT each per list of names
    assert snapshot == {name: JobRows(store.job(name), tuple(store.attempts(name)), tuple(store.intervals(name))) for name in names}
    assert [row.instance_id for row in snapshot["job-3"].open_intervals] == [f"i-{3:017x}"]
