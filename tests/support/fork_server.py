"""Fork servers: a worker imports torch and Lightning once, then forks one training run per request.

Interpreter start and imports take seconds; a fork takes milliseconds, so a test can start, stop
and SIGKILL dozens of real training processes within its time budget. The server itself must
never run a torch op (forking a process that has started torch's thread pools is not safe): each
child seeds and trains on its own, as a new attempt on a new instance would.

Protocol, one JSON object per line: the test writes a request (its fields are the worker's
business); the server answers ``{"pid": N}`` once the child runs and ``{"status": S}`` once it is
gone (``S`` as ``os.waitstatus_to_exitcode``: 0 finished, 75 preempted, -9 killed, 1 failed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ForkServer:
    """The test's side: start a worker script, ask it for runs, learn how each ended."""

    def __init__(self, worker: Path, env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(worker)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
            cwd=worker.parent,
            env=env,
        )

    def start(self, **request: Any) -> int:
        """Fork one run for ``request``; its pid."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        return int(self._answer()["pid"])

    def status(self) -> int:
        """Wait for the run started last to end; its exit status."""
        return int(self._answer()["status"])

    def _answer(self) -> dict[str, int]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line, f"the fork server died (exit {self.process.poll()})"
        return json.loads(line)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=30)


def serve(train: Callable[[dict[str, Any]], None]) -> None:
    """The worker's side: fork ``train(request)`` for each request line, one at a time."""
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            sys.stdin.close()
            os._exit(_run(train, request))
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


def _run(train: Callable[[dict[str, Any]], None], request: dict[str, Any]) -> int:
    try:
        train(request)
        return 0
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
