"""Command mode: your own training script, with spotrun's checkpoint callback in its Trainer.

`spotrun run examples/custom_script/job.yaml` (from the repository root) runs this file with
SPOTRUN_* environment variables; ``spotrun_checkpoint()`` reads them, resumes from the newest
committed checkpoint by itself, and saves before the instance is taken away.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import lightning.pytorch as pl

from checkpoints import spotrun_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/, where digits.py lives
from digits import DigitsClassifier, DigitsData


def main(argv: list[str] | None = None) -> None:
    """Train the digits MLP with the options below, checkpointing where spotrun says."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-epochs", type=int, default=40)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hidden", type=int, nargs="+", default=[512, 512], help="hidden layer widths")
    parser.add_argument("--patience", type=int, default=15, help="early stopping patience, in epochs")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    pl.seed_everything(args.seed)  # also the seed of spotrun's resumable data order
    trainer = pl.Trainer(
        max_epochs=args.max_epochs,
        callbacks=[spotrun_checkpoint()],
        enable_progress_bar=False,
        enable_checkpointing=False,
        logger=False,
    )
    model = DigitsClassifier(lr=args.lr, hidden=args.hidden, patience=args.patience)
    trainer.fit(model, datamodule=DigitsData(batch_size=args.batch_size))


if __name__ == "__main__":
    main()
