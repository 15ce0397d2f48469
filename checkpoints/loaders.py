"""How each of a run's DataLoaders resumes: which loaders can resume mid-epoch exactly, and by what means.

Three kinds of train loader, decided once per loader:

- ``SAMPLER``: a map-style dataset behind the standard ``BatchSampler``. spotrun's
  ``ResumableSampler`` makes the order a function of (seed, epoch) and skips what was consumed.
- ``STATEFUL``: the loader implements ``state_dict()`` / ``load_state_dict()`` (torchdata's
  ``StatefulDataLoader``, LitData's ``StreamingDataLoader``), or a plain DataLoader reads, in this
  process (``num_workers=0``), an IterableDataset that does (a user's stream with state). It resumes through its own state, taken *before the fetch of the batch the save
  precedes*: Lightning prefetches, so ``loader.state_dict()`` at save time is one or two batches
  ahead and a resume from it would skip them. The ``FetchRecorder`` keeps the state after each
  of the last few fetches (the state before fetch k is the state after fetch k-1).
- ``INEXACT``: anything else (an IterableDataset without state, a custom batch sampler). A resumed
  epoch skips the batches already trained by drawing and dropping them, so the run trains the
  same number of steps, but what those batches hold is only the same if the stream is
  deterministic: resume is at the step, not exact, and says so.

Every train DataLoader also gets a ``torch.Generator`` of its own when it has none. A DataLoader
draws its workers' base seed from the *global* torch RNG whenever an iterator is created, at
moments a resume moves (a resumed epoch makes its iterator at the resume, not at the epoch's
start); with a generator of its own the workers' seeds are a function of (job seed, loader,
epoch) and the global RNG is left alone. (Evaluation loaders may draw what they like: the callback
puts the training RNG back after every validation.)
"""

from __future__ import annotations

import copy
import enum
import inspect
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lightning.fabric.utilities.types import _Stateful
from torch.utils.data import BatchSampler, DataLoader, IterableDataset

_SEED_STRIDE = 1_000_003
_STATE_HISTORY = 8  # fetches remembered: more than any prefetch depth Lightning uses


class LoaderKind(enum.Enum):
    """How a train loader resumes mid-epoch."""

    SAMPLER = "sampler"
    STATEFUL = "stateful"
    INEXACT = "inexact"


@dataclass(frozen=True)
class LoaderPlan:
    """A train loader's kind; what holds its state (``STATEFUL``); why it cannot resume exactly (``INEXACT``)."""

    kind: LoaderKind
    reason: str | None = None
    state_source: Any = None


def plan_for(loader: Any) -> LoaderPlan:
    """Which way ``loader`` resumes; the reason names the loader's classes when it cannot resume exactly."""
    if isinstance(loader, _Stateful):
        return LoaderPlan(LoaderKind.STATEFUL, state_source=loader)
    if not isinstance(loader, DataLoader):
        return LoaderPlan(LoaderKind.INEXACT, f"train loader {type(loader).__name__} is not a DataLoader and has no state_dict()")
    if isinstance(loader.dataset, IterableDataset) and isinstance(loader.dataset, _Stateful):
        if loader.num_workers == 0:
            return LoaderPlan(LoaderKind.STATEFUL, state_source=loader.dataset)
        return LoaderPlan(
            LoaderKind.INEXACT,
            f"the train IterableDataset {type(loader.dataset).__name__} has state_dict(), but with num_workers="
            f"{loader.num_workers} its state lives in the worker processes; use torchdata's StatefulDataLoader, or num_workers=0",
        )
    if isinstance(loader.dataset, IterableDataset):
        return LoaderPlan(
            LoaderKind.INEXACT,
            f"the train data is an IterableDataset ({type(loader.dataset).__name__}) without state_dict()/load_state_dict(), "
            "so where its stream stood cannot be saved",
        )
    if type(getattr(loader, "batch_sampler", None)) is not BatchSampler:
        return LoaderPlan(
            LoaderKind.INEXACT,
            f"the train DataLoader uses a custom batch_sampler ({type(loader.batch_sampler).__name__}) without state_dict()",
        )
    return LoaderPlan(LoaderKind.SAMPLER)


def seed_generators(loaders: list[Any], job_seed: int, epoch: int) -> None:
    """Give each train DataLoader that has no generator one seeded from (job seed, loader index, epoch)."""
    for index, loader in enumerate(loaders):
        if not isinstance(loader, DataLoader) or isinstance(loader, _Stateful):
            continue
        if getattr(loader, "_spotrun_owns_generator", loader.generator is None):
            loader.generator = torch.Generator().manual_seed((job_seed * _SEED_STRIDE + index) * _SEED_STRIDE + epoch)
            loader._spotrun_owns_generator = True


class FetchRecorder:
    """Wraps a loader's iterators: remembers the loader's state before each fetch, or drops the first ``skip`` batches.

    The loader's class is swapped for a subclass whose ``__iter__`` returns the wrapped iterator,
    because Python looks ``__iter__`` up on the type; the loader is otherwise untouched.
    """

    def __init__(self, loader: Any, *, state_source: Any = None) -> None:
        self.loader = loader
        self.source = state_source  # what has state_dict()/load_state_dict(): the loader or its dataset; None: no state
        self.record = state_source is not None
        # A state source whose __iter__ is a generator function (LitData's loader, most streams) sets up
        # its epoch only at the first fetch, so what it reports before that describes the previous epoch.
        self._state_at_iter = self.record and not inspect.isgeneratorfunction(type(state_source).__iter__)
        self.fetched = 0
        self.consumed = 0  # batches of the current iterator that training has started
        self.states: deque[tuple[int, dict[str, Any]]] = deque(maxlen=_STATE_HISTORY)
        self._skip = 0
        self._current: _RecordingIterator | None = None
        cls = type(loader)
        if not getattr(cls, "_spotrun_recorded", False):
            loader.__class__ = type(cls.__name__, (cls,), {"__iter__": _recorded_iter, "_spotrun_recorded": True})
        loader._spotrun_recorder = self

    def skip_next_epoch_start(self, batches: int) -> None:
        """The next iterator drops its first ``batches`` batches (a resumed epoch of a loader without state)."""
        self._skip = batches

    def batch_started(self) -> None:
        """Training took the next batch of this loader (called at every train batch start)."""
        self.consumed += 1

    def state_known(self) -> bool:
        """Whether the state before the batch training is about to run is known (not, for some loaders, at an epoch's first)."""
        return any(fetched == self.consumed - 1 for fetched, _ in self.states)

    def state_for_save(self, *, training_ended: bool) -> dict[str, Any]:
        """The loader's state as of the batch training is about to run: before that batch was fetched.

        Once training has ended there is no such batch, and the loader's state now is the one to keep.
        """
        if training_ended:
            state: dict[str, Any] = self.source.state_dict()
            return state
        for fetched, state in self.states:
            if fetched == self.consumed - 1:
                return state
        raise RuntimeError(
            f"the state of {type(self.loader).__name__} before batch {self.consumed} of this epoch was not recorded "
            f"(fetched {self.fetched}); the data fetcher runs further ahead than {_STATE_HISTORY} batches"
        )

    def finish_epoch(self) -> None:
        """Let the epoch's iterator run out, as training ends the epoch.

        Lightning stops taking batches once it has had the epoch's length. A loader that finishes an
        epoch's bookkeeping only when its iterator runs out (LitData's clears its "resuming" flag
        there) would carry a resumed epoch's state into the next one, which would then be empty.
        One more ``next`` costs nothing at the end of an epoch.
        """
        if self._current is not None and not self._current.exhausted:
            next(self._current, None)

    def wrap(self, iterator: Iterator[Any]) -> Iterator[Any]:
        self.fetched = self.consumed = 0
        self.states.clear()
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            next(iterator, None)
        if self.record and self._state_at_iter:
            self.states.append((0, _copy_of_state(self.source)))
        self._current = _RecordingIterator(self, iterator)
        return self._current


class _RecordingIterator:
    def __init__(self, recorder: FetchRecorder, iterator: Iterator[Any]) -> None:
        self.recorder, self.iterator = recorder, iterator
        self.exhausted = False

    def __iter__(self) -> _RecordingIterator:
        return self

    def __next__(self) -> Any:
        recorder = self.recorder
        try:
            batch = next(self.iterator)
        except StopIteration:
            self.exhausted = True
            raise
        recorder.fetched += 1
        if recorder.record:
            recorder.states.append((recorder.fetched, _copy_of_state(recorder.source)))
        return batch

    def __len__(self) -> int:
        return len(self.iterator)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.iterator, name)


def _copy_of_state(source: Any) -> dict[str, Any]:
    """A private copy: some loaders hand out, and later update, the same nested dicts (LitData's dataset state)."""
    return copy.deepcopy(source.state_dict())


def _recorded_iter(self: Any) -> Iterator[Any]:
    iterator = super(type(self), self).__iter__()
    recorder: FetchRecorder = self._spotrun_recorder
    return recorder.wrap(iterator)
