"""One training process that ends its fits every way there is, with TMPDIR pointed at a folder of the test's.

Usage: staging_worker.py CHECKPOINT_URL CONTROL_FILE REPORT.json

1. a fit that raises at step 4 (its checkpoint of step 3 committed);
2. a fit that resumes from it and ends normally at step 6;
3. a fit that is asked for an emergency stop at step 2 and ends the process with the preempted code.

After the first two the report records the ``spotrun-*`` entries of the temp folder, and what
the staging folder held when the resumed fit began to train.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import lightning.pytorch as pl
from toy_training import StopAtStep, ToyData, ToyModel

from checkpoints import SpotCheckpoint


class PlainToy(ToyModel):
    def configure_callbacks(self) -> list[pl.Callback]:
        return []  # no EarlyStopping: these fits stop before any validation


class FailAtStep(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("user code failed")


class StagingAtStart(pl.Callback):
    """What the staging folder holds once the resumed state is loaded and training begins."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        spot = next(callback for callback in trainer.callbacks if isinstance(callback, SpotCheckpoint))
        self.resumed_from = spot.resumed_from.step if spot.resumed_from else None
        self.files = sorted(path.name for path in spot._staging.iterdir())


def _leftovers() -> list[str]:
    return sorted(path.name for path in Path(tempfile.gettempdir()).glob("spotrun-*"))


def _fit(url: str, max_steps: int, *callbacks: pl.Callback, control: Path | None = None) -> None:
    trainer = pl.Trainer(
        max_steps=max_steps,
        callbacks=[SpotCheckpoint(url, every_steps=3, keep=2, control_file=control), *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    trainer.fit(PlainToy(), ToyData())


def main() -> None:
    url, control, report_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    pl.seed_everything(0)
    report: dict[str, object] = {}
    try:
        _fit(url, 20, FailAtStep(4))
    except RuntimeError:
        report["after_exception"] = _leftovers()
    probe = StagingAtStart()
    _fit(url, 6, probe)
    report.update(resumed_from=probe.resumed_from, staging_at_start=probe.files, after_normal_end=_leftovers())
    report_path.write_text(json.dumps(report))
    _fit(f"{url}-stopped", 20, StopAtStep(2, control), control=control)  # raises Preempted: the process exits 75


if __name__ == "__main__":
    main()
