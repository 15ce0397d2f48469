"""How long a spot notice waits for its emergency checkpoint under gradient accumulation.

SpotCheckpoint saves only at optimizer-step boundaries (a window's partial gradients are in no
checkpoint), so a notice that lands inside an accumulation window waits for the window to close.
For each ``accumulate_grad_batches`` this trains a small model whose batches take a fixed time,
sends notices at random batches (through the control file, as the agent does), and measures from
the notice to the moment the emergency checkpoint is durable and training has stopped. The
expected worst case is ``(accumulate_grad_batches - 1) * batch time`` plus the save itself.
Prints the figures and writes them to benchmarks/results/accumulation_notice.json.

    .venv/bin/python benchmarks/accumulation_notice.py
"""

from __future__ import annotations

import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "checkpoints"))
from resume_cases import Data, Net  # noqa: E402

from checkpoints import SpotCheckpoint, latest  # noqa: E402
from checkpoints.control import STOP, ControlWriter  # noqa: E402

RESULTS = REPO / "benchmarks" / "results" / "accumulation_notice.json"
BATCH_S = 0.05
WINDOWS = (1, 4, 8, 16)
NOTICES = 8


class SlowNet(Net):
    """Each batch takes BATCH_S of wall clock, as a larger model's would."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(BATCH_S)
        return super().training_step(batch, batch_idx)


class NoticeAt(pl.Callback):
    def __init__(self, batch: int, control: Path) -> None:
        self.batch, self.writer, self.sent_at = batch, ControlWriter(control), None

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.fit_loop.epoch_loop.batch_progress.total.completed + 1 == self.batch:
            self.writer.request(STOP, reason="benchmark notice")
            self.sent_at = time.monotonic()


def wait_for_checkpoint(window: int, batch: int, directory: Path) -> float:
    """Seconds from a notice after ``batch`` batches to a durable emergency checkpoint and the end of training."""
    pl.seed_everything(0)
    directory.mkdir(parents=True)
    notice = NoticeAt(batch, directory / "control.json")
    url = f"file://{directory}/ckpts"
    trainer = pl.Trainer(
        max_epochs=6,
        accumulate_grad_batches=window,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[SpotCheckpoint(url, every_steps=10_000, control_file=notice.writer.path), notice],
    )
    try:
        trainer.fit(SlowNet(), Data())
    except SystemExit:
        pass
    stopped = time.monotonic()
    committed = latest(url)
    assert notice.sent_at is not None and committed is not None and committed.reason == "emergency"
    return stopped - notice.sent_at


def main() -> None:
    torch.set_num_threads(1)
    rng = random.Random(13)
    results: dict[str, Any] = {"batch_s": BATCH_S, "windows": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for window in WINDOWS:
            waits = [wait_for_checkpoint(window, rng.randint(3, 40), Path(tmp) / f"{window}-{index}") for index in range(NOTICES)]
            figures = {
                "notices": NOTICES,
                "mean_wait_s": round(statistics.mean(waits), 3),
                "max_wait_s": round(max(waits), 3),
                "worst_case_window_s": round((window - 1) * BATCH_S, 3),
            }
            results["windows"][str(window)] = figures
            print(
                f"accumulate_grad_batches={window:2d}: notice -> durable emergency checkpoint "
                f"mean {figures['mean_wait_s']:.3f} s, max {figures['max_wait_s']:.3f} s "
                f"(window alone at most {figures['worst_case_window_s']:.2f} s at {BATCH_S} s a batch)"
            )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
