"""Model mode: the training process the agent starts for ``train.model`` / ``train.data`` specs.

Run as ``python -m runner.train_worker JOB_JSON ROOT_DIR``. The spotrun callback comes from the
agent's environment exactly as in command mode, so both modes resume through the same code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl

from checkpoints import spotrun_checkpoint
from runner.loading import load_object


def train(job: dict, root_dir: Path) -> None:
    """Build the spec's module, data and Trainer, and fit with the spotrun callback."""
    spec = job["train"]
    pl.seed_everything(spec["seed"], workers=True)
    model_class = load_object(spec["model"], base=pl.LightningModule, field="train.model")
    model = model_class(**spec["model_args"])
    datamodule = None
    if spec.get("data"):
        data_class = load_object(spec["data"], base=pl.LightningDataModule, field="train.data")
        datamodule = data_class(**spec["data_args"])
    trainer_args = {"default_root_dir": str(root_dir), "enable_checkpointing": False, **spec["trainer"]}
    trainer_args["callbacks"] = [*trainer_args.get("callbacks", []), spotrun_checkpoint()]
    trainer = pl.Trainer(**trainer_args)
    trainer.fit(model, datamodule=datamodule)


def main() -> None:
    """Entry point for the agent."""
    job_file, root_dir = sys.argv[1:3]
    train(json.loads(Path(job_file).read_text()), Path(root_dir))


if __name__ == "__main__":
    main()
