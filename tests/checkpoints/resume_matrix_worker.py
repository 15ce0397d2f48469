"""The resume matrix's fork server (``tests/support/fork_server.py``): one training run per request.

A request is ``{"case", "url", "output", "board", "stop_after", "at_validation", "every_steps",
"progress", "threads"}``. The child writes the number of batches it has trained into ``board``
(8 bytes, shared memory), so the test can aim a SIGKILL at a batch; ``stop_after`` plays the
agent's notice instead (see ``Board``). A finished run saves its whole state (model, optimizers,
schedulers, loop counters, thread count) to ``output``.
"""

from __future__ import annotations

import mmap
import struct
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from resume_cases import CASES

from checkpoints import SpotCheckpoint
from checkpoints.control import STOP, ControlWriter

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from fork_server import serve

BOARD = struct.Struct("<q")


class Board(pl.Callback):
    """Publishes the batches this attempt has trained, and plays the agent's notice.

    ``stop_after`` batches of this attempt, the notice comes; with ``at_validation`` it comes at the
    first batch from then on that validation follows (every 8th of the run), so the emergency save
    lands right after a mid-epoch validation.
    """

    def __init__(self, path: Path, stop_after: int | None, at_validation: bool, control: Path) -> None:
        with open(path, "r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), BOARD.size)
        self.stop_after, self.at_validation, self.writer = stop_after, at_validation, ControlWriter(control)
        self.done = 0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        self.done += 1
        self._map[:] = BOARD.pack(self.done)
        run_batches = trainer.fit_loop.epoch_loop.batch_progress.total.completed + 1
        if self.stop_after is not None and self.done >= self.stop_after and (not self.at_validation or run_batches % 8 == 0):
            self.writer.request(STOP, reason="test notice")
            self.stop_after = None


def final_state(trainer: pl.Trainer) -> dict[str, Any]:
    """Everything an exact resume must reproduce."""
    return {
        "model": trainer.lightning_module.state_dict(),
        "optimizers": [optimizer.state_dict() for optimizer in trainer.optimizers],
        "schedulers": [config.scheduler.state_dict() for config in trainer.lr_scheduler_configs],
        "global_step": trainer.global_step,
        "batches_that_stepped": trainer.fit_loop.epoch_loop._batches_that_stepped,
        "epoch": trainer.current_epoch,
        "threads": torch.get_num_threads(),
    }


def _train(request: dict[str, Any]) -> None:
    pl.seed_everything(0)
    torch.set_num_threads(request.get("threads", 1))
    model, data, trainer_args = CASES[request["case"]]()
    control = Path(request["board"]).with_suffix(".control")
    spot = SpotCheckpoint(
        request["url"], every_steps=request["every_steps"], keep=2, control_file=control, progress_file=request.get("progress")
    )
    trainer = pl.Trainer(
        **{"max_epochs": 6, "val_check_interval": 0.5, **trainer_args},
        callbacks=[spot, Board(Path(request["board"]), request.get("stop_after"), request.get("at_validation", False), control)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    torch.save(final_state(trainer), request["output"])


def main() -> None:
    serve(_train)


if __name__ == "__main__":
    main()
