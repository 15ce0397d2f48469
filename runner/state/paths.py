"""Where spotrun keeps its own files on this machine, so every part agrees on one place."""

from __future__ import annotations

import os
from pathlib import Path

from runner.errors import SpecError

HOME_VARIABLE = "SPOTRUN_HOME"


def spotrun_home() -> Path:
    """The absolute spotrun home: ``$SPOTRUN_HOME`` if set, else ``~/.spotrun`` (state store, local checkpoints)."""
    configured = os.environ.get(HOME_VARIABLE) or "~/.spotrun"
    try:
        return Path(configured).expanduser().absolute()
    except RuntimeError as error:  # ~ with no home directory, or ~user of no such user
        raise SpecError(f"{HOME_VARIABLE}: cannot expand {configured!r} ({error}); set {HOME_VARIABLE} to an absolute folder") from None


def infra_outputs_file(home: Path) -> Path:
    """Where `spotrun infra up` keeps the Terraform outputs the aws provider launches from."""
    return home / "infra" / "outputs.json"
