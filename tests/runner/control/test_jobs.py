"""What a user can ask of a job (submit, resume, cancel), called directly: a real SQLite store, the real local provider.

Each refusal is checked to write nothing; each request that goes ahead, to leave the store as the
next controller cycle needs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from ledger_rows import add_interval

from cloud.provider import Market, Offer, ProviderPriors
from runner.control import jobs
from runner.control.admission import admit
from runner.control.jobs import NoteLevel, Submitted
from runner.errors import BudgetError, JobStateError, SpecError
from runner.spec.job_spec import JobSpec, load_spec
from runner.state.store import JobState, StateStore, open_store

OTHER_CONTROLLER = "service@elsewhere"


def _spec(tmp_path: Path, **sections: Any) -> tuple[JobSpec, Path]:
    path = tmp_path / "job.yaml"
    document = {"name": "job", "train": {"command": "python train.py"}, "checkpoint": {"url": str(tmp_path / "ckpt")}, **sections}
    path.write_text(yaml.safe_dump(document))
    return load_spec(path, workdir=tmp_path), path


def _submit(tmp_path: Path, *, force: bool = False, **sections: Any) -> Submitted:
    home = tmp_path / "home"
    spec, path = _spec(tmp_path, **sections)
    return jobs.submit(spec, spec_path=path, open_store=lambda: open_store(home), home=home, launched_by="ana", force=force)


def _store_contents(store: StateStore) -> tuple[Any, ...]:
    job = store.job("job")
    return job.state, job.spec_json, job.cancel_requested, [event for _, event in store.events("job")]


def _spent(store: StateStore, usd: float) -> None:
    """One closed local interval that cost ``usd``."""
    now = time.time()
    add_interval(
        store, "job", 1, now - 600, now - 60, cost_usd=usd, price=0.45, on_demand_price=1.006, provider="local", instance_type="local"
    )


# ------------------------------------------------------------------ submit


def test_submit_refuses_a_forecast_beyond_the_budget_and_records_nothing(tmp_path: Path) -> None:
    with pytest.raises(BudgetError, match=r"^forecast \$4\.5.* exceeds the \$1\.00 budget; raise budget.max_usd, or run with --force"):
        _submit(tmp_path, budget={"max_usd": 1.0, "expected_runtime": "10h"})

    assert open_store(tmp_path / "home").jobs() == []


def test_submit_with_force_records_the_job_and_warns_of_the_forecast(tmp_path: Path) -> None:
    submitted = _submit(tmp_path, force=True, budget={"max_usd": 1.0, "expected_runtime": "10h"})

    [note] = submitted.notes
    assert note.level is NoteLevel.WARNING and note.text.startswith("warning: forecast $4.5") and "going ahead (--force)" in note.text
    assert submitted.store.job("job").state is JobState.PENDING and submitted.job.launched_by == "ana"
    assert submitted.resumes_from_step is None


def test_submit_within_the_budget_shows_the_forecast_with_the_results(tmp_path: Path) -> None:
    submitted = _submit(tmp_path, budget={"max_usd": 50.0, "expected_runtime": "1h"})

    [note] = submitted.notes
    assert note.level is NoteLevel.INFO and note.text.startswith("forecast $0.4") and note.text.endswith("of the $50.00 budget")


def test_submit_refuses_a_checkpoint_url_it_cannot_use_before_opening_the_store(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    spec, path = _spec(tmp_path, checkpoint={"url": str(tmp_path / "a-file" / "ckpt")})

    def no_store() -> StateStore:
        raise AssertionError("the store was opened for a checkpoint URL spotrun cannot use")

    with pytest.raises(SpecError, match=r"checkpoint\.url: expected storage spotrun can list, write, read and delete in, got "):
        jobs.submit(spec, spec_path=path, open_store=no_store, home=tmp_path / "home", launched_by="ana", force=False)


# ------------------------------------------------------------------ resume


def test_resume_with_a_budget_below_what_was_spent_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = _submit(tmp_path, budget={"max_usd": 5.0}).store
    _spent(store, 2.0)
    store.set_state("job", JobState.BUDGET_EXHAUSTED, "spent")
    before = _store_contents(store)

    with pytest.raises(BudgetError) as refused:
        jobs.resume(store, "job", home=tmp_path / "home", budget=1.5)

    assert str(refused.value) == "--budget: job 'job' already spent $2.0000; give a total budget above that, got $1.50"
    assert _store_contents(store) == before


def test_resume_of_a_budget_exhausted_job_with_a_larger_budget_moves_it_to_recovering(tmp_path: Path) -> None:
    store = _submit(tmp_path, budget={"max_usd": 5.0}).store
    _spent(store, 2.0)
    store.set_state("job", JobState.BUDGET_EXHAUSTED, "spent")

    resumed = jobs.resume(store, "job", home=tmp_path / "home", budget=10.0)

    job = store.job("job")
    assert job.state is JobState.RECOVERING and job.message == "resumed with a $10.00 budget ($2.0000 spent)"
    assert job.spec.budget.max_usd == 10.0 and job.budget_alerted_pct == 0
    assert resumed.should_drive and resumed.applied_by is None
    [note] = resumed.notes  # nothing measured and no expected_runtime: enforced, not forecast
    assert note.level is NoteLevel.WARNING and note.text.startswith("no cost forecast before training has run")


def test_resume_of_a_budget_exhausted_job_without_a_budget_asks_for_one(tmp_path: Path) -> None:
    store = _submit(tmp_path, budget={"max_usd": 5.0}).store
    store.set_state("job", JobState.BUDGET_EXHAUSTED, "spent")
    before = _store_contents(store)

    with pytest.raises(BudgetError) as refused:
        jobs.resume(store, "job", home=tmp_path / "home")

    assert str(refused.value) == "job 'job' spent its $5.00 budget; give it a larger one: `spotrun resume job --budget USD`"
    assert _store_contents(store) == before


def test_resume_of_a_job_another_controller_drives_leaves_the_new_budget_to_it(tmp_path: Path) -> None:
    store = _submit(tmp_path, budget={"max_usd": 5.0}).store
    store.for_controller(OTHER_CONTROLLER).acquire_leases(["job"], ttl_s=600)

    resumed = jobs.resume(store, "job", home=tmp_path / "home", budget=8.0)

    assert not resumed.should_drive and resumed.applied_by == OTHER_CONTROLLER
    assert (
        resumed.notes[-1].text
        == f"job job: budget set to $8.00; controller {OTHER_CONTROLLER}, which drives it, applies it on its next cycle"
    )
    job = store.job("job")
    assert job.spec.budget.max_usd == 8.0 and job.state is JobState.PENDING


def test_resume_of_an_ended_job_is_refused(tmp_path: Path) -> None:
    store = _submit(tmp_path).store
    store.set_state("job", JobState.SUCCEEDED, "done")

    with pytest.raises(JobStateError, match=r"^job 'job' already ended \(SUCCEEDED\); nothing to resume$"):
        jobs.resume(store, "job", home=tmp_path / "home")


def test_resume_refuses_a_budget_that_is_no_budget_before_reading_the_job(tmp_path: Path) -> None:
    store = _submit(tmp_path).store
    before = _store_contents(store)

    with pytest.raises(SpecError, match=r"^--budget: expected a budget in US dollars above 0"):
        jobs.resume(store, "job", home=tmp_path / "home", budget=float("nan"))

    assert _store_contents(store) == before


# ------------------------------------------------------------------ cancel


def test_cancel_of_an_ended_job_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    store = _submit(tmp_path).store
    store.set_state("job", JobState.SUCCEEDED, "done")
    before = _store_contents(store)

    with pytest.raises(JobStateError, match=r"^job 'job' already ended \(SUCCEEDED\)$"):
        jobs.cancel(store, "job", home=tmp_path / "home")

    assert _store_contents(store) == before


def test_cancel_of_a_pending_job_ends_it_cancelled_and_gives_its_lease_back(tmp_path: Path) -> None:
    store = _submit(tmp_path).store

    after = jobs.cancel(store, "job", home=tmp_path / "home")

    assert after.state is JobState.CANCELLED and store.job("job").state is JobState.CANCELLED
    assert store.attempts("job") == [] and store.lease("job") is None


def test_cancel_of_a_job_another_controller_drives_is_left_to_it(tmp_path: Path) -> None:
    store = _submit(tmp_path).store
    store.for_controller(OTHER_CONTROLLER).acquire_leases(["job"], ttl_s=600)

    after = jobs.cancel(store, "job", home=tmp_path / "home")

    assert after.state is JobState.PENDING and after.lease_owner == OTHER_CONTROLLER and after.cancel_requested


# --------------------------------------------------------------- admission


# The local provider's when it injects no interruptions (local.preempt_every 0s); these specs state their own restart overhead.
_PRIORS = ProviderPriors(restart_overhead_s=300.0, spot_s_between_preemptions=None)


def _offer(usd_per_hour: float) -> Offer:
    return Offer("local", "local", "local", Market.SPOT, usd_per_hour, usd_per_hour, 1)


@pytest.mark.parametrize(("nodes", "max_usd", "pays"), [(1, 15.0, False), (1, 15.01, True), (2, 30.0, False), (2, 30.01, True)])
def test_a_start_is_admitted_only_when_the_budget_pays_for_its_overhead_and_stop_on_every_node(
    tmp_path: Path, nodes: int, max_usd: float, pays: bool
) -> None:
    spec, _ = _spec(tmp_path, resources={"nodes": nodes}, budget={"max_usd": max_usd, "restart_overhead": "10s"})

    admission = admit(spec, None, [], _offer(3600.0), priors=_PRIORS, max_usd=max_usd, reserve_s=5.0, now=time.time())  # a dollar a second

    assert admission.start_usd == pytest.approx(15.0 * nodes)
    assert admission.pays_for_start is pays and admission.forecast is None and admission.fits is pays


def test_with_a_forecast_the_cost_to_finish_and_the_stop_reserve_must_fit(tmp_path: Path) -> None:
    spec, _ = _spec(
        tmp_path, local={"preempt_every": "0s"}, budget={"max_usd": 100.0, "restart_overhead": "10s", "expected_runtime": "80s"}
    )

    fits = admit(spec, None, [], _offer(3600.0), priors=_PRIORS, max_usd=95.0, reserve_s=5.0, now=time.time())
    short = admit(spec, None, [], _offer(3600.0), priors=_PRIORS, max_usd=94.99, reserve_s=5.0, now=time.time())

    assert fits.total_usd == pytest.approx(80.0 + 10.0 + 5.0)  # training, one start, the stop reserve
    assert fits.fits and not short.fits and short.pays_for_start
