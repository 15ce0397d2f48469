"""The kill-storm test's fork server (``tests/support/fork_server.py``): one training run per request.

A request is ``{"url", "output", "epochs", "phase_file"}``. Each child trains a model carrying
32 MB of state against a store with an object store's latency, and writes where it is into the
small shared phase file, so the test knows which part of a checkpoint it cut short.
"""

from __future__ import annotations

import mmap
import struct
import sys
import time
from pathlib import Path
from typing import Any

import fsspec
import lightning.pytorch as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from toy_training import ToyData, ToyModel

import checkpoints.callback
from checkpoints import SpotCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from fork_server import serve

# Shared phase file layout: current phase (int32), entries per phase (int32 each), resumed-from step (int32, -1: none).
PHASES = ("train", "snapshot", "serialize", "upload", "manifest", "retention")
LAYOUT = struct.Struct(f"<i{len(PHASES)}ii")
BALLAST_FLOATS = 8 * 2**20  # 32 MB of state, so each phase of a save lasts long enough to be hit
OP_LAG_S = 0.004  # per write, rename or delete: what a remote object store costs per request
UPLOAD_CHUNK_BYTES = 2**20
CHUNK_LAG_S = 0.001


class PhaseBoard:
    """The child's side of the shared phase file."""

    def __init__(self, path: Path) -> None:
        with open(path, "r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), LAYOUT.size)
        self._entries = [0] * len(PHASES)
        self._resumed = -1

    def enter(self, phase: str) -> None:
        index = PHASES.index(phase)
        self._entries[index] += 1
        self._write(index)

    def leave(self) -> None:
        self._write(0)

    def resumed(self, step: int) -> None:
        self._resumed = step
        self._write(0)

    def _write(self, current: int) -> None:
        self._map[:] = LAYOUT.pack(current, *self._entries, self._resumed)


BOARD: PhaseBoard | None = None


def _in_phase(phase: str, call: Any) -> Any:
    assert BOARD is not None
    BOARD.enter(phase)
    try:
        return call()
    finally:
        BOARD.leave()


class LaggyFileSystem(LocalFileSystem):
    """Local files with an object store's latency on every write, and uploads that take time per chunk.

    It also marks which phase of a save is running: uploads, manifest writes and retention deletes.
    """

    protocol = ("laggy",)

    def put_file(self, path1: str, path2: str, callback: Any = None, **kwargs: Any) -> None:
        def upload() -> None:
            time.sleep(OP_LAG_S)
            with open(path1, "rb") as source, open(self._strip_protocol(path2), "wb") as target:
                while chunk := source.read(UPLOAD_CHUNK_BYTES):
                    target.write(chunk)
                    time.sleep(CHUNK_LAG_S)

        _in_phase("upload", upload)

    def pipe_file(self, path: str, *args: Any, **kwargs: Any) -> None:
        self._lagged("manifest" if "MANIFEST" in path else None, super().pipe_file, path, *args, **kwargs)

    def mv(self, path1: str, path2: str, *args: Any, **kwargs: Any) -> None:
        self._lagged("manifest" if "MANIFEST" in path2 else None, super().mv, path1, path2, *args, **kwargs)

    def rm_file(self, path: str) -> None:
        self._lagged("retention", super().rm_file, path)

    def rm(self, path: str, *args: Any, **kwargs: Any) -> None:
        self._lagged("retention", super().rm, path, *args, **kwargs)

    @staticmethod
    def _lagged(phase: str | None, operation: Any, *args: Any, **kwargs: Any) -> None:
        def call() -> None:
            time.sleep(OP_LAG_S)
            operation(*args, **kwargs)

        call() if phase is None else _in_phase(phase, call)


class BallastModel(ToyModel):
    """The toy model with a large frozen buffer (checkpointed, never trained) and no early stopping."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("ballast", torch.arange(BALLAST_FLOATS, dtype=torch.float32))

    def configure_callbacks(self) -> list[pl.Callback]:
        return []


class ReportResume(pl.Callback):
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        spot = next(callback for callback in trainer.callbacks if isinstance(callback, SpotCheckpoint))
        assert BOARD is not None
        BOARD.resumed(spot.resumed_from.step if spot.resumed_from else -1)


def _instrument() -> None:
    snapshot, save = checkpoints.callback.snapshot_to_host, torch.save
    checkpoints.callback.snapshot_to_host = lambda checkpoint: _in_phase("snapshot", lambda: snapshot(checkpoint))
    torch.save = lambda *args, **kwargs: _in_phase("serialize", lambda: save(*args, **kwargs))
    fsspec.register_implementation("laggy", LaggyFileSystem, clobber=True)


def _train(request: dict[str, Any]) -> None:
    global BOARD
    BOARD = PhaseBoard(Path(request["phase_file"]))
    _instrument()
    pl.seed_everything(0)
    torch.set_num_threads(1)
    trainer = pl.Trainer(
        max_epochs=request["epochs"],
        callbacks=[SpotCheckpoint(request["url"], every_steps=1, keep=2), ReportResume()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=0.5,
    )
    trainer.fit(BallastModel(), ToyData())
    state = {name: value for name, value in trainer.lightning_module.state_dict().items() if name != "ballast"}
    torch.save(state, request["output"])


def main() -> None:
    serve(_train)


if __name__ == "__main__":
    main()
