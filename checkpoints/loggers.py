"""Logger continuity across attempts: one logger version (run) for the whole job, no duplicated entries.

Each attempt of a spot job is a new process, and Lightning's loggers start a new version in each
(``version_0`` ... ``version_4``), so a user's curves end up in pieces; and whatever a lost attempt
logged after the checkpoint the next one resumes from is logged again. :class:`LoggerContinuity`
(driven by ``SpotCheckpoint``) fixes both:

* **Identity.** At the first attempt the identity of every logger (class, version, run id) is
  written to ``_spotrun/loggers.json`` under the checkpoint URL, before training starts, so even an
  attempt killed before its first checkpoint is continued by the next. Lightning creates each
  logger's experiment (a CSV version directory, a TensorBoard event file, an MLflow run, a W&B run)
  *before* any callback's ``setup`` runs; a later attempt undoes that fresh, empty experiment (only
  what this process just created) and points the logger back at the recorded version / run.
* **No duplicates.** On resume from a checkpoint whose logger step is ``B`` (Lightning's
  ``_batches_that_stepped``, the ``step`` loggers get; 0 without a checkpoint), every entry with a
  step >= ``B`` was logged after that checkpoint by an attempt that was then lost, and the resumed
  run logs it again: CSV rows and MLflow file-store lines are rewritten without them, and
  TensorBoard gets ``purge_step=B`` (its readers drop the orphaned events). Lightning logs nothing
  at ``B`` before a checkpoint taken there (epoch-end metrics go to the last step of the epoch,
  ``B - 1``); an entry a user logs with an explicit step ahead of the trainer's is cut like the rest.
* **Nothing lost by a kill.** :meth:`LoggerContinuity.flush` runs just before each checkpoint
  snapshot, so every entry with a step below the checkpoint's is durable once the checkpoint commits.

W&B cannot be rewritten (its history is append-only): the run id is pinned so all attempts are one
run, but what a lost attempt logged after its last checkpoint stays and appears twice.
Only rank 0 touches files; every rank applies the same identity.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import shutil
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger, WandbLogger

from checkpoints.store import CheckpointStore

log = logging.getLogger(__name__)

IDENTITY_NAME = "loggers.json"
_CSV_NAME = "metrics.csv"
_CSV_ASIDE = ".spotrun-resume"  # metrics.csv while it is being cut; authoritative when present
_EVENT_FILE_TIME = re.compile(r"tfevents\.(\d+)\.")


def loaded_logger_step(checkpoint: dict[str, Any] | None) -> int:
    """The logger step (``_batches_that_stepped``) a Lightning checkpoint was taken at; 0 without one."""
    if checkpoint is None:
        return 0
    try:
        return int(checkpoint["loops"]["fit_loop"]["epoch_loop.state_dict"]["_batches_that_stepped"])
    except (KeyError, TypeError, ValueError):
        return 0


class LoggerContinuity:
    """Keeps a job's Lightning loggers on one version / run across attempts (see the module docstring)."""

    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    def setup(self, trainer: pl.Trainer, checkpoint: dict[str, Any] | None, *, cut: bool = True) -> None:
        """Point every logger at the job's recorded version/run and drop what lost attempts logged after ``checkpoint``.

        Call from ``Callback.setup`` (after Lightning made the loggers' fresh experiments) on every rank.
        ``checkpoint`` is the one this attempt resumes from (None: from scratch, so everything earlier
        attempts logged goes); ``cut=False`` when the resume point is not known yet (``fit(ckpt_path=...)``).
        """
        if not trainer.loggers:
            return
        identity: list[dict[str, Any] | None] | None = None
        if trainer.is_global_zero:
            identity = self._continue_on_rank_zero(trainer, checkpoint, cut=cut)
        identity = trainer.strategy.broadcast(identity, src=0)
        if not trainer.is_global_zero:
            for logger, entry in zip(trainer.loggers, identity or [], strict=False):
                adapter = _adapter_for(logger)
                if entry is not None and adapter is not None:  # rank 0 records no entry for a logger without an adapter
                    adapter.apply_identity(entry)

    def _continue_on_rank_zero(self, trainer: pl.Trainer, checkpoint: dict[str, Any] | None, *, cut: bool) -> list[dict[str, Any] | None]:
        recorded = (self.store.read_json(IDENTITY_NAME) or {}).get("loggers", [])
        step = loaded_logger_step(checkpoint)
        identity: list[dict[str, Any] | None] = []
        for index, logger in enumerate(trainer.loggers):
            adapter = _adapter_for(logger)
            if adapter is None:
                log.info("%s is not one spotrun keeps across attempts: each attempt logs on its own", type(logger).__name__)
                identity.append(None)
                continue
            entry = recorded[index] if index < len(recorded) else None
            # A logger the record does not know (first attempt, or added since) keeps its fresh experiment.
            if entry is None or entry.get("class") != type(logger).__name__ or not adapter.continue_run(entry, step if cut else None):
                entry = adapter.identity()
            identity.append(entry)
        if identity != recorded:
            self.store.write_json(IDENTITY_NAME, {"loggers": identity})
        return identity

    def flush(self, trainer: pl.Trainer) -> None:
        """Make everything logged so far durable. Call just before a checkpoint is dumped, on every rank.

        Entries with a step below the checkpoint's logger step are then on storage when it commits,
        so no kill can lose them; the loggers write on rank 0 only.
        """
        for logger in trainer.loggers:
            logger.save()  # CSVLogger writes its buffered rows, TensorBoardLogger flushes its writer
            if isinstance(logger, MLFlowLogger) and trainer.is_global_zero and logger._initialized:
                import mlflow

                mlflow.flush_async_logging()  # only has work when the logger logs asynchronously


# --------------------------------------------------------------------------------------- per logger


class _Adapter:
    """How spotrun continues one kind of logger; methods that touch files run on rank 0 only."""

    def __init__(self, logger: Any) -> None:
        self.logger = logger

    def identity(self) -> dict[str, Any]:
        """What identifies this logger's experiment, recorded at the first attempt."""
        raise NotImplementedError

    def apply_identity(self, entry: dict[str, Any]) -> None:
        """Point the logger at ``entry``'s experiment without touching storage (ranks other than 0)."""

    def continue_run(self, entry: dict[str, Any], step: int | None) -> bool:
        """Undo the fresh experiment, re-point at ``entry``, drop entries with a step >= ``step`` (not when None).

        False when ``entry``'s experiment cannot be continued (the logger keeps its fresh one).
        """
        raise NotImplementedError


def _adapter_for(logger: Logger) -> _Adapter | None:
    kinds: tuple[tuple[type, type[_Adapter]], ...] = (
        (CSVLogger, _CsvAdapter),
        (TensorBoardLogger, _TensorBoardAdapter),
        (MLFlowLogger, _MlflowAdapter),
        (WandbLogger, _WandbAdapter),
    )
    for kind, adapter in kinds:
        if isinstance(logger, kind):
            return adapter(logger)
    return None


def _remove_if_empty(fs: Any, path: str) -> None:
    """Remove the directory this process just created for a fresh version, but never one holding anything."""
    with contextlib.suppress(OSError):
        if not fs.ls(path):
            fs.rmdir(path)


class _CsvAdapter(_Adapter):
    logger: CSVLogger

    def identity(self) -> dict[str, Any]:
        return {"class": type(self.logger).__name__, "version": self.logger.version}

    def apply_identity(self, entry: dict[str, Any]) -> None:
        self.logger._version = entry["version"]

    def continue_run(self, entry: dict[str, Any], step: int | None) -> bool:
        logger, fs = self.logger, self.logger._fs
        fresh = logger._experiment
        if fresh is not None and logger.version != entry["version"]:
            _remove_if_empty(fs, fresh.log_dir)
        logger._version, logger._experiment = entry["version"], None
        metrics_path = os.path.join(logger.log_dir, _CSV_NAME)
        aside = metrics_path + _CSV_ASIDE
        if not fs.exists(aside) and fs.exists(metrics_path):
            fs.mv(metrics_path, aside)  # a kill from here on finds the whole file under this name
        with warnings.catch_warnings():
            # "logs directory exists and is not empty ... will be deleted": metrics.csv is aside, nothing is.
            warnings.simplefilter("ignore")
            writer = logger.experiment
        if not fs.exists(aside):
            return True
        with fs.open(aside, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            header, rows = list(reader.fieldnames or []), list(reader)
        kept = _cut_csv_rows(rows, step)
        buffer = io.StringIO(newline="")
        csv_writer = csv.DictWriter(buffer, fieldnames=header)
        csv_writer.writeheader()
        csv_writer.writerows(kept)
        temporary = f"{metrics_path}.tmp-{uuid.uuid4().hex[:8]}"
        with fs.open(temporary, "w", newline="") as handle:
            handle.write(buffer.getvalue())
        fs.mv(temporary, metrics_path)
        writer.metrics_keys = header  # later rows go under the existing header, as in an uninterrupted file
        fs.rm_file(aside)
        if len(kept) < len(rows):
            log.info(
                "CSVLogger %s: dropped %d row(s) lost attempts logged at or after step %s", logger.log_dir, len(rows) - len(kept), step
            )
        return True


def _cut_csv_rows(rows: list[dict[str, Any]], step: int | None) -> list[dict[str, Any]]:
    """Rows logged before ``step`` (all rows when None); a row cut short by a kill never stays."""
    kept = []
    for row in rows:
        if None in row or None in row.values():
            continue  # fewer or more fields than the header: a partial line
        try:
            row_step = int(float(row["step"]))
        except (KeyError, TypeError, ValueError):
            continue
        if step is None or row_step < step:
            kept.append(row)
    return kept


class _TensorBoardAdapter(_Adapter):
    logger: TensorBoardLogger

    def identity(self) -> dict[str, Any]:
        return {"class": type(self.logger).__name__, "version": self.logger.version}

    def apply_identity(self, entry: dict[str, Any]) -> None:
        self.logger._version = entry["version"]

    def continue_run(self, entry: dict[str, Any], step: int | None) -> bool:
        logger = self.logger
        fresh = logger._experiment
        if fresh is not None:
            # torch sets SummaryWriter.file_writer in an unannotated method: mypy sees only its initial None.
            fresh_file, fresh_dir = fresh.file_writer.event_writer._file_name, fresh.log_dir  # type: ignore[attr-defined]
            fresh.close()
            with contextlib.suppress(FileNotFoundError):
                logger._fs.rm_file(fresh_file)  # holds only the file-version event this process wrote
            if logger.version != entry["version"]:
                _remove_if_empty(logger._fs, fresh_dir)
        logger._version, logger._experiment = entry["version"], None
        if step is None:
            return True
        _wait_past_event_files(logger.log_dir)
        user_kwargs = dict(logger._kwargs)
        logger._kwargs["purge_step"] = step
        try:
            logger.experiment.flush()  # a new event file that starts with SessionLog.START at `step`
        finally:
            logger._kwargs = user_kwargs
        if step > 0:
            logger._default_hp_metric = False  # the hp_metric of step 0 stays from the first attempt
        return True


def _wait_past_event_files(log_dir: str) -> None:
    """Readers order event files by name, which starts with the creation second: make ours sort last."""
    newest = 0
    with contextlib.suppress(OSError):
        for name in os.listdir(log_dir):
            if match := _EVENT_FILE_TIME.search(name):
                newest = max(newest, int(match.group(1)))
    while int(time.time()) <= newest:
        time.sleep(0.05)


class _MlflowAdapter(_Adapter):
    logger: MLFlowLogger

    def identity(self) -> dict[str, Any]:
        return {"class": type(self.logger).__name__, "run_id": self.logger.run_id, "experiment_id": self.logger.experiment_id}

    def apply_identity(self, entry: dict[str, Any]) -> None:
        self.logger._run_id = entry["run_id"]

    def continue_run(self, entry: dict[str, Any], step: int | None) -> bool:
        logger = self.logger
        client = logger.experiment
        fresh_run = logger._run_id
        if fresh_run != entry["run_id"]:
            try:
                client.get_run(entry["run_id"])
            except Exception as error:  # any store's "no such run"
                log.warning(
                    "MLflow run %s of the earlier attempts is gone (%s): logging to the new run %s", entry["run_id"], error, fresh_run
                )
                return False
            client.delete_run(fresh_run)  # the empty run Lightning just made for this attempt
            logger._run_id = entry["run_id"]
        client.update_run(entry["run_id"], status="RUNNING")  # a lost attempt left it RUNNING or FAILED
        if step is None:
            return True
        run_dir = _mlflow_file_run_dir(logger, entry)
        if run_dir is None:
            log.warning(
                "MLflow tracking store %s is not a local file store: metrics that lost attempts logged at or after "
                "step %d are not removed and can appear twice",
                logger._tracking_uri,
                step,
            )
            return True
        for metric_file in sorted(path for path in (run_dir / "metrics").rglob("*") if path.is_file()):
            _cut_mlflow_metric_file(metric_file, step)
        return True


def _mlflow_file_run_dir(logger: MLFlowLogger, entry: dict[str, Any]) -> Path | None:
    """The run's directory when the tracking store is MLflow's local file store (``file:`` URI or a plain path)."""
    uri = logger._tracking_uri or ""
    if uri.startswith("file:"):
        from mlflow.utils.file_utils import local_file_uri_to_path

        root = Path(local_file_uri_to_path(uri))  # type: ignore[no-untyped-call]  # mlflow leaves it unannotated
    elif uri and ":" not in uri:
        root = Path(uri)
    else:
        return None
    run_dir = root / str(entry.get("experiment_id") or logger.experiment_id) / entry["run_id"]
    return run_dir if (run_dir / "meta.yaml").exists() else None


def _cut_mlflow_metric_file(path: Path, step: int) -> None:
    """Rewrite ``<run>/metrics/<key>`` ("timestamp value step" lines) without the lines of ``step`` and later."""
    original = path.read_text()
    kept = []
    for line in original.splitlines(keepends=True):
        parts = line.split()
        if len(parts) != 3 or not line.endswith("\n"):
            continue  # a line cut short by a kill
        with contextlib.suppress(ValueError):
            if int(parts[2]) < step:
                kept.append(line)
    text = "".join(kept)
    if not text:
        path.unlink()  # MLflow's file store takes an empty metric file for a damaged one
    elif text != original:
        temporary = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
        temporary.write_text(text)
        os.replace(temporary, path)


class _WandbAdapter(_Adapter):
    logger: WandbLogger

    def identity(self) -> dict[str, Any]:
        return {"class": type(self.logger).__name__, "run_id": self.logger.version}

    def apply_identity(self, entry: dict[str, Any]) -> None:
        self.logger._id = entry["run_id"]

    def continue_run(self, entry: dict[str, Any], step: int | None) -> bool:
        logger = self.logger
        fresh = logger._experiment
        if fresh is not None and getattr(fresh, "id", None) != entry["run_id"]:
            fresh_dir = Path(fresh.dir).parent if logger._offline and getattr(fresh, "dir", None) else None
            fresh.finish()
            if fresh_dir is not None and fresh_dir.name.endswith(f"-{fresh.id}"):
                shutil.rmtree(fresh_dir, ignore_errors=True)  # the offline run this process just made
            logger._experiment = None
        logger._id = entry["run_id"]
        logger._wandb_init.update(id=entry["run_id"], resume="allow")
        _ = logger.experiment
        if step is not None:
            log.warning(
                "W&B run %s continues across attempts, but its history cannot be rewritten: what a lost attempt "
                "logged at or after step %d appears twice",
                entry["run_id"],
                step,
            )
        return True


__all__ = ["IDENTITY_NAME", "LoggerContinuity", "loaded_logger_step"]
