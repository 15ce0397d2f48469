"""Saves cost the training loop only a snapshot; persists run one at a time in the background."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import fsspec
import lightning.pytorch as pl
import torch
from fsspec.implementations.memory import MemoryFileSystem
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from checkpoints import SpotCheckpoint, latest
from checkpoints.store import CheckpointStore

UPLOAD_S = 0.4


class SlowUploads(MemoryFileSystem):
    """Object storage whose uploads take UPLOAD_S and that records how many ran at once."""

    protocol = "slowmem"
    root_marker = "/"
    active = 0
    most_at_once = 0
    lock = threading.Lock()

    def put_file(self, lpath, rpath, **kwargs):  # noqa: ANN001 - fsspec's signature
        with SlowUploads.lock:
            SlowUploads.active += 1
            SlowUploads.most_at_once = max(SlowUploads.most_at_once, SlowUploads.active)
        try:
            time.sleep(UPLOAD_S)
            return super().put_file(lpath, rpath, **kwargs)
        finally:
            with SlowUploads.lock:
                SlowUploads.active -= 1


fsspec.register_implementation("slowmem", SlowUploads, clobber=True)


class Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 2)

    def training_step(self, batch, batch_idx):
        time.sleep(0.02)  # a step worth measuring against the upload time
        return nn.functional.cross_entropy(self.layer(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_slow_upload_neither_stalls_training_nor_queues_saves() -> None:
    url = f"slowmem://bucket-{uuid.uuid4().hex[:8]}/run"
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    callback = SpotCheckpoint(url, every_steps=1, keep=100)
    trainer = pl.Trainer(max_steps=40, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    started = time.perf_counter()
    trainer.fit(Tiny(), DataLoader(data, batch_size=8, shuffle=True))
    elapsed = time.perf_counter() - started

    saved = [info.step for info in CheckpointStore(url).list()]
    # 40 steps x 20 ms of training; a synchronous save per step would add 40 x 0.4 s.
    assert elapsed < 40 * UPLOAD_S / 2, f"training waited for uploads: {elapsed:.1f}s"
    assert SlowUploads.most_at_once == 1
    assert 3 <= len(saved) < 40  # saves were due every step: most were deferred, none queued
    final = latest(url)
    assert final is not None and final.final and final.step == 40



def test_signal_handlers_are_the_pre_fit_ones_after_fit() -> None:
    """A process that used SpotCheckpoint must still die on SIGTERM after fit (as pytest under `timeout` must)."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGUSR1)}
    data = TensorDataset(torch.randn(16, 4), torch.randint(0, 2, (16,)))
    trainer = pl.Trainer(max_steps=2, callbacks=[SpotCheckpoint(f"memory://handlers-{uuid.uuid4().hex[:8]}", every_steps=1)],
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Tiny(), DataLoader(data, batch_size=8))
    assert {signum: signal.getsignal(signum) for signum in before} == before
