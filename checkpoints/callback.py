"""``SpotCheckpoint``: a Lightning callback that checkpoints to any fsspec URL and resumes exactly.

Saves happen at ``on_train_batch_start``, i.e. after the previous step *and* any validation that
followed it, so a resumed run never skips or repeats a validation, and the RNG states captured
there are exactly the ones the next step would have used. On start the callback finds the newest
sound committed checkpoint and restores it by itself (``ckpt_path="last"`` does not work on
object storage), unless the user passed ``ckpt_path`` to ``fit``.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Mapping
from concurrent.futures import Future
from importlib import metadata
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.types import _Stateful
from lightning.fabric.utilities.warnings import PossibleUserWarning
from lightning.pytorch.callbacks import Callback
from lightning_utilities.core.apply_func import apply_to_collection
from torch.utils.data import DataLoader

from checkpoints import epoch_metrics
from checkpoints.control import STOP, ControlReader
from checkpoints.durations import parse_duration
from checkpoints.environment import PREEMPTED_EXIT_CODE
from checkpoints.errors import CheckpointError
from checkpoints.loaders import FetchRecorder, LoaderKind, plan_for, seed_generators
from checkpoints.loggers import LoggerContinuity
from checkpoints.numerics import Numerics
from checkpoints.persist import BackgroundPersister, SaveRequest, Superseded, snapshot_to_host
from checkpoints.progress import CheckpointReport, EmergencyReport, Progress, TrainingStatus, write_progress
from checkpoints.resumable import ResumableSampler, capture_rng_states, make_resumable, restore_rng_states
from checkpoints.signing import key_from_environment
from checkpoints.store import CheckpointInfo, CheckpointStore

log = logging.getLogger(__name__)

_STATE_VERSION = 2
_PROGRESS_INTERVAL_S = 1.0
_DEFAULT_EVERY_S = 300.0


class Preempted(SystemExit):
    """Raised after an emergency checkpoint is durable: ends ``fit`` and the process with the preempted code."""

    def __init__(self) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)


def _spotrun_version() -> str:
    try:
        return metadata.version("spotrun")
    except metadata.PackageNotFoundError:
        return "unknown"


class SpotCheckpoint(Callback):
    """Frequent checkpoints to ``url`` with an atomic commit, automatic exact resume, and emergency saves."""

    def __init__(
        self,
        url: str,
        *,
        every: str | float | None = None,
        every_steps: int | None = None,
        keep: int = 3,
        keep_every: int | None = None,
        max_consecutive_failures: int = 3,
        control_file: str | Path | None = None,
        progress_file: str | Path | None = None,
    ) -> None:
        if every is not None and every_steps is not None:
            raise ValueError("SpotCheckpoint: give `every` or `every_steps`, not both")
        if every_steps is not None and every_steps < 1:
            raise ValueError(f"SpotCheckpoint: every_steps must be >= 1, got {every_steps}")
        if keep < 1:
            raise ValueError(f"SpotCheckpoint: keep must be >= 1 (the newest checkpoint is always kept), got {keep}")
        if keep_every is not None and keep_every < 1:
            raise ValueError(f"SpotCheckpoint: keep_every must be >= 1 (steps), got {keep_every}")
        self.store = CheckpointStore(url, key=key_from_environment())  # with a key, only this job's manifests count
        self.every_s = parse_duration(every) if every is not None else (None if every_steps else _DEFAULT_EVERY_S)
        self.every_steps = every_steps
        self.keep = keep
        self.keep_every = keep_every
        self.max_consecutive_failures = max_consecutive_failures
        self._control = ControlReader(Path(control_file)) if control_file else None
        self._progress_file = Path(progress_file) if progress_file else None

        self.resumed_from: CheckpointInfo | None = None
        self.newest: CheckpointInfo | None = None
        self._staging: Path | None = None
        self._persister: BackgroundPersister | None = None
        self._emergency: EmergencyReport | None = None  # how the emergency save went, for the agent
        self._restored_state: dict[str, Any] | None = None
        self._trainer: pl.Trainer | None = None
        self._data_seed: int | None = None
        self._samplers: list[tuple[ResumableSampler, int]] = []  # with the batch size of their loader
        self._recorders: list[FetchRecorder] = []  # train loaders that resume through their own state
        self._inexact: list[FetchRecorder] = []  # train loaders that can only be fast-forwarded
        self.inexact_reasons: list[str] = []  # why this run's resume is not exact; empty when it is
        self._rng_before_validation: dict[str, Any] | None = None
        self._epoch_metrics = epoch_metrics.PendingAccumulators(None)
        self._training_ended = False
        self._pending_request: dict[str, Any] | None = None  # a control request waiting for a step boundary
        self._numerics: Numerics | None = None
        self._loggers = LoggerContinuity(self.store)  # one logger version/run across attempts
        self._batches_done = 0
        self._last_save_step = -1
        self._last_save_final = False
        self._last_save_time = time.monotonic()
        self._consecutive_failures = 0
        self._stop_signalled = False
        self._previous_handlers: dict[int, Any] = {}
        self._last_progress: tuple[float, int] | None = None
        self._steps_per_s = 0.0

    @property
    def state_key(self) -> str:
        return "SpotCheckpoint"

    # ---------------------------------------------------------------- resume

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        _refuse_sharded_state(trainer)
        self._trainer = trainer
        self._staging = Path(tempfile.mkdtemp(prefix="spotrun-ckpt-"))
        self._persister = BackgroundPersister(
            self.store,
            self._staging,
            keep=self.keep,
            keep_every=self.keep_every,
            protect=self._protected,
            spotrun_version=_spotrun_version(),
        )
        if trainer.ckpt_path is not None:
            log.info("fit() was given ckpt_path=%s; not resuming from %s", trainer.ckpt_path, self.store.url)
            self._loggers.setup(trainer, None, cut=False)  # the resume point is Lightning's to load, after setup
            return
        found = self._download_newest_sound()
        if found is None:
            log.info("no committed checkpoint at %s: starting from scratch", self.store.url)
            self._loggers.setup(trainer, None)  # drops whatever an attempt killed before its first checkpoint logged
            return
        self.resumed_from, local = found
        self.newest = self.resumed_from
        log.info("resuming from checkpoint step %d at %s", self.resumed_from.step, self.resumed_from.url)
        # The same pre-load Lightning does for fit(ckpt_path=...); it runs the restore right after setup(),
        # from the loaded copy: the file is not read again, and a checkpoint's worth of disk is given back now.
        try:
            trainer._checkpoint_connector.resume_start(local)
        finally:
            local.unlink(missing_ok=True)
        self._loggers.setup(trainer, trainer._checkpoint_connector._loaded_checkpoint)
        saved = (trainer._checkpoint_connector._loaded_checkpoint.get("callbacks") or {}).get(self.state_key) or {}
        if saved.get("numerics"):
            # Before any training maths: the thread count changes floating-point reduction order.
            Numerics.from_json(saved["numerics"]).apply_to_this_process(log)

    def _download_newest_sound(self) -> tuple[CheckpointInfo, Path] | None:
        assert self._staging is not None
        for info in self.store.list():
            problem = self.store.problem(info, check_sha256=False)
            if problem is None:
                try:
                    return info, self.store.download(info, self._staging)
                except CheckpointError as error:
                    problem = str(error)
            log.warning("skipping damaged checkpoint %s: %s; trying the previous one", info.url, problem)
        return None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("version") not in (1, _STATE_VERSION):
            raise CheckpointError(f"checkpoint holds SpotCheckpoint state version {state_dict.get('version')}, expected {_STATE_VERSION}")
        self._restored_state = state_dict
        self._data_seed = int(state_dict["data_seed"])
        if state_dict.get("numerics"):
            self._numerics = Numerics.from_json(state_dict["numerics"])

    def state_dict(self) -> dict[str, Any]:
        trainer = self._trainer
        return {
            "version": _STATE_VERSION,
            "rng": _gather_from_ranks(capture_rng_states()),
            "data_seed": self._data_seed,
            "samplers": [sampler.state_dict() for sampler, _ in self._samplers],
            "loaders": [recorder.state_for_save(training_ended=self._training_ended) for recorder in self._recorders],
            "batches_done": self._batches_done,
            # The logger step; Lightning's restart logic, written for saves at batch end, would add one.
            "batches_that_stepped": trainer.fit_loop.epoch_loop._batches_that_stepped if trainer else None,
            "grads": _gather_from_ranks(_open_gradients(trainer)) if trainer else None,
            "numerics": self._numerics.to_json() if self._numerics else None,
            "epoch_metrics": _gather_from_ranks(epoch_metrics.capture(trainer.fit_loop.epoch_loop._results)) if trainer else None,
            "callback_metrics": {
                name: value.detach().cpu().clone() for name, value in trainer.callback_metrics.items() if isinstance(value, torch.Tensor)
            }
            if trainer
            else None,
        }

    # ---------------------------------------------------------- data order

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._data_seed is None:
            self._data_seed = _job_seed()
        if self._numerics is None:
            self._numerics = Numerics.of_this_process(trainer)
        elif trainer.is_global_zero:
            self._numerics.warn_about_differences(Numerics.of_this_process(trainer), log)
        self._install_signal_handlers()
        self._plan_loaders(trainer)
        # Lightning warns that a plain DataLoader cannot resume mid-epoch; spotrun resumes it, or warns itself.
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch ended", category=PossibleUserWarning
        )
        restored = self._restored_state
        if restored is not None:
            self._resume_loaders(trainer, restored)
        # Lightning created the first iterator before any callback hook ran; make it again so it
        # draws from the resumable samplers (and, on resume, starts where the checkpoint left off).
        data_fetcher = trainer.fit_loop._data_fetcher
        assert data_fetcher is not None  # fit sets it up before the first train hook
        iter(data_fetcher)
        self._last_save_step = trainer.global_step
        self._last_save_final = self.resumed_from is not None and self.resumed_from.final
        self._last_save_time = time.monotonic()
        if self.resumed_from is not None and self.resumed_from.final:
            # Training already reached its end (maybe by early stopping, whose decision Lightning
            # does not checkpoint): do not train past it.
            trainer.should_stop = True

    def _resume_loaders(self, trainer: pl.Trainer, restored: dict[str, Any]) -> None:
        """Put every train loader where the checkpoint left it, or say loudly why that is not possible."""
        if len(restored["samplers"]) != len(self._samplers) or len(restored.get("loaders", [])) != len(self._recorders):
            raise CheckpointError(
                f"the checkpoint was taken with {len(restored['samplers'])} resumable and {len(restored.get('loaders', []))} stateful "
                f"train loader(s), this run has {len(self._samplers)} and {len(self._recorders)}: the train data changed, "
                "so the resume position cannot be found"
            )
        for (sampler, batch_size), saved in zip(self._samplers, restored["samplers"], strict=True):
            sampler.resume_at(saved["epoch"], restored["batches_done"] * batch_size, saved["generator_state"])
        for recorder, state in zip(self._recorders, restored.get("loaders", []), strict=True):
            recorder.source.load_state_dict(state)  # Lightning's load (if any) was used up by its own first iterator
        for recorder in self._inexact:
            recorder.skip_next_epoch_start(restored["batches_done"])
        if self.inexact_reasons and restored["batches_done"] and trainer.is_global_zero:
            log.warning(
                "RESUME IS NOT EXACT: resuming at step %d, %d batches into epoch %d, by drawing and dropping the batches already "
                "trained; the rest of this epoch sees the same data only if the stream is deterministic. Why: %s. "
                "Give the dataset (or loader) state_dict()/load_state_dict() to resume it exactly.",
                trainer.global_step,
                restored["batches_done"],
                trainer.current_epoch,
                "; ".join(self.inexact_reasons),
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._plan_loaders(trainer)  # loaders may have been reloaded (reload_dataloaders_every_n_epochs)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_metrics.drop()
        for recorder in self._recorders:
            recorder.finish_epoch()

    def _plan_loaders(self, trainer: pl.Trainer) -> None:
        """Make every train loader resumable its own way (``checkpoints.loaders``); note those that cannot be."""
        assert self._data_seed is not None
        # Lightning types fit's progress trackers as _ReadyCompletedTracker; they are _ProcessedTrackers, which count `processed`.
        epoch: int = trainer.fit_loop.epoch_progress.current.processed  # type: ignore[attr-defined]
        loaders: list[Any] = []
        apply_to_collection(trainer.train_dataloader, (DataLoader, _Stateful), loaders.append)
        seed_generators(loaders, self._data_seed, epoch)
        self._samplers, self._recorders, self._inexact, reasons = [], [], [], []
        for loader in loaders:
            plan = plan_for(loader)
            if plan.kind is LoaderKind.SAMPLER:
                sampler = make_resumable(loader, self._data_seed)
                sampler.set_epoch(epoch)
                self._samplers.append((sampler, int(loader.batch_sampler.batch_size)))
            else:
                recorder = getattr(loader, "_spotrun_recorder", None) or FetchRecorder(loader, state_source=plan.state_source)
                (self._recorders if plan.kind is LoaderKind.STATEFUL else self._inexact).append(recorder)
                if plan.reason:
                    reasons.append(plan.reason)
        if reasons and reasons != self.inexact_reasons and trainer.is_global_zero:
            log.warning("a resume of this run mid-epoch will not be exact: %s", "; ".join(reasons))
        self.inexact_reasons = reasons

    # ------------------------------------------------------------ triggers

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batches_done = batch_idx
        for recorder in self._recorders:
            recorder.batch_started()
        if self._restored_state is not None:
            self._finish_restore(trainer, self._restored_state)
            self._restored_state = None
        assert self._persister is not None
        self._collect(self._persister.take_finished())
        request = self._control.poll() if self._control else None
        if request is not None and (self._pending_request is None or self._pending_request.get("action") != STOP):
            self._pending_request = request  # a stop is never replaced by a mere checkpoint request
        if not _at_optimizer_step_boundary(trainer, batch_idx) or not all(recorder.state_known() for recorder in self._recorders):
            return  # saving now would lose this window's accumulated gradients, or a loader's position
        request = self._pending_request
        stop, requested, due, busy = _agree(
            trainer,
            self._stop_signalled or (request is not None and request.get("action") == STOP),
            request is not None,
            self._periodic_save_due(trainer),
            self._persister.busy,
        )
        if stop:
            self._emergency_stop(trainer, deadline=request.get("deadline") if request else None)
        if (requested or due) and not busy:
            self._pending_request = None
            self._save(trainer, reason="requested" if requested else "periodic")

    def _finish_restore(self, trainer: pl.Trainer, restored: dict[str, Any]) -> None:
        """What Lightning does not restore, put back at the first step of the resumed run, where it was saved."""
        restore_rng_states(_part_of_rank(restored["rng"], trainer.global_rank))
        if restored.get("batches_that_stepped") is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = int(restored["batches_that_stepped"])
        # Metrics that plateau schedulers, EarlyStopping and ModelCheckpoint monitor: Lightning keeps none.
        trainer._logger_connector._callback_metrics.update(restored.get("callback_metrics") or {})
        # Lightning's restart logic has done its part (loop counters, skipping a validation already
        # run); left set, it would also skip this epoch's epoch-interval scheduler steps, which it
        # does for checkpoints saved at an epoch's end, before those steps, not for spotrun's.
        trainer.fit_loop._restarting = False
        if restored.get("epoch_metrics"):
            self._epoch_metrics = epoch_metrics.PendingAccumulators(_part_of_rank(restored["epoch_metrics"], trainer.global_rank))
        grads = _part_of_rank(restored["grads"], trainer.global_rank) if restored.get("grads") else None
        if grads:
            _reopen_gradients(trainer, grads)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self._rng_before_validation = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put the training RNG back as it was before this validation.

        Making a validation iterator draws from the global RNG (worker seeds, a shuffle) once per
        validation, or once per run with persistent workers, and an uninterrupted run and a resumed
        one make them at different times; isolated like this, validation never moves training's RNG.
        """
        if self._rng_before_validation is not None and not trainer.sanity_checking:
            restore_rng_states(self._rng_before_validation)
        self._rng_before_validation = None

    def _emergency_stop(self, trainer: pl.Trainer, *, deadline: float | None) -> None:
        """Save at this step on every rank, wait until it is committed, and leave with the preempted code."""
        self._save(trainer, reason="emergency", blocking=True, deadline=deadline)
        durable = self.newest is not None and self.newest.step == trainer.global_step
        self._emergency = EmergencyReport(
            step=trainer.global_step, durable=durable, before_deadline=durable and (deadline is None or time.time() <= deadline)
        )
        if trainer.is_global_zero:
            log.warning("emergency checkpoint of step %d: %s", trainer.global_step, self._emergency)
        self._write_progress(trainer, status=TrainingStatus.PREEMPTED, force=True)
        raise Preempted()

    def _periodic_save_due(self, trainer: pl.Trainer) -> bool:
        if trainer.global_step <= self._last_save_step:
            return False
        if self.every_steps is not None:
            return trainer.global_step - self._last_save_step >= self.every_steps
        assert self.every_s is not None
        return time.monotonic() - self._last_save_time >= self.every_s

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.enable_validation:  # a validation may follow this batch: ~90 us, spent only where one can
            self._rng_before_validation = capture_rng_states(cuda=False)
        self._epoch_metrics.apply(trainer.fit_loop.epoch_loop._results)
        self._write_progress(trainer, status=TrainingStatus.TRAINING)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._training_ended = True
        self._save(trainer, reason="final", final=True, blocking=True)
        self._write_progress(trainer, status=TrainingStatus.FINISHED, force=True)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._collect(self._release())

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # Lightning calls no teardown hook when fit ends by an exception, the emergency stop's
        # Preempted included. The persist's outcome is not collected: raising here would hide `exception`.
        self._release()

    def _release(self) -> Future[CheckpointInfo] | None:
        """Give back what a fit holds (signal handlers, the persist thread, the staging folder); returns the last persist, done.

        Safe to call twice. The staging folder goes whatever happens, so no way out of fit leaves a
        checkpoint's worth of files in the system temp folder.
        """
        for signum, handler in self._previous_handlers.items():
            # Lightning puts back the pre-fit handlers before teardown runs; only undo what is still ours.
            if signal.getsignal(signum) == self._on_stop_signal:
                signal.signal(signum, handler)
        self._previous_handlers = {}
        persister, self._persister = self._persister, None
        try:
            if persister is None:
                return None
            persister.close()
            return persister.take_finished()
        finally:
            if self._staging is not None:
                shutil.rmtree(self._staging, ignore_errors=True)
                self._staging = None

    # ---------------------------------------------------------------- save

    def _save(
        self, trainer: pl.Trainer, *, reason: str, final: bool = False, blocking: bool = False, deadline: float | None = None
    ) -> None:
        """Snapshot the state now and persist it in the background (``blocking``: and wait until it is durable).

        A non-blocking save that falls due while the previous one is still persisting is deferred:
        the trigger stays due and the next step tries again, so snapshots never pile up in memory.
        A blocking one first lets the persist in flight finish or supersedes it, whichever gets a
        durable checkpoint sooner (``deadline``, wall clock, is when it must be durable).
        """
        assert self._persister is not None
        if blocking:
            self._collect(self._persister.finish_or_supersede(deadline))
        elif self._persister.busy:
            return
        step = trainer.global_step
        # Decided from what every rank knows alike (not from `newest`, which only rank 0 sees).
        if step == self._last_save_step and (self._last_save_final or not final):
            return
        # The same dump `trainer.save_checkpoint` makes; every rank takes part, rank 0 writes.
        # Every entry logged so far becomes durable before this checkpoint can commit.
        self._loggers.flush(trainer)
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)  # the whole training state
        saved_loaders = checkpoint["callbacks"][self.state_key]["loaders"]
        if any(recorder.source is recorder.loader for recorder in self._recorders):
            # Lightning's own copy of the loaders' state is taken after its prefetch ran ahead; a
            # plain `fit(ckpt_path=...)` on this checkpoint must resume at the same batch as spotrun.
            # (Lightning keeps stateful loaders only; a stream's own state is spotrun's alone.)
            checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"] = [
                state for recorder, state in zip(self._recorders, saved_loaders, strict=True) if recorder.source is recorder.loader
            ]
        self._last_save_step, self._last_save_final = step, final
        self._last_save_time = time.monotonic()
        if trainer.is_global_zero:
            request = SaveRequest(
                snapshot_to_host(checkpoint),
                step=step,
                epoch=trainer.current_epoch,
                reason=reason,
                final=final,
                metrics=_float_metrics(trainer),
            )
            self._persister.submit(request)
            if blocking:
                self._collect(self._persister.wait_if_busy())
        if blocking:
            # No rank goes on (or exits) before the commit is durable.
            trainer.strategy.barrier("spotrun-checkpoint-committed")

    def _protected(self) -> frozenset[str]:
        """Checkpoints retention must keep whatever their age: the one this run resumed from."""
        return frozenset({self.resumed_from.url}) if self.resumed_from else frozenset()

    def _collect(self, finished: Future[CheckpointInfo] | None) -> None:
        """Account for a finished persist: a failure costs that checkpoint only, until too many fail in a row."""
        if finished is None:
            return
        error = finished.exception()
        if error is None:
            self.newest = finished.result()
            self._consecutive_failures = 0
            return
        if isinstance(error, Superseded):
            log.info("checkpoint upload abandoned for a newer one: %s", error)
            return
        self._consecutive_failures += 1
        log.error("a checkpoint could not be persisted (%d in a row): %s", self._consecutive_failures, error)
        if self._consecutive_failures >= self.max_consecutive_failures:
            raise CheckpointError(
                f"{self._consecutive_failures} checkpoints in a row could not be written to {self.store.url}; "
                f"stopping rather than training on without a way back (last error: {error})"
            ) from error

    # ---------------------------------------------------- signals, progress

    def _install_signal_handlers(self) -> None:
        """SIGTERM and SIGUSR1 ask for an emergency checkpoint at the next step boundary, then a stop.

        Installed after Lightning's own handlers, replacing them for the duration of the fit:
        Lightning would turn SIGTERM into an exit 0 without saving, raised after the batch (and
        under DDP only where rank 0 saw it); here every rank agrees on the step and saves.
        """
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            try:
                self._previous_handlers[signum] = signal.signal(signum, self._on_stop_signal)
            except ValueError:  # not the main thread: the control file still works
                return

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        self._stop_signalled = True

    def _write_progress(self, trainer: pl.Trainer, *, status: TrainingStatus, force: bool = False) -> None:
        if self._progress_file is None or not trainer.is_global_zero:
            return
        now = time.monotonic()
        if self._last_progress is not None:
            last_time, last_step = self._last_progress
            if not force and now - last_time < _PROGRESS_INTERVAL_S:
                return
            if now > last_time and trainer.global_step >= last_step:
                self._steps_per_s = (trainer.global_step - last_step) / (now - last_time)
        self._last_progress = (now, trainer.global_step)
        metrics = _float_metrics(trainer)
        total = _total_steps(trainer)
        write_progress(
            self._progress_file,
            Progress(
                status=status,
                time=time.time(),
                step=trainer.global_step,
                epoch=trainer.current_epoch,
                total_steps=total,
                loss=metrics.get("train_loss", metrics.get("loss")),
                steps_per_s=round(self._steps_per_s, 3),
                metrics=metrics,
                checkpoint=CheckpointReport.of(self.newest) if self.newest else None,
                resumed_from_step=self.resumed_from.step if self.resumed_from else None,
                emergency=self._emergency,
                resume_exact=not self.inexact_reasons,
                resume_inexact_reason="; ".join(self.inexact_reasons) or None,
            ),
        )


def _refuse_sharded_state(trainer: pl.Trainer) -> None:
    """Stop before training when each rank holds only a shard of the state: rank 0's file would silently lack the rest."""
    from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy, ModelParallelStrategy

    if isinstance(trainer.strategy, (FSDPStrategy, ModelParallelStrategy, DeepSpeedStrategy)):
        raise CheckpointError(
            f"SpotCheckpoint cannot checkpoint {type(trainer.strategy).__name__} yet: its ranks each hold a shard of the "
            "model and optimizer state, and SpotCheckpoint writes one file from rank 0, which would lack every other "
            "rank's shards. Use DDP (strategy='ddp') for now."
        )


def _total_steps(trainer: pl.Trainer) -> int | None:
    """The optimizer step training will end at, in the unit of ``global_step``; None when unknowable.

    ``estimated_stepping_batches`` counts batches (over accumulation windows). That is the step
    count under automatic optimization, but under manual optimization ``global_step`` counts every
    ``optimizer.step()`` (two per batch for a GAN), so the batches are scaled by the optimizer steps
    per batch measured so far; ``max_steps``, already in optimizer steps, caps either.
    """
    estimated = trainer.estimated_stepping_batches
    if not math.isfinite(estimated) or estimated < 0:  # an iterable dataset of unknown length and no max_steps
        return None
    if trainer.lightning_module.automatic_optimization:
        return int(estimated)
    # Lightning types fit's progress trackers as _ReadyCompletedTracker; they are _ProcessedTrackers, which count `processed`.
    batches_done: int = trainer.fit_loop.epoch_loop.batch_progress.total.processed  # type: ignore[attr-defined]
    if batches_done <= 0 or trainer.global_step <= 0:
        return None
    batches = trainer.num_training_batches * max(trainer.max_epochs or 1, 1)
    if not math.isfinite(batches):
        return None
    total = round(batches * trainer.global_step / batches_done)
    return min(total, trainer.max_steps) if trainer.max_steps > 0 else total


def _job_seed() -> int:
    """The seed ``seed_everything`` set, so the data order follows the job's seed; 0 when none was set."""
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


def _float_metrics(trainer: pl.Trainer) -> dict[str, float]:
    metrics = {}
    values: Mapping[str, object] = trainer.callback_metrics  # typed as tensors, but anyone may put a plain number there
    for name, value in values.items():
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            metrics[name] = float(value)
        elif isinstance(value, (int, float)):
            metrics[name] = float(value)
    return metrics


def _agree(trainer: pl.Trainer, *flags: bool) -> tuple[bool, ...]:
    """The same decision on every rank: a flag raised on any rank counts for all.

    One all-reduce of a few integers per step; it is what keeps ranks from disagreeing on the
    step to save (Lightning's own SIGTERM path can deadlock DDP that way).
    """
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return flags
    tensor = torch.tensor([int(flag) for flag in flags], dtype=torch.int32, device=trainer.strategy.root_device)
    torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.MAX)
    return tuple(bool(value) for value in tensor.tolist())


def _gather_from_ranks(value: Any) -> Any:
    """Every rank's ``value`` as a list indexed by rank (just ``value`` when not distributed)."""
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return value
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, value)
    return gathered


def _part_of_rank(saved: Any, rank: int) -> Any:
    """This rank's part (RNG states, gradients) of what a checkpoint made with any number of ranks gathered."""
    if isinstance(saved, dict):
        return saved
    if rank >= len(saved):
        log.warning("resuming with more ranks than the checkpoint had: rank %d reuses rank %d's RNG states", rank, rank % len(saved))
    return saved[rank % len(saved)]


def _at_optimizer_step_boundary(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether the batch about to run opens a gradient-accumulation window (always, without accumulation).

    Saves wait for the boundary: a window of ``accumulate_grad_batches`` batches holds gradients
    that no checkpoint format carries, and every checkpoint is named after an optimizer step, which
    only a boundary has. A notice therefore waits at most ``accumulate_grad_batches - 1`` batches.
    Lightning restarts the windows with each epoch (its last window may be short).
    """
    if not trainer.lightning_module.automatic_optimization:
        return True
    return batch_idx % trainer.accumulate_grad_batches == 0


def _open_gradients(trainer: pl.Trainer) -> dict[str, torch.Tensor] | None:
    """Gradients a save must carry: under manual optimization, any that exist (the user may be accumulating).

    With automatic optimization saves happen only between accumulation windows, where Lightning
    zeroes the gradients before it uses them again, so there are none to keep.
    """
    module = trainer.lightning_module
    if module.automatic_optimization:
        return None
    grads = {name: parameter.grad for name, parameter in module.named_parameters() if parameter.grad is not None}
    return grads or None


def _reopen_gradients(trainer: pl.Trainer, grads: dict[str, torch.Tensor]) -> None:
    parameters = dict(trainer.lightning_module.named_parameters())
    unknown = sorted(set(grads) - set(parameters))
    if unknown:
        raise CheckpointError(f"the checkpoint holds gradients of parameters this model does not have: {', '.join(unknown[:5])}")
    for name, grad in grads.items():
        parameter = parameters[name]
        parameter.grad = grad.to(device=parameter.device, dtype=parameter.dtype)
