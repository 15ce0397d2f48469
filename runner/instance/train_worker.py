"""Model mode: the training process the agent starts for ``train.model`` / ``train.data`` specs.

Run as ``python -m runner.instance.train_worker JOB_JSON ROOT_DIR``. The spotrun callback comes from the
agent's environment exactly as in command mode, so both modes resume through the same code.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy

from checkpoints import spotrun_checkpoint
from checkpoints.environment import CHECKPOINT_URL
from runner.spec.job_spec import JobSpec, ResourcesSpec, from_stored
from runner.spec.loading import load_object

# Under the checkpoint URL, next to the step-* checkpoints (which discovery and retention alone look at).
TRAINER_DIR = "trainer"


def train(job: JobSpec, root_dir: Path) -> None:
    """Build the spec's module, data and Trainer, and fit with the spotrun callback."""
    spec = job.train
    assert spec.model is not None  # model mode: TrainSpec has a model or a command
    pl.seed_everything(spec.seed, workers=True)
    model_class = load_object(spec.model, base=pl.LightningModule, field="train.model")
    model = model_class(**spec.model_args)
    datamodule = None
    if spec.data:
        data_class = load_object(spec.data, base=pl.LightningDataModule, field="train.data")
        datamodule = data_class(**spec.data_args)
    trainer_args: dict[str, Any] = {
        "default_root_dir": durable_root_dir(os.environ.get(CHECKPOINT_URL), root_dir),
        "enable_checkpointing": False,
        **spec.trainer,
        **_distributed(job.resources),
    }
    trainer_args["callbacks"] = [*trainer_args.get("callbacks", []), spotrun_checkpoint()]
    trainer = pl.Trainer(**trainer_args)
    trainer.fit(model, datamodule=datamodule)


def durable_root_dir(checkpoint_url: str | None, scratch: Path) -> str:
    """``default_root_dir`` shared by every attempt: ``<checkpoint URL>/trainer`` (a plain path for ``file://``).

    A per-attempt scratch folder would lose the logs with the instance and split them by attempt.
    """
    if not checkpoint_url:
        return str(scratch)
    url = checkpoint_url.rstrip("/")
    if url.startswith("file://"):
        return f"{url.removeprefix('file://')}/{TRAINER_DIR}"
    return f"{url}/{TRAINER_DIR}"


def _distributed(resources: ResourcesSpec) -> dict[str, Any]:
    """Trainer arguments for a gang: DDP over every node's devices, with a collective timeout.

    The timeout is what ends training on the survivors when a node vanishes without a notice:
    their next collective fails after it instead of waiting for a peer that will never answer.
    Lightning reads MASTER_ADDR, MASTER_PORT and NODE_RANK from the environment the agent sets.
    """
    nodes, devices = resources.nodes, resources.devices
    if nodes == 1 and devices == 1:
        return {}
    timeout = timedelta(seconds=resources.collective_timeout_s)
    return {"num_nodes": nodes, "devices": devices, "strategy": DDPStrategy(timeout=timeout)}


def main() -> None:
    """Entry point for the agent."""
    job_file, root_dir = sys.argv[1:3]
    train(from_stored(json.loads(Path(job_file).read_text()), where=job_file), Path(root_dir))


if __name__ == "__main__":
    main()
