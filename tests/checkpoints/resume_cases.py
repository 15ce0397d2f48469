"""The training setups people actually run, each as a small Lightning job for the resume matrix.

Every case is a function returning ``(model, datamodule, trainer_kwargs)``; the matrix trains it
once uninterrupted and once through random notices and SIGKILLs, then compares every tensor of
the model, optimizer and scheduler state. The data are generated (nothing is downloaded), with 16
training batches an epoch and validation twice an epoch unless a case says otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

BATCH = 16
TRAIN_SAMPLES = 16 * BATCH
VAL_SAMPLES = 64


def _tensors(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(samples, 8, generator=generator)
    return x, (x[:, 0] > 0).long() + (x[:, 1] > 1).long()


class Net(pl.LightningModule):
    """An MLP with dropout (so the torch RNG matters at every step) and SGD with momentum."""

    def __init__(self, schedulers: Callable[[torch.optim.Optimizer], list[dict[str, Any]]] | None = None, lr: float = 0.1) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))
        self.schedulers = schedulers
        self.lr = lr

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.cross_entropy(self.net(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)
        if self.schedulers is None:
            return optimizer
        return [optimizer], self.schedulers(optimizer)


class Data(pl.LightningDataModule):
    """Plain map-style data; ``loader`` builds each DataLoader (so a case can use another loader class)."""

    def __init__(self, loader: Callable[..., Any] = DataLoader, **loader_args: Any) -> None:
        super().__init__()
        self.loader, self.loader_args = loader, loader_args

    def setup(self, stage: str) -> None:
        self.train_set = TensorDataset(*_tensors(TRAIN_SAMPLES, 0))
        self.val_set = TensorDataset(*_tensors(VAL_SAMPLES, 1))

    def train_dataloader(self) -> Any:
        return self.loader(self.train_set, batch_size=BATCH, shuffle=True, **self.loader_args)

    def val_dataloader(self) -> Any:
        return self.loader(self.val_set, batch_size=BATCH, **self.loader_args)


class NoisyDataset(Dataset):
    """Augments every sample with noise drawn from a per-sample seed, as the README advises for workers."""

    def __init__(self, samples: int, seed: int) -> None:
        self.x, self.y = _tensors(samples, seed)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        noise = torch.randn(8, generator=torch.Generator().manual_seed(index))
        return self.x[index] + 0.01 * noise, self.y[index]


class WorkerData(Data):
    """Two persistent workers on the train and the validation loader, each adding noise from its RNG."""

    def setup(self, stage: str) -> None:
        self.train_set, self.val_set = NoisyDataset(TRAIN_SAMPLES, 0), NoisyDataset(VAL_SAMPLES, 1)

    def train_dataloader(self) -> Any:
        return DataLoader(self.train_set, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True)

    def val_dataloader(self) -> Any:
        return DataLoader(self.val_set, batch_size=BATCH, num_workers=2, persistent_workers=True)


class TwoOptimizers(Net):
    """Manual optimization: a generator-like and a critic-like half, each with its own Adam."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.head = nn.Linear(3, 3)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        first, second = self.optimizers()
        loss = nn.functional.cross_entropy(self.net(x), y)
        first.zero_grad()
        self.manual_backward(loss)
        first.step()
        critic = nn.functional.cross_entropy(self.head(self.net(x).detach()), y)
        second.zero_grad()
        self.manual_backward(critic)
        second.step()
        self.log_dict({"train_loss": loss, "critic_loss": critic})

    def configure_optimizers(self) -> Any:
        return torch.optim.Adam(self.net.parameters(), lr=1e-2), torch.optim.Adam(self.head.parameters(), lr=1e-2)


class StreamOfSamples(IterableDataset):
    """An IterableDataset without state: where it stood cannot be saved."""

    def __iter__(self) -> Any:
        x, y = _tensors(TRAIN_SAMPLES, 0)
        yield from zip(x, y, strict=True)


class StreamWithState(IterableDataset):
    """A user's stream that knows where it stands: a shuffle per epoch, and the position inside it."""

    def __init__(self) -> None:
        self.epoch, self.position, self._resuming = 0, 0, False

    def __iter__(self) -> Any:
        if not self._resuming:
            self.position = 0
        self._resuming = False
        x, y = _tensors(TRAIN_SAMPLES, 0)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.epoch))
        while self.position < len(order):
            index = order[self.position]
            self.position += 1
            yield x[index], y[index]
        self.epoch += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position, self._resuming = state["epoch"], state["position"], True


class StreamData(Data):
    def __init__(self, stream: Callable[[], IterableDataset] = StreamOfSamples) -> None:
        super().__init__()
        self.stream = stream

    def train_dataloader(self) -> Any:
        return DataLoader(self.stream(), batch_size=BATCH)


def _plateau_and_step(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [
        {
            "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=0),
            "monitor": "val_loss",
            "interval": "epoch",
        },
        {"scheduler": torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.97), "interval": "step", "frequency": 3},
        # Steps every 4 batches on the newest val_loss (skipped, with a warning, before the first validation).
        {
            "scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.9, patience=0),
            "monitor": "val_loss",
            "interval": "step",
            "frequency": 4,
            "strict": False,
        },
    ]


def _one_cycle(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    return [{"scheduler": torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.3, total_steps=16 * 6), "interval": "step"}]


def _stateful_loader(*args: Any, **kwargs: Any) -> Any:
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(*args, **kwargs)


class StreamingData(pl.LightningDataModule):
    """LitData: a StreamingDataset over chunks ``optimize`` wrote, shuffled, in a StreamingDataLoader.

    ``where`` names the environment variable holding their location: a local folder, or an
    ``s3://`` URL on the moto server (``AWS_ENDPOINT_URL``), read through a cache folder that every
    attempt starts empty, as on a new instance (at the same path: LitData's state records it).
    """

    def __init__(self, where: str) -> None:
        super().__init__()
        self.where = where

    def setup(self, stage: str) -> None:
        self.val_set = TensorDataset(*_tensors(VAL_SAMPLES, 1))

    def train_dataloader(self) -> Any:
        from litdata import StreamingDataLoader, StreamingDataset

        input_dir = os.environ[self.where]
        remote = {}
        if input_dir.startswith("s3://"):
            cache = os.environ["LITDATA_CACHE_DIR"]
            shutil.rmtree(cache, ignore_errors=True)
            remote = {"storage_options": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}, "cache_dir": cache}
        dataset = StreamingDataset(input_dir, shuffle=True, seed=3, **remote)
        return StreamingDataLoader(dataset, batch_size=BATCH, num_workers=0)

    def val_dataloader(self) -> Any:
        return DataLoader(self.val_set, batch_size=BATCH)


def litdata_sample(index: int) -> tuple[torch.Tensor, int]:
    """What ``optimize`` stores for sample ``index`` (the same tensors as the map-style cases)."""
    x, y = _tensors(TRAIN_SAMPLES, 0)
    return x[index], int(y[index])


Case = Callable[[], tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]]

CASES: dict[str, Case] = {
    "accumulation": lambda: (Net(), Data(), {"accumulate_grad_batches": 3}),
    "plateau_and_step_schedulers": lambda: (Net(_plateau_and_step), Data(), {"val_check_interval": 0.5}),
    "one_cycle_per_step": lambda: (Net(_one_cycle), Data(), {}),
    "persistent_workers": lambda: (Net(), WorkerData(), {}),
    "stateful_dataloader": lambda: (Net(), Data(_stateful_loader), {}),
    "litdata_streaming": lambda: (Net(), StreamingData("LITDATA_DIR"), {}),
    "litdata_streaming_s3": lambda: (Net(), StreamingData("LITDATA_S3_DIR"), {}),
    "manual_two_optimizers": lambda: (TwoOptimizers(), Data(), {}),
    "iterable_with_state": lambda: (Net(), StreamData(StreamWithState), {"val_check_interval": 8}),
    "stateless_iterable": lambda: (Net(), StreamData(), {"val_check_interval": 8}),
}
