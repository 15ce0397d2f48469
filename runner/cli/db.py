"""`spotrun db`: the state database's schema version, and upgrading it (once per team, by whoever upgrades spotrun)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from runner.cli.commands import command_for
from runner.state import schema
from runner.state.database import connect, database_location, shown_url
from runner.state.paths import spotrun_home

db_app = typer.Typer(help="The state database: its schema version and upgrades.", no_args_is_help=True)
command = command_for(db_app)
out = Console()


@command
def upgrade() -> None:
    """Create spotrun's tables, or bring them to this spotrun's schema (one transaction; safe to run twice)."""
    location = database_location(spotrun_home())
    engine = connect(location)
    before = schema.upgrade(engine)
    where = shown_url(engine.url)
    if before.is_current:
        out.print(f"{where}: already at schema revision {before.head}", highlight=False, soft_wrap=True)
    else:
        out.print(f"{where}: upgraded from schema revision {before.current or '(empty)'} to {before.head}", highlight=False, soft_wrap=True)


@command
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False) -> None:
    """Which database this spotrun uses, where that was configured, and whether its schema is current (reads only)."""
    location = database_location(spotrun_home())
    engine = connect(location)
    found = schema.status(engine)
    where = shown_url(engine.url)
    verdict = "current" if found.is_current else "ahead of this spotrun" if found.is_ahead else "needs `spotrun db upgrade`"
    if as_json:
        print(json.dumps({"url": where, "source": location.source, "revision": found.current, "head": found.head, "status": verdict}))
        return
    out.print(
        f"{where} ({location.source}): schema revision {found.current or '(empty)'}, this spotrun's is {found.head}: {verdict}",
        highlight=False,
        soft_wrap=True,
    )
