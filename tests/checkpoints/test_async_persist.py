"""Saves cost the training loop only a snapshot; persists run one at a time in the background."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import fsspec
import lightning.pytorch as pl
import pytest
import torch
from fsspec.implementations.memory import MemoryFileSystem
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from checkpoints import SpotCheckpoint, latest
from checkpoints.persist import BackgroundPersister, SaveRequest, Superseded
from checkpoints.store import CheckpointStore

UPLOAD_S = 0.4


class SlowUploads(MemoryFileSystem):
    """Object storage whose uploads take UPLOAD_S and that records how many ran at once."""

    protocol = "slowmem"
    root_marker = "/"
    active = 0
    most_at_once = 0
    lock = threading.Lock()

    def put_file(self, lpath, rpath, **kwargs):  # fsspec's signature
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


@pytest.mark.slow  # a real Lightning fit of 40 steps against 0.4 s uploads: about 2 s
def test_a_slow_upload_neither_stalls_training_nor_queues_saves() -> None:
    url = f"slowmem://bucket-{uuid.uuid4().hex[:8]}/run"
    data = TensorDataset(torch.randn(64, 4), torch.randint(0, 2, (64,)))
    callback = SpotCheckpoint(url, every_steps=1, keep=100)
    trainer = pl.Trainer(
        max_steps=40, callbacks=[callback], logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
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
    trainer = pl.Trainer(
        max_steps=2,
        callbacks=[SpotCheckpoint(f"memory://handlers-{uuid.uuid4().hex[:8]}", every_steps=1)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Tiny(), DataLoader(data, batch_size=8))
    assert {signum: signal.getsignal(signum) for signum in before} == before


PARTS = 10
PART_S = 0.1


class PartedUploads(MemoryFileSystem):
    """Object storage that uploads in PARTS parts of PART_S each, reporting each part like s3fs does."""

    protocol = "partedmem"
    root_marker = "/"
    parts_done = threading.Semaphore(0)

    def put_file(self, lpath, rpath, callback=None, **kwargs):  # fsspec's signature
        payload = open(lpath, "rb").read()
        callback.set_size(len(payload))
        for _ in range(PARTS):
            time.sleep(PART_S)
            callback.relative_update(len(payload) // PARTS)
            PartedUploads.parts_done.release()
        self.pipe_file(rpath, payload)


fsspec.register_implementation("partedmem", PartedUploads, clobber=True)


def _persister(tmp_path, url: str):
    PartedUploads.parts_done = threading.Semaphore(0)  # count this test's parts only
    return BackgroundPersister(CheckpointStore(url), tmp_path, keep=10, protect=frozenset, spotrun_version="test")


def _request(step: int) -> SaveRequest:
    return SaveRequest({"state_dict": {"w": torch.full((256,), float(step))}}, step=step, epoch=0, reason="periodic")


def _wait_for_parts(count: int) -> None:
    for _ in range(count):
        assert PartedUploads.parts_done.acquire(timeout=10)


def test_an_emergency_supersedes_an_upload_that_has_far_to_go(tmp_path) -> None:
    url = f"partedmem://bucket-{uuid.uuid4().hex[:8]}/run"
    persister = _persister(tmp_path, url)
    persister.last_persist_s = 10.0  # a whole persist is slow: finishing this one would cost ~10 s
    persister.submit(_request(5))
    _wait_for_parts(1)
    started = time.monotonic()
    abandoned = persister.finish_or_supersede()
    waited = time.monotonic() - started

    assert abandoned is not None and isinstance(abandoned.exception(), Superseded)
    assert waited < (PARTS - 2) * PART_S, f"waited {waited:.2f}s: the upload was not cut short"
    assert CheckpointStore(url).list() == []  # nothing half-committed
    persister.submit(_request(6)).result()
    assert [info.step for info in CheckpointStore(url).list()] == [6]
    persister.close()


def test_an_emergency_lets_a_nearly_finished_upload_finish(tmp_path) -> None:
    url = f"partedmem://bucket-{uuid.uuid4().hex[:8]}/run"
    persister = _persister(tmp_path, url)
    persister.last_persist_s = PARTS * PART_S
    persister.submit(_request(5))
    _wait_for_parts(PARTS - 1)
    finished = persister.finish_or_supersede()
    assert finished is not None and finished.result().step == 5
    persister.close()


def test_an_upload_that_alone_can_beat_the_deadline_is_finished(tmp_path) -> None:
    url = f"partedmem://bucket-{uuid.uuid4().hex[:8]}/run"
    persister = _persister(tmp_path, url)
    persister.last_persist_s = 10.0
    persister.submit(_request(5))
    _wait_for_parts(2)  # at least 0.2 s into an estimated 10 s persist
    # A fresh persist (10 s) would miss this deadline; what is left of this one (< 9.8 s) would not.
    finished = persister.finish_or_supersede(deadline=time.time() + 9.9)
    assert finished is not None and finished.result().step == 5
    persister.close()
