"""A stand-in training script for command mode, without torch: it reports steps through the agent's progress file, then finishes.

Usage: ``python tiny_training.py STEPS SECONDS_PER_STEP``. Fifty of these start in seconds on two
cores, where fifty Lightning processes would not; the controllers, agents and instances around
them are the real ones.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path


def report(path: Path, **progress: object) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps({**progress, "time": time.time()}))
    os.replace(temporary, path)


def main() -> None:
    steps, seconds_per_step = int(sys.argv[1]), float(sys.argv[2])
    progress = Path(os.environ["SPOTRUN_PROGRESS_FILE"])
    for step in range(1, steps + 1):
        time.sleep(seconds_per_step)
        report(progress, status="training", step=step, epoch=0, total_steps=steps)
    report(progress, status="finished", step=steps, epoch=0, total_steps=steps)


if __name__ == "__main__":
    main()
