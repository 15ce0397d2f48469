"""What a user can ask of a job: submit it, resume it (with more budget), cancel it.

Plain functions under the CLI: they check, decide and write the store, and return what the user
should be told as data (``Note``), which the CLI prints. Refusals are the errors of
``runner.errors``; a refused request writes nothing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from checkpoints.durations import format_duration
from checkpoints.progress import Progress
from cloud.provider import Market, OfferRequest, Provider
from runner.control.admission import admit
from runner.control.controller import Controller
from runner.control.providers import agent_command, controller_settings, provider_for
from runner.control.submission import checkpoint_access_problem, record_job
from runner.cost import ledger
from runner.errors import BudgetError, JobStateError, SpecError
from runner.money import format_usd
from runner.spec.job_spec import JobSpec, check_budget
from runner.state.store import Interval, Job, JobState, StateStore


class NoteLevel(enum.Enum):
    """How a note is shown: with the command's results (stdout), or as a diagnostic (stderr)."""

    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class Note:
    """One line for the user about a request that went ahead."""

    level: NoteLevel
    text: str


@dataclass(frozen=True)
class Submitted:
    """A recorded job, the store it is in, and what the user should know about it."""

    store: StateStore
    job: Job
    notes: tuple[Note, ...]
    resumes_from_step: int | None  # the newest checkpoint already under the job's URL: training resumes from it


@dataclass(frozen=True)
class Resumed:
    """A job ready to be driven again; ``applied_by`` names the controller that drives it and applies its new budget."""

    notes: tuple[Note, ...]
    applied_by: str | None = None

    @property
    def should_drive(self) -> bool:
        """Whether the caller drives the job now: not when another controller holds it and only its budget changed."""
        return self.applied_by is None


def submit(spec: JobSpec, *, spec_path: Path, open_store: Callable[[], StateStore], home: Path, launched_by: str, force: bool) -> Submitted:
    """Check the checkpoint URL and the cost forecast, then record the job and leave its description next to its checkpoints.

    The URL is checked before ``open_store`` is called: a spec spotrun cannot use writes nothing, not even a new store.
    """
    assert spec.checkpoint.url is not None  # JobSpec resolves it
    problem = checkpoint_access_problem(spec.checkpoint.url)
    if problem is not None:
        raise SpecError(f"{spec_path}: checkpoint.url: expected storage spotrun can list, write, read and delete in, got {problem}")
    store = open_store()
    notes = _admission_notes(spec, spec.budget.max_usd, None, [], provider_for(spec, home, store), force=force, now=store.clock())
    job, checkpoints = record_job(store, spec, spec_path=str(spec_path), launched_by=launched_by)
    newest = checkpoints.latest()
    return Submitted(store=store, job=job, notes=notes, resumes_from_step=None if newest is None else newest.step)


def checked_budget(max_usd: float) -> float:
    """A new total budget (``--budget``) checked as every budget is; SpecError naming the option."""
    try:
        return check_budget(max_usd)
    except ValueError as error:
        raise SpecError(f"--budget: {error}") from None


def resume(store: StateStore, name: str, *, home: Path, budget: float | None = None, force: bool = False) -> Resumed:
    """Make an unfinished job ready to drive again, with a new total ``budget`` if given.

    A BUDGET_EXHAUSTED job needs a budget above what it spent (and moves to RECOVERING); a live one
    driven by another controller gets the new budget on that controller's next cycle.
    """
    if budget is not None:
        checked_budget(budget)
    found = store.job(name)
    exhausted = found.state is JobState.BUDGET_EXHAUSTED
    if exhausted and budget is None:
        limit = found.spec.budget.max_usd
        assert limit is not None  # only a budget runs out
        raise BudgetError(f"job {name!r} spent its {format_usd(limit)} budget; give it a larger one: `spotrun resume {name} --budget USD`")
    if found.state.is_final and not exhausted:
        raise JobStateError(f"job {name!r} already ended ({found.state.value}); nothing to resume")
    if budget is None:
        return Resumed(notes=())
    intervals = store.intervals(name)
    spent = ledger.summarize(intervals, store.clock()).spent_usd
    if budget <= spent:
        raise BudgetError(f"--budget: job {name!r} already spent ${spent:.4f}; give a total budget above that, got {format_usd(budget)}")
    notes = _admission_notes(
        found.spec, budget, found.training_progress, intervals, provider_for(found.spec, home, store), force=force, now=store.clock()
    )
    store.set_budget(name, budget)
    if exhausted:
        store.set_state(name, JobState.RECOVERING, f"resumed with a {format_usd(budget)} budget (${spent:.4f} spent)")
        return Resumed(notes=notes)
    lease = store.lease(name)
    if lease is None:
        return Resumed(notes=notes)
    applied = f"job {name}: budget set to {format_usd(budget)}; controller {lease.owner}, which drives it, applies it on its next cycle"
    return Resumed(notes=(*notes, Note(NoteLevel.INFO, applied)), applied_by=lease.owner)


def cancel(store: StateStore, name: str, *, home: Path) -> Job:
    """Ask for the job's end and run one controller cycle on it; the job as it is after that cycle.

    When another controller drives the job the cycle cannot act on it: the job is returned still
    live, and its controller terminates the instance on its next cycle.
    """
    found = store.job(name)
    if found.state.is_final:
        raise JobStateError(f"job {name!r} already ended ({found.state.value})")
    store.request_cancel(name)
    controller = Controller(store, provider_for(found.spec, home, store), agent_command=agent_command)
    try:
        return controller.cycle(name)
    finally:
        controller.release([name])


def _admission_notes(
    spec: JobSpec,
    max_usd: float | None,
    progress: Progress | None,
    intervals: Sequence[Interval],
    provider: Provider,
    *,
    force: bool,
    now: float,
) -> tuple[Note, ...]:
    """Refuse (BudgetError), or with ``force`` warn, when ``max_usd`` does not admit the job at the price offered now."""
    if max_usd is None:
        return ()
    market = spec.resources.fixed_market
    if market is None:  # auto: priced as spot, which the deadline policy buys when it can
        market = Market.SPOT
    offers = provider.offers(OfferRequest(instance_types=tuple(spec.resources.instance_types), market=market))
    if not offers:
        return (Note(NoteLevel.WARNING, f"no cost forecast: no {market.value} offer to price it with right now"),)
    admission = admit(
        spec,
        progress,
        intervals,
        offers[0],
        priors=provider.priors,
        max_usd=max_usd,
        reserve_s=controller_settings(spec).stop_reserve_s,
        now=now,
    )
    spent = admission.spent_usd
    on_top = f" on top of ${spent:.4f} spent" if spent else ""
    predicted, total = admission.forecast, admission.total_usd
    if predicted is None or total is None:
        if not admission.pays_for_start and not force:
            raise BudgetError(
                f"the {format_usd(max_usd)} budget does not pay for starting an instance (${admission.start_usd:.4f} at "
                f"${admission.usd_per_hour:.3f}/h before training makes progress, and to checkpoint and stop){on_top}; raise budget.max_usd"
            )
        text = f"no cost forecast before training has run: set budget.expected_runtime for one; the budget of {format_usd(max_usd)} is enforced either way"
        return (Note(NoteLevel.WARNING, text),)
    detail = (
        f"forecast ${predicted.cost_usd:.4f} to finish ({predicted.basis}: {format_duration(predicted.remaining_s)} of training "
        f"+ {format_duration(predicted.overhead_s)} of restarts at ${predicted.usd_per_hour:.3f}/h){on_top}"
        f", and ${admission.reserve_usd:.4f} kept to checkpoint and stop"
    )
    if admission.fits:
        return (Note(NoteLevel.INFO, f"{detail}: ${total:.4f} of the {format_usd(max_usd)} budget"),)
    if force:
        text = f"warning: {detail} exceeds the {format_usd(max_usd)} budget; going ahead (--force); it stops when the budget is spent"
        return (Note(NoteLevel.WARNING, text),)
    raise BudgetError(
        f"{detail} exceeds the {format_usd(max_usd)} budget; raise budget.max_usd, or run with --force to stop when it is spent"
    )
