"""The settings that change a run's floating-point results, fixed at its first attempt and kept on every resume.

The intra-op thread count decides how reductions are split, so 1 and 2 threads give different
sums; torch's default follows the cores it sees, which differ between instances (and
``OMP_NUM_THREADS`` between environments). spotrun records the count the first attempt trained
with in every checkpoint and applies it before a resumed attempt does any maths. What it cannot
set (the torch version, the device model, the precision) it compares and warns about: such a
resume trains on correctly, but not bit for bit as the uninterrupted run would.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields
from typing import Any

import lightning.pytorch as pl
import torch


@dataclass(frozen=True)
class Numerics:
    """What the run's numbers depend on besides its code, data and seed."""

    intra_op_threads: int
    deterministic_algorithms: bool
    torch_version: str
    device: str
    precision: str

    @classmethod
    def of_this_process(cls, trainer: pl.Trainer) -> Numerics:
        root = trainer.strategy.root_device
        device = torch.cuda.get_device_name(root) if root.type == "cuda" else root.type
        return cls(
            intra_op_threads=torch.get_num_threads(),
            deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
            torch_version=str(torch.__version__),
            device=device,
            precision=str(trainer.precision),
        )

    def apply_to_this_process(self, log: logging.Logger) -> None:
        """Set what can be set: the thread count and deterministic algorithms, as the first attempt had them."""
        if torch.get_num_threads() != self.intra_op_threads:
            log.info(
                "using %d intra-op threads as the run's first attempt did (this process had %d)",
                self.intra_op_threads,
                torch.get_num_threads(),
            )
            torch.set_num_threads(self.intra_op_threads)
        if torch.are_deterministic_algorithms_enabled() != self.deterministic_algorithms:
            torch.use_deterministic_algorithms(self.deterministic_algorithms)

    def warn_about_differences(self, current: Numerics, log: logging.Logger) -> None:
        """One warning naming every setting this attempt differs in from the first: its results will differ."""
        changed = [
            f"{field.name} {getattr(self, field.name)!r} -> {getattr(current, field.name)!r}"
            for field in fields(self)
            if getattr(self, field.name) != getattr(current, field.name)
        ]
        if changed:
            log.warning("this resume will not be bit-exact: the environment changed since the run's first attempt (%s)", "; ".join(changed))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Numerics:
        return cls(**{field.name: data[field.name] for field in fields(cls)})
