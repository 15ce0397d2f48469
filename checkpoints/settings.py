"""Build a ``SpotCheckpoint`` from the environment a spotrun agent sets for the training process."""

from __future__ import annotations

import os
from typing import Any

from checkpoints import environment
from checkpoints.callback import SpotCheckpoint
from checkpoints.errors import CheckpointError


def callback_from_environment(**overrides: Any) -> SpotCheckpoint:
    """A ``SpotCheckpoint`` from ``SPOTRUN_*`` variables; a clear error when run outside spotrun without a url."""
    settings: dict[str, Any] = {
        "url": os.environ.get(environment.CHECKPOINT_URL),
        "every": os.environ.get(environment.CHECKPOINT_EVERY),
        "every_steps": _int_or_none(environment.CHECKPOINT_EVERY_STEPS),
        "keep": _int_or_none(environment.CHECKPOINT_KEEP),
        "keep_every": _int_or_none(environment.CHECKPOINT_KEEP_EVERY),
        "control_file": os.environ.get(environment.CONTROL_FILE),
        "progress_file": os.environ.get(environment.PROGRESS_FILE),
    }
    settings.update(overrides)
    if not settings["url"]:
        raise CheckpointError(
            f"spotrun_checkpoint() needs a checkpoint URL: run the script with `spotrun run` "
            f"(which sets {environment.CHECKPOINT_URL}), or pass url='s3://bucket/prefix'"
        )
    if settings["every_steps"] is not None:
        settings["every"] = None
    return SpotCheckpoint(settings.pop("url"), **{key: value for key, value in settings.items() if value is not None})


def _int_or_none(variable: str) -> int | None:
    value = os.environ.get(variable)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError as error:
        raise CheckpointError(f"{variable} must be an integer, got {value!r}") from error
