"""The callback -> agent progress report: one typed form, written by the callback, read back by the agent exactly."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from checkpoints import SpotCheckpoint
from checkpoints.progress import CheckpointReport, EmergencyReport, Progress, TrainingStatus, read_progress, write_progress
from checkpoints.typed_json import FieldError

_counts = st.integers(min_value=0, max_value=2**53)
_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
_numbers = st.floats(allow_nan=False, allow_infinity=False)
_metrics = st.dictionaries(st.text(max_size=12), _numbers, max_size=4)
_text = st.text(max_size=40)

checkpoint_reports = st.builds(
    CheckpointReport,
    step=_counts,
    epoch=_counts,
    time=_times,
    size_bytes=_counts,
    url=_text,
    reason=_text,
    final=st.booleans(),
    metrics=_metrics,
)
progress_reports = st.builds(
    Progress,
    status=st.sampled_from(TrainingStatus),
    time=_times,
    step=_counts,
    epoch=_counts,
    total_steps=st.none() | _counts,
    loss=st.none() | _numbers,
    steps_per_s=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    metrics=_metrics,
    checkpoint=st.none() | checkpoint_reports,
    resumed_from_step=st.none() | _counts,
    emergency=st.none() | st.builds(EmergencyReport, step=_counts, durable=st.booleans(), before_deadline=st.booleans()),
    resume_exact=st.booleans(),
    resume_inexact_reason=st.none() | _text,
)


@settings(max_examples=200, deadline=None)
@given(progress_reports)
def test_any_report_reads_back_as_it_was_written(progress: Progress) -> None:
    assert Progress.from_json(json.loads(json.dumps(progress.to_json()))) == progress


# A value of the wrong JSON type for each field, and where the error must point.
_WRONG = [
    ("status", "running", "status"),  # the agent's word, not the training's
    ("time", "now", "time"),
    ("time", float("nan"), "time"),
    ("step", 1.5, "step"),
    ("step", True, "step"),
    ("epoch", None, "epoch"),
    ("total_steps", "100", "total_steps"),
    ("loss", [0.1], "loss"),
    ("steps_per_s", float("inf"), "steps_per_s"),
    ("metrics", {"loss": "low"}, "metrics['loss']"),
    ("checkpoint", {"step": 3}, "checkpoint.epoch"),
    ("checkpoint", "step-3", "checkpoint"),
    ("emergency", {"step": 3, "durable": "yes", "before_deadline": True}, "emergency.durable"),
    ("resume_exact", 1, "resume_exact"),
    ("resume_inexact_reason", 7, "resume_inexact_reason"),
]


@settings(max_examples=50, deadline=None)
@given(progress_reports, st.sampled_from(_WRONG))
def test_a_field_of_the_wrong_type_is_refused_naming_it(progress: Progress, wrong: tuple[str, Any, str]) -> None:
    field, value, named = wrong
    with pytest.raises(FieldError, match=rf"^{_escaped(named)} is "):
        Progress.from_json({**progress.to_json(), field: value})


def _escaped(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")


def test_a_diverged_loss_is_reported_and_a_missing_report_is_none(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    assert read_progress(path) is None
    write_progress(
        path, Progress(status=TrainingStatus.TRAINING, time=1.0, step=3, epoch=0, loss=float("nan"), metrics={"loss": float("nan")})
    )
    read = read_progress(path)
    assert read is not None and read.loss is not None and math.isnan(read.loss) and math.isnan(read.metrics["loss"])
    assert [path.name] == [entry.name for entry in tmp_path.iterdir()]  # replaced by a rename: no temporary left behind


def test_a_damaged_report_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    path.write_text(json.dumps({"status": "training", "time": 1.0, "step": "three", "epoch": 0}))
    with pytest.raises(FieldError, match=rf"{path}: step is 'three', expected int"):
        read_progress(path)


def test_the_resume_point_is_the_newest_checkpoint_else_where_the_attempt_began() -> None:
    report = Progress(status=TrainingStatus.TRAINING, time=1.0, step=30, epoch=1)
    assert report.resumes_at == 0 and report.checkpoint_step is None
    assert replace(report, resumed_from_step=10).resumes_at == 10
    checkpoint = CheckpointReport(step=20, epoch=1, time=1.0, size_bytes=1, url="memory://x/step-20", reason="periodic", final=False)
    assert replace(report, resumed_from_step=10, checkpoint=checkpoint).resumes_at == 20


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self.layer(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_the_callbacks_last_report_of_a_real_fit_is_its_end_and_final_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "progress.json"
    data = DataLoader(TensorDataset(torch.randn(32, 4), torch.randint(0, 2, (32,))), batch_size=4)
    callback = SpotCheckpoint(f"file://{tmp_path}/ckpts", every_steps=5, progress_file=path)
    trainer = pl.Trainer(
        max_epochs=2, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    trainer.fit(_Tiny(), data)

    report = read_progress(path)
    assert report is not None and report.status is TrainingStatus.FINISHED
    assert report.step == report.total_steps == 16 and report.epoch == trainer.current_epoch
    assert (
        report.checkpoint is not None and report.checkpoint.step == 16 and report.checkpoint.final and report.checkpoint.reason == "final"
    )
    assert report.loss is not None and report.loss == report.metrics["train_loss"]
    assert report.resumed_from_step is None and report.emergency is None and report.resume_exact
