"""Snapshot on the training thread, persist in the background.

The training loop pays only for copying its state to host memory (the snapshot). Serialising,
hashing, uploading, committing and pruning happen in one background thread, one checkpoint at a
time: a save that falls due while another is still persisting is deferred by the caller rather
than queued, and the snapshot is let go as soon as it is serialised to the staging file, so extra
host memory stays at about one copy of the state plus the upload's bounded part buffers.

A thread, not a process: serialisation, hashing and socket writes release the GIL for large
buffers, and a process would first need the snapshot copied into shared memory, a second copy on
the training side (``benchmarks/persist_thread_vs_process.py`` measures both).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from fsspec.callbacks import Callback
from lightning_utilities.core.apply_func import apply_to_collection

from checkpoints.store import CheckpointInfo, CheckpointStore

log = logging.getLogger(__name__)

# An emergency save lets the persist in flight finish when that costs less than this fraction of
# a whole persist, and supersedes (abandons) it otherwise.
FINISH_IF_REMAINING_BELOW = 0.25


class Superseded(Exception):
    """A persist abandoned for a newer checkpoint; nothing of it was committed."""


def snapshot_to_host(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``checkpoint`` whose tensors are private CPU copies: training may change the originals at once.

    CUDA tensors are copied into pinned memory without blocking and synchronised once at the end.
    """
    copied_from_cuda = False

    def to_host(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal copied_from_cuda
        if tensor.is_cuda:
            copied_from_cuda = True
            host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host.copy_(tensor.detach(), non_blocking=True)
            return host
        return tensor.detach().clone()

    snapshot: dict[str, Any] = apply_to_collection(checkpoint, torch.Tensor, to_host)
    if copied_from_cuda:
        torch.cuda.synchronize()
    return snapshot


@dataclass(frozen=True)
class SaveRequest:
    """What to commit for one snapshot."""

    snapshot: dict[str, Any]
    step: int
    epoch: int
    reason: str
    final: bool = False
    metrics: dict[str, float] = field(default_factory=dict)


class _CancellableUpload(Callback):  # type: ignore[misc]  # fsspec has no type information: Callback is Any to mypy
    """Ends an upload at its next part once the persist is superseded (fsspec reports every part here)."""

    def __init__(self, cancelled: threading.Event) -> None:
        super().__init__()
        self._cancelled = cancelled

    def call(self, *args: Any, **kwargs: Any) -> None:
        if self._cancelled.is_set():
            raise Superseded("superseded by a newer checkpoint during upload")


class BackgroundPersister:
    """Writes one snapshot at a time in a background thread; ``close()`` is safe to call twice."""

    def __init__(
        self,
        store: CheckpointStore,
        staging: Path,
        *,
        keep: int,
        keep_every: int | None = None,
        protect: Callable[[], frozenset[str]],
        spotrun_version: str,
    ) -> None:
        self.store = store
        self.staging = staging
        self.keep = keep
        self.keep_every = keep_every
        self.protect = protect
        self.spotrun_version = spotrun_version
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spotrun-persist")
        self._in_flight: Future[CheckpointInfo] | None = None
        self._in_flight_started = 0.0
        self._in_flight_committed = False  # committed, only retention left: finishing is all there is to do
        self._cancelled = threading.Event()
        self.last_persist_s: float | None = None  # how long the last complete persist took

    @property
    def busy(self) -> bool:
        """A persist is still running."""
        return self._in_flight is not None and not self._in_flight.done()

    def submit(self, request: SaveRequest) -> Future[CheckpointInfo]:
        """Start persisting ``request``; the caller makes sure nothing else is in flight."""
        if self._executor is None:
            raise RuntimeError("BackgroundPersister is closed")
        if self.busy:
            raise RuntimeError("a checkpoint is already being persisted; wait for it or defer this one")
        self._cancelled.clear()
        self._in_flight_committed = False
        self._in_flight_started = time.monotonic()
        self._in_flight = self._executor.submit(self._persist, request)
        return self._in_flight

    def take_finished(self) -> Future[CheckpointInfo] | None:
        """The persist that finished since the last call (to read its result or error), or None."""
        if self._in_flight is None or not self._in_flight.done():
            return None
        finished, self._in_flight = self._in_flight, None
        return finished

    def wait_if_busy(self) -> Future[CheckpointInfo] | None:
        """Block until the persist in flight (if any) is over; returns it, done."""
        if self._in_flight is None:
            return None
        self._in_flight.exception()  # waits; the outcome stays in the future for the caller
        return self.take_finished()

    def finish_or_supersede(self, deadline: float | None = None) -> Future[CheckpointInfo] | None:
        """Make way for an emergency save: let the persist in flight finish, or abandon it, whichever is faster.

        Finishing wins when it is nearly done (or already committed), when there is no measure of a
        whole persist yet, or when a fresh persist would miss ``deadline`` (wall clock) and the one in
        flight would not: an older durable checkpoint beats none. Otherwise the upload stops at
        its next part and the newer state goes up in its place. Returns the persist, done.
        """
        if not self.busy:
            return self.take_finished()
        whole = self.last_persist_s
        if self._in_flight_committed or whole is None:
            return self.wait_if_busy()
        remaining = max(whole - (time.monotonic() - self._in_flight_started), 0.0)
        only_finishing_meets_deadline = deadline is not None and time.time() + whole > deadline >= time.time() + remaining
        if remaining > FINISH_IF_REMAINING_BELOW * whole and not only_finishing_meets_deadline:
            log.info("superseding the checkpoint upload in flight (about %.1f s left of %.1f s)", remaining, whole)
            self._cancelled.set()
        return self.wait_if_busy()

    def _persist(self, request: SaveRequest) -> CheckpointInfo:
        local = self.staging / f"persist-{request.step}.ckpt"
        try:
            torch.save(request.snapshot, local)
            request.snapshot.clear()  # the staging file has it now; free the host copy before the upload
            if self._cancelled.is_set():
                raise Superseded("superseded by a newer checkpoint before upload")
            info = self.store.commit(
                local,
                step=request.step,
                epoch=request.epoch,
                reason=request.reason,
                final=request.final,
                metrics=request.metrics,
                spotrun_version=self.spotrun_version,
                upload_callback=_CancellableUpload(self._cancelled),
            )
            self._in_flight_committed = True
            deleted = self.store.prune(self.keep, keep_every=self.keep_every, protect=self.protect())
            if deleted:
                log.debug("retention deleted %s", deleted)
            self.last_persist_s = time.monotonic() - self._in_flight_started
            return info
        finally:
            local.unlink(missing_ok=True)

    def close(self) -> None:
        """Finish what is in flight, then stop the thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
