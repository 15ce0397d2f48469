"""The demo job: classify scikit-learn's 8x8 handwritten digits with an MLP. No downloads.

Written the way a user would write it, with nothing spotrun-specific: a plain shuffled
``DataLoader``, a per-step LR schedule, dropout, and an ``EarlyStopping`` callback. Each of these
carries state (data order, scheduler, RNG, the callback's best score and patience) that spotrun
has to restore exactly for a preempted run to end where an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import EarlyStopping
from sklearn.datasets import load_digits
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset


class DigitsData(pl.LightningDataModule):
    """1,797 digit images (64 grey levels each, 10 classes) shipped inside scikit-learn, split train/val."""

    def __init__(self, batch_size: int = 64, val_fraction: float = 0.2, num_workers: int = 0, split_seed: int = 0) -> None:
        super().__init__()
        if not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        """Split with a fixed generator (the same split in every process) and standardise on training statistics."""
        features, labels = load_digits(return_X_y=True)
        x = torch.tensor(features, dtype=torch.float32)
        y = torch.tensor(labels, dtype=torch.long)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.hparams.split_seed))
        val_size = round(len(x) * self.hparams.val_fraction)
        val_index, train_index = order[:val_size], order[val_size:]
        mean = x[train_index].mean(dim=0)
        std = x[train_index].std(dim=0).clamp_min(1e-3)  # border pixels are always blank
        x = (x - mean) / std
        self.train_set = TensorDataset(x[train_index], y[train_index])
        self.val_set = TensorDataset(x[val_index], y[val_index])

    def train_dataloader(self) -> DataLoader:
        """Shuffled with the global RNG, as most users write it; spotrun makes the order resumable."""
        return DataLoader(self.train_set, batch_size=self.hparams.batch_size, shuffle=True, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        """In order: validation must not depend on any RNG."""
        return DataLoader(self.val_set, batch_size=256, num_workers=self.hparams.num_workers)


class DigitsClassifier(pl.LightningModule):
    """An MLP with dropout, trained with SGD and a one-cycle LR schedule stepped every batch."""

    def __init__(
        self,
        lr: float = 0.05,
        hidden: Sequence[int] = (256, 256),
        dropout: float = 0.2,
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        label_smoothing: float = 0.0,
        patience: int = 8,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        layers: list[nn.Module] = []
        width = 64
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, 10))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits for a batch of standardised 64-pixel images."""
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Cross-entropy on one batch, logged every step."""
        x, y = batch
        loss = F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        """Loss and accuracy, averaged over the epoch."""
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing), prog_bar=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> dict:
        """SGD with momentum; one-cycle schedule over all training steps, stepped per step."""
        optimizer = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum, weight_decay=self.hparams.weight_decay
        )
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=self.hparams.lr, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def configure_callbacks(self) -> list[pl.Callback]:
        """Early stopping on validation loss: its best score and patience count must survive a preemption too."""
        return [EarlyStopping(monitor="val_loss", patience=self.hparams.patience)]
