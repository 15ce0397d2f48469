"""Where spotrun keeps its own files on this machine, so every part agrees on one place."""

from __future__ import annotations

import os
from pathlib import Path

HOME_VARIABLE = "SPOTRUN_HOME"


def spotrun_home() -> Path:
    """The absolute spotrun home: ``$SPOTRUN_HOME`` if set, else ``~/.spotrun`` (state store, local checkpoints)."""
    return Path(os.environ.get(HOME_VARIABLE) or "~/.spotrun").expanduser().absolute()
