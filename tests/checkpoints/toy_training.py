"""A small but complete training run for resume tests: dropout, momentum, a step LR schedule,
mid-epoch validation, EarlyStopping and a shuffled plain DataLoader.

Usage: toy_training.py CHECKPOINT_URL OUTPUT.pt [--every-steps N] [--stop-at-step S] [--control FILE]
                       [--ddp] [--signal-rank R --signal-at-step S]
Writes the final state_dict to OUTPUT.pt. ``--stop-at-step`` asks for an emergency stop (as the
agent's control file would) the first time training reaches that step; ``--signal-rank`` makes
only that rank send itself SIGUSR1 (an emergency request seen by one rank of a DDP run).
"""

from __future__ import annotations

import argparse
import os
import signal
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from checkpoints import SpotCheckpoint
from checkpoints.control import STOP, ControlWriter


class ToyModel(pl.LightningModule):
    def __init__(self, step_delay_s: float = 0.0) -> None:
        super().__init__()
        self.step_delay_s = step_delay_s  # makes room to signal the process mid-training; no effect on the maths
        self.net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 3))

    def training_step(self, batch, batch_idx):
        time.sleep(self.step_delay_s)
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)
        return [optimizer], [torch.optim.lr_scheduler.StepLR(optimizer, 2, 0.5)]

    def configure_callbacks(self):
        return [EarlyStopping("val_loss", patience=2)]


class ToyData(pl.LightningDataModule):
    def setup(self, stage: str) -> None:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(600, 8, generator=generator)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
        self.train_set, self.val_set = TensorDataset(x[:500], y[:500]), TensorDataset(x[500:], y[500:])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=32, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=50)


class StopAtStep(pl.Callback):
    """Plays the agent: writes a stop request into the control file when the step is reached."""

    def __init__(self, step: int, control: Path) -> None:
        self.step, self.writer = step, ControlWriter(control)

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            self.writer.request(STOP, reason="test")


class SignalAtStep(pl.Callback):
    """One rank alone asks for an emergency save, as a signal to that process would."""

    def __init__(self, step: int, rank: int) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_rank == self.rank and trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("output")
    parser.add_argument("--every-steps", type=int, default=7)
    parser.add_argument("--stop-at-step", type=int)
    parser.add_argument("--control", type=Path)
    parser.add_argument("--progress", type=Path, help="where SpotCheckpoint reports progress")
    parser.add_argument("--step-delay", type=float, default=0.0, help="seconds of sleep per training step")
    parser.add_argument("--ddp", action="store_true", help="2 processes, gloo on CPU")
    parser.add_argument("--signal-rank", type=int)
    parser.add_argument("--signal-at-step", type=int)
    args = parser.parse_args()
    pl.seed_everything(0)
    callbacks: list[pl.Callback] = [
        SpotCheckpoint(args.url, every_steps=args.every_steps, keep=2, control_file=args.control, progress_file=args.progress)
    ]
    if args.stop_at_step is not None:
        callbacks.append(StopAtStep(args.stop_at_step, args.control))
    if args.signal_rank is not None:
        callbacks.append(SignalAtStep(args.signal_at_step, args.signal_rank))
    distributed = {"strategy": "ddp", "accelerator": "cpu", "devices": 2} if args.ddp else {}
    trainer = pl.Trainer(
        max_epochs=6,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=0.5,
        **distributed,
    )
    trainer.fit(ToyModel(args.step_delay), ToyData())
    if trainer.is_global_zero:
        torch.save(trainer.lightning_module.state_dict(), args.output)


if __name__ == "__main__":
    main()
