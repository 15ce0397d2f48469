"""Epoch-level training metrics across a mid-epoch resume.

``self.log(name, value, on_epoch=True)`` in ``training_step`` accumulates a running sum (and batch
count, for a mean) over the epoch; Lightning keeps those accumulators in no checkpoint, so after a
mid-epoch resume the epoch's value would cover only the batches trained after the resume. spotrun
saves them with each checkpoint and adds them back in the resumed run.

They are added back right after the metric's first update in the resumed run, when its
accumulator holds exactly this batch's term (``0 + x``, which is exact): ``saved + x`` is then the
very sum the uninterrupted run computed, in the same order, so the epoch value is bit-identical.
A metric first logged later in the epoch is completed at its first update; one never logged again
this epoch is dropped at the epoch's end.
"""

from __future__ import annotations

import torch
from lightning.pytorch.trainer.connectors.logger_connector.result import _ResultCollection, _ResultMetric


def _epoch_accumulators(results: _ResultCollection) -> dict[str, _ResultMetric]:
    return {
        key: metric for key, metric in results.items() if isinstance(metric, _ResultMetric) and metric.is_tensor and metric.meta.on_epoch
    }


def capture(results: _ResultCollection) -> dict[str, dict[str, torch.Tensor]]:
    """The accumulated state of every epoch-level tensor metric, as plain CPU tensors."""
    captured = {}
    for key, metric in _epoch_accumulators(results).items():
        state = {"value": metric.value.detach().cpu().clone()}
        if metric.meta.is_mean_reduction:
            state["cumulated_batch_size"] = metric.cumulated_batch_size.detach().cpu().clone()
        captured[key] = state
    return captured


class PendingAccumulators:
    """Saved accumulators waiting for their metric's first update in the resumed epoch."""

    def __init__(self, saved: dict[str, dict[str, torch.Tensor]] | None) -> None:
        self._saved = dict(saved or {})

    def apply(self, results: _ResultCollection) -> None:
        """Fold in the saved part of every metric updated once since the resume (call after each train batch)."""
        if not self._saved:
            return
        for key, metric in _epoch_accumulators(results).items():
            saved = self._saved.pop(key, None)
            if saved is None:
                continue
            value = saved["value"].to(device=metric.value.device, dtype=metric.value.dtype)
            if metric.meta.is_mean_reduction or metric.meta.is_sum_reduction:
                metric.value = value + metric.value
            elif metric.meta.is_max_reduction:
                metric.value = torch.maximum(value, metric.value)
            elif metric.meta.is_min_reduction:
                metric.value = torch.minimum(value, metric.value)
            if "cumulated_batch_size" in saved:
                metric.cumulated_batch_size = (
                    saved["cumulated_batch_size"].to(metric.cumulated_batch_size.device) + metric.cumulated_batch_size
                )

    def drop(self) -> None:
        """The epoch ended: what was not logged again belongs to no later epoch."""
        self._saved.clear()

    def __bool__(self) -> bool:
        return bool(self._saved)
