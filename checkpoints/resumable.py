"""What Lightning does not save but an exact resume needs: RNG states and the position inside an epoch.

A plain ``DataLoader(shuffle=True)`` draws its permutation from the global torch RNG when the
epoch's iterator is created, so after a resume the order of the rest of the epoch is lost. The
``ResumableSampler`` wraps the loader's sampler: the shuffle becomes a function of (seed, epoch)
(or of the user's own generator, whose state at the start of the epoch is kept), and a resumed
epoch skips the indices that were already consumed. Indices are skipped, not batches loaded, so
skipping costs nothing.

Exactness covers what runs in the training process's global RNGs and map-style datasets whose
``__getitem__`` is deterministic; random augmentation should draw from per-sample seeds.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

import numpy as np
import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler

_SEED_STRIDE = 1_000_003  # distinct, well separated generator seeds per epoch


def capture_rng_states(*, cuda: bool = True) -> dict[str, Any]:
    """Python, numpy, torch (and CUDA) RNG states, in types ``torch.load(weights_only=True)`` accepts.

    ``cuda=False`` leaves out the CUDA states, whose read waits for the device.
    """
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "torch": torch.get_rng_state(),
    }
    if cuda and torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]  # torch leaves it unannotated
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Inverse of ``capture_rng_states``."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = states["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableSampler(Sampler[int]):
    """Wraps a sampler so its order per epoch is reproducible and a resumed epoch starts mid-way."""

    def __init__(self, inner: Iterable[int], seed: int) -> None:
        """``inner`` is what the batch sampler drew from: a ``Sampler``, or any sized iterable a DataLoader accepts."""
        self.inner = inner
        self.seed = seed
        self.epoch = 0
        self._owns_generator = getattr(inner, "generator", False) is None
        self._epoch_start_generator_state: torch.Tensor | None = None
        self._resume: tuple[int, int, torch.Tensor | None] | None = None  # (epoch, skip, generator state)

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at each epoch start; forwarded to samplers that use it (DistributedSampler)."""
        self.epoch = epoch
        if hasattr(self.inner, "set_epoch"):
            self.inner.set_epoch(epoch)

    def resume_at(self, epoch: int, samples_done: int, generator_state: torch.Tensor | None) -> None:
        """Make the next iteration of ``epoch`` skip ``samples_done`` indices, with the epoch's original order."""
        self._resume = (epoch, samples_done, generator_state)

    def __iter__(self) -> Iterator[int]:
        skip = 0
        resume, self._resume = self._resume, None
        generator = getattr(self.inner, "generator", None)
        if self._owns_generator:
            generator = torch.Generator().manual_seed(self.seed * _SEED_STRIDE + self.epoch)
            self.inner.generator = generator  # type: ignore[attr-defined]
        if resume is not None and resume[0] == self.epoch:
            skip = resume[1]
            if generator is not None and resume[2] is not None:
                generator.set_state(resume[2])
        self._epoch_start_generator_state = generator.get_state() if generator is not None else None
        return islice(iter(self.inner), skip, None)

    def state_dict(self) -> dict[str, Any]:
        """The epoch and the generator state at its start: with a sample count, enough to resume the epoch."""
        return {"epoch": self.epoch, "generator_state": self._epoch_start_generator_state}


def make_resumable(loader: DataLoader[object], seed: int) -> ResumableSampler:
    """Install a ``ResumableSampler`` into ``loader`` (idempotent).

    For the loaders ``checkpoints.loaders.plan_for`` plans as ``SAMPLER`` (the standard
    ``BatchSampler``). The DataLoader forbids replacing its sampler after construction, but its
    ``BatchSampler`` reads ``.sampler`` afresh at every epoch, so the wrapper goes there.
    """
    batch_sampler = loader.batch_sampler
    assert isinstance(batch_sampler, BatchSampler)
    if isinstance(batch_sampler.sampler, ResumableSampler):
        return batch_sampler.sampler
    wrapper = ResumableSampler(batch_sampler.sampler, seed)
    batch_sampler.sampler = wrapper
    return wrapper
