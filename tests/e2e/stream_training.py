"""A model-mode job whose train data is a stateless IterableDataset: it can resume only at the step, not exactly."""

from __future__ import annotations

import time
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, IterableDataset


class Stream(IterableDataset):
    """Samples from a generator seeded afresh on every pass: no state_dict(), so its position is lost on a restart."""

    def __iter__(self) -> Any:
        generator = torch.Generator().manual_seed(0)
        for _ in range(40 * 8):
            x = torch.randn(4, generator=generator)
            yield x, x.sum(dim=0, keepdim=True)


class StreamModel(pl.LightningModule):
    def __init__(self, step_delay_s: float = 0.05) -> None:
        super().__init__()
        self.step_delay_s = step_delay_s  # room for the test to interrupt it mid-epoch
        self.net = nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        time.sleep(self.step_delay_s)
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.01)


class StreamData(pl.LightningDataModule):
    def train_dataloader(self) -> Any:
        return DataLoader(Stream(), batch_size=8)
