"""The examples train for real: the demo model learns, deterministically, and the command-mode script runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from checkpoints import latest
from runner.spec.loading import load_object

REPO = Path(__file__).resolve().parent.parent
DIGITS = REPO / "examples" / "digits.py"
DigitsClassifier = load_object(f"{DIGITS}:DigitsClassifier", base=pl.LightningModule, field="model")
DigitsData = load_object(f"{DIGITS}:DigitsData", base=pl.LightningDataModule, field="data")


def fit(tmp_path: Path, epochs: int) -> tuple[pl.Trainer, pl.LightningModule]:
    pl.seed_everything(0, verbose=False)
    model = DigitsClassifier(lr=0.1, hidden=(64,), dropout=0.1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=DigitsData(batch_size=64))
    return trainer, model


@pytest.mark.slow  # two Lightning fits
def test_digits_classifier_learns_deterministically(tmp_path):
    trainer, model = fit(tmp_path, epochs=3)
    assert trainer.current_epoch == 3
    assert float(trainer.callback_metrics["val_acc"]) > 0.8  # chance is 0.1
    assert any(type(callback).__name__ == "EarlyStopping" for callback in trainer.callbacks)

    _, again = fit(tmp_path, epochs=3)
    for mine, theirs in zip(model.parameters(), again.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_split_does_not_depend_on_the_global_seed():
    sets = []
    for seed in (1, 2):
        pl.seed_everything(seed, verbose=False)
        data = DigitsData(val_fraction=0.25)
        data.setup("fit")
        sets.append(data.val_set.tensors[1])
    assert len(sets[0]) == 449 and torch.equal(sets[0], sets[1])


def test_bad_val_fraction():
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        DigitsData(val_fraction=1.0)


@pytest.mark.slow  # the user's script trains in a process of its own
def test_command_mode_script_checkpoints_through_spotrun_environment(tmp_path):
    url = f"file://{tmp_path}/ckpt"
    env = {**os.environ, "SPOTRUN_CHECKPOINT_URL": url, "SPOTRUN_CHECKPOINT_EVERY_STEPS": "10"}
    result = subprocess.run(
        [sys.executable, "examples/custom_script/train.py", "--max-epochs", "1", "--batch-size", "128"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    newest = latest(url)
    assert newest is not None and newest.final and newest.step == 12  # 1,438 training images / 128 per batch
