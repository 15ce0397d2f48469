"""Show the attempts' logs that agents upload next to the checkpoints, in order, boundaries marked."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from rich.console import Console

from checkpoints.store import CheckpointStore

_ATTEMPT_LOG = re.compile(r"attempt-(\d+)(?:-node-(\d+))?\.log$")


def attempt_logs(store: CheckpointStore, node: int = 0) -> dict[int, str]:
    """Attempt number -> path of the log ``node`` uploaded for it (rank 0's by default)."""
    try:
        paths = store.fs.glob(store.spotrun_path("logs/attempt-*.log"))
    except FileNotFoundError:
        return {}
    found = {}
    for path in paths:
        match = _ATTEMPT_LOG.search(path)
        if match and int(match.group(2) or 0) == node:
            found[int(match.group(1))] = path
    return found


def print_logs(
    store: CheckpointStore,
    console: Console,
    *,
    only_attempt: int | None = None,
    node: int = 0,
    keep_following: Callable[[], bool] | None = None,
    interval_s: float = 1.0,
) -> None:
    """Print every attempt's log; with ``keep_following``, keep printing what is new while it returns True."""
    printed: dict[int, int] = {}  # attempt -> bytes already shown
    while True:
        for number, path in sorted(attempt_logs(store, node).items()):
            if only_attempt is not None and number != only_attempt:
                continue
            content = store.fs.cat_file(path)
            if number not in printed:
                console.rule(f"attempt {number}" + (f", node {node}" if node else ""))
                printed[number] = 0
            if len(content) > printed[number]:
                console.out(content[printed[number] :].decode(errors="replace"), end="", highlight=False)
                printed[number] = len(content)
        if keep_following is None:
            return
        still_running = keep_following()
        if not still_running:
            keep_following = None  # one last pass picks up the final upload
            continue
        time.sleep(interval_s)
