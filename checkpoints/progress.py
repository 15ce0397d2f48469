"""The training process's progress report: what the callback tells the agent, through the progress file.

The callback (``SpotCheckpoint``, rank 0 only) replaces the file named by ``SPOTRUN_PROGRESS_FILE``
at most once a second after a step, and always at the end of training and after an emergency
checkpoint; the agent reads it at each heartbeat and forwards it to the controller inside the
heartbeat (``runner.instance.protocol.Heartbeat``). Both sides are the same installed spotrun on one
instance, so the file carries no version. One JSON object, every key always written:

- ``status``: ``TrainingStatus``, how training stands;
- ``time``: when the callback wrote the report (unix s);
- ``step``: the optimizer step reached (``trainer.global_step``); ``epoch``: the current epoch;
- ``total_steps``: the step training ends at, null when unknowable (a stream of unknown length);
- ``loss``: the ``train_loss`` (else ``loss``) metric, null without one; NaN when training diverged;
- ``steps_per_s``: throughput since the previous report, 0 until there is one;
- ``metrics``: every scalar callback metric by name (NaN allowed);
- ``checkpoint``: the newest committed checkpoint (``CheckpointReport``), null before the first;
- ``resumed_from_step``: the step this attempt resumed from, null when it started from scratch;
- ``emergency``: how the emergency save went (``EmergencyReport``), null unless there was one;
- ``resume_exact``: false when a train loader cannot resume mid-epoch exactly, and
  ``resume_inexact_reason`` why (null when exact).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from checkpoints import typed_json
from checkpoints.control import read_json, write_json_atomically
from checkpoints.typed_json import NON_FINITE

if TYPE_CHECKING:
    from checkpoints.store import CheckpointInfo


class TrainingStatus(str, enum.Enum):
    """How training stands, by the callback's word."""

    TRAINING = "training"  # made at least one step, going on
    FINISHED = "finished"  # reached its end; the final checkpoint is committed
    PREEMPTED = "preempted"  # stopped on request after an emergency checkpoint (``emergency`` says whether it is durable)


@dataclass(frozen=True, kw_only=True)
class CheckpointReport:
    """The newest committed checkpoint, as ``CheckpointInfo.to_json`` describes it."""

    step: int
    epoch: int
    time: float  # when it was committed (unix s)
    size_bytes: int
    url: str
    reason: str  # "periodic", "requested", "emergency", "final"
    final: bool
    metrics: dict[str, float] = field(default_factory=dict, metadata=NON_FINITE)

    @classmethod
    def of(cls, info: CheckpointInfo) -> CheckpointReport:
        """The report of a committed checkpoint."""
        return typed_json.from_json(cls, info.to_json())


@dataclass(frozen=True, kw_only=True)
class EmergencyReport:
    """How the emergency checkpoint went: the step saved, whether it is durable, and whether it was durable in time."""

    step: int
    durable: bool
    before_deadline: bool


@dataclass(frozen=True, kw_only=True)
class Progress:
    """One progress report (the module docstring describes each field); fields in the order the file has them."""

    status: TrainingStatus
    time: float
    step: int
    epoch: int
    total_steps: int | None = None
    loss: float | None = field(default=None, metadata=NON_FINITE)
    steps_per_s: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict, metadata=NON_FINITE)
    checkpoint: CheckpointReport | None = None
    resumed_from_step: int | None = None
    emergency: EmergencyReport | None = None
    resume_exact: bool = True
    resume_inexact_reason: str | None = None

    @property
    def checkpoint_step(self) -> int | None:
        """The step of the newest committed checkpoint, None before the first."""
        return self.checkpoint.step if self.checkpoint else None

    @property
    def resumes_at(self) -> int:
        """The step a restart now resumes from: the newest checkpoint's, else the one this attempt resumed from, else 0."""
        return self.checkpoint_step or self.resumed_from_step or 0

    def to_json(self) -> dict[str, Any]:
        """The report as the progress file holds it."""
        return typed_json.to_json(self)

    @classmethod
    def from_json(cls, data: object) -> Progress:
        """A report read back; ``typed_json.FieldError`` naming the field that does not fit."""
        return typed_json.from_json(cls, data)


def write_progress(path: Path, progress: Progress) -> None:
    """Replace the progress file with ``progress`` (in one rename: the agent never reads half of one)."""
    write_json_atomically(path, progress.to_json())


def read_progress(path: Path) -> Progress | None:
    """The newest report, None before the first; ``typed_json.FieldError`` (naming the file) when it does not fit."""
    data = read_json(path)
    if data is None:
        return None
    try:
        return Progress.from_json(data)
    except typed_json.FieldError as error:
        raise typed_json.FieldError(f"{path}: {error}") from error
