"""The agent's requests to the training process, and the training process's progress reports.

Both are small JSON files replaced atomically, so a reader never sees half of one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

CHECKPOINT = "checkpoint"  # save now and keep training (rebalance recommendation)
STOP = "stop"  # save now, then exit with PREEMPTED_EXIT_CODE (interruption notice)


def write_json_atomically(path: Path, payload: dict[str, Any]) -> None:
    """Replace ``path`` with ``payload`` in one rename."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(payload))
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path``, or None if it does not exist (yet); ValueError when it holds something else."""
    try:
        value: object = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


class ControlWriter:
    """Agent side: each request gets a higher sequence number so none is mistaken for an old one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seq = 0

    def request(self, action: str, *, deadline: float | None = None, reason: str = "") -> None:
        """Ask the training process to ``action`` at its next step boundary."""
        self._seq += 1
        write_json_atomically(self.path, {"seq": self._seq, "action": action, "deadline": deadline, "reason": reason, "time": time.time()})


class ControlReader:
    """Training side: cheap to call every step (one stat unless the file changed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen_seq = 0
        self._seen_mtime_ns = 0

    def poll(self) -> dict[str, Any] | None:
        """The newest request not yet returned, or None."""
        try:
            mtime_ns = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        if mtime_ns == self._seen_mtime_ns:
            return None
        self._seen_mtime_ns = mtime_ns
        request = read_json(self.path)
        if request is None or int(request.get("seq", 0)) <= self._seen_seq:
            return None
        self._seen_seq = int(request["seq"])
        return request
