"""The logger continuity tests' fork server (``tests/support/fork_server.py``): one attempt per request.

A request is ``{"url", "logger", "log_root", "control", "stop_at_step", "every_steps",
"step_delay"}``. Each child seeds, builds the logger and trains, exactly like a new attempt on a
new instance; torch, Lightning and the loggers are imported once, by the server.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store only on request

import lightning.pytorch as pl
import mlflow  # noqa: F401 - imported once here, not in every attempt
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, MLFlowLogger, TensorBoardLogger
from tensorboard.backend.event_processing import event_accumulator  # noqa: F401
from toy_training import StopAtStep, ToyData, ToyModel

from checkpoints import SpotCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from fork_server import serve

NAME = "toy"


def make_logger(kind: str, root: str) -> Logger:
    if kind == "csv":
        return CSVLogger(root, name=NAME)
    if kind == "tensorboard":
        return TensorBoardLogger(root, name=NAME)
    if kind == "mlflow":
        return MLFlowLogger(experiment_name=NAME, tracking_uri=f"file:{root}/mlruns")
    raise ValueError(kind)


class EpochMeanModel(ToyModel):
    """The toy model, also logging an epoch mean of the training loss (accumulated across a mid-epoch resume)."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss_epoch_mean", loss, on_step=False, on_epoch=True)
        return loss


def _train(request: dict[str, Any]) -> None:
    torch.set_num_threads(1)
    pl.seed_everything(0)
    control = Path(request["control"])
    callbacks: list[pl.Callback] = [SpotCheckpoint(request["url"], every_steps=request["every_steps"], keep=2, control_file=control)]
    if request.get("stop_at_step") is not None:
        callbacks.append(StopAtStep(request["stop_at_step"], control))
    trainer = pl.Trainer(
        max_epochs=6,
        callbacks=callbacks,
        logger=make_logger(request["logger"], request["log_root"]),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=0.5,
    )
    trainer.fit(EpochMeanModel(request.get("step_delay", 0.0)), ToyData())


def main() -> None:
    serve(_train)


if __name__ == "__main__":
    main()
