"""The outputs `spotrun infra up` stored: the one reader, for the aws provider and the infra commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runner.errors import SpecError
from runner.state.paths import infra_outputs_file


def stored_infra_outputs(home: Path) -> dict[str, Any]:
    """The stored Terraform outputs; a SpecError saying what to run when they are missing or unreadable."""
    path = infra_outputs_file(home)
    try:
        outputs = json.loads(path.read_text())
    except FileNotFoundError:
        raise SpecError(f"no infrastructure outputs at {path}; run `spotrun infra up` first") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"{path} is not JSON ({error}); run `spotrun infra up` again to rewrite it") from None
    if not isinstance(outputs, dict):
        raise SpecError(f"{path} does not hold the outputs of `spotrun infra up`; run it again to rewrite it")
    return outputs
