"""How every ``spotrun`` command reports a known error: one line on stderr and the error's exit code.

``SPOTRUN_DEBUG=1`` shows the traceback instead. Messages are printed without rich markup: they
quote user input and tool output (Terraform's ``[id=...]``), whose brackets are not markup.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from checkpoints.errors import CheckpointError
from cloud.errors import ProviderError
from runner.errors import SpotrunError

KNOWN_ERRORS = (SpotrunError, ProviderError, CheckpointError)
INTERRUPTED_EXIT_CODE = 130
_Command = TypeVar("_Command", bound=Callable[..., Any])


def command_for(app: typer.Typer, *, on_interrupt: str | None = None) -> Callable[[_Command], _Command]:
    """A decorator registering commands on ``app``; with ``on_interrupt``, Ctrl-C prints it and exits 130."""
    err = Console(stderr=True)

    def command(function: _Command) -> _Command:
        @functools.wraps(function)
        def run_command(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except KNOWN_ERRORS as error:
                if os.environ.get("SPOTRUN_DEBUG"):
                    raise
                err.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(getattr(error, "exit_code", 1)) from None
            except KeyboardInterrupt:
                if on_interrupt is None:
                    raise
                err.print(on_interrupt, markup=False, highlight=False, soft_wrap=True)
                raise typer.Exit(INTERRUPTED_EXIT_CODE) from None

        app.command()(run_command)
        return function

    return command
