"""Where spotrun keeps its own files on this machine, so every part agrees on one place."""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "SPOTRUN_HOME"


def spotrun_home() -> Path:
    """The absolute spotrun home: ``$SPOTRUN_HOME`` if set, else ``~/.spotrun`` (state store, local checkpoints)."""
    return Path(os.environ.get(HOME_VARIABLE) or "~/.spotrun").expanduser().absolute()


def infra_outputs_file(home: Path) -> Path:
    """Where `spotrun infra up` keeps the Terraform outputs the aws provider launches from."""
    return home / "infra" / "outputs.json"

