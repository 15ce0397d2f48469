"""A stand-in for the spotrun agent: watches the metadata service and writes what it saw, one JSON line per event.

Usage: ``python fake_agent.py OUT [--exit-after-s S] [--exit-code N] [--exit-on-notice N] [--grandchild] [--ignore-term]
[--training-starts-after-s S]``. Without ``--exit-after-s`` or ``--exit-on-notice`` it runs until it is killed.
With ``--training-starts-after-s`` it reports its "first training step" S seconds after it started, as the
real agent does: the time, in the file the host names in ``SPOTRUN_TRAINING_STARTED_FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cloud.imds import MetadataClient
from cloud.local_files import write_json_atomic
from cloud.local_host import TRAINING_STARTED_FILE_ENV
from cloud.processes import process_start_ticks

POLL_S = 0.02


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--exit-after-s", type=float)
    parser.add_argument("--exit-code", type=int, default=0)
    parser.add_argument("--exit-on-notice", type=int, help="exit with this code as soon as the notice is seen")
    parser.add_argument("--grandchild", action="store_true", help="start a long sleeper in this process group")
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--training-starts-after-s", type=float, help="report the first training step this long after starting")
    args = parser.parse_args()

    def record(event: str, **fields: object) -> None:
        with open(args.out, "a") as handle:
            handle.write(json.dumps({"event": event, "seen_at": time.time(), **fields}) + "\n")

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    client = MetadataClient(os.environ["SPOTRUN_IMDS_ENDPOINT"])
    record(
        "started",
        pid=os.getpid(),
        pgid=os.getpgid(0),
        start_ticks=process_start_ticks(os.getpid()),
        instance_id=os.environ.get("SPOTRUN_INSTANCE_ID"),
        metadata_instance_id=client.instance_id(),
        cwd=os.getcwd(),
        marker=os.environ.get("FAKE_AGENT_MARKER"),
        omp_threads=os.environ.get("OMP_NUM_THREADS"),
    )
    if args.grandchild:
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        record("grandchild", pid=sleeper.pid, start_ticks=process_start_ticks(sleeper.pid))
    started = time.monotonic()
    rebalance_seen = False
    training_reported = False
    while True:
        if not rebalance_seen and (rebalance := client.rebalance()) is not None:
            rebalance_seen = True
            record("rebalance", notice_time=rebalance.timestamp())
        if (
            args.training_starts_after_s is not None
            and not training_reported
            and time.monotonic() - started >= args.training_starts_after_s
        ):
            training_reported = True
            now = time.time()
            write_json_atomic(Path(os.environ[TRAINING_STARTED_FILE_ENV]), {"time": now})
            record("training-started", time=now)
        if (notice := client.interruption()) is not None:
            record("notice", time=notice.timestamp())
            if args.exit_on_notice is not None:
                return args.exit_on_notice
            break
        if args.exit_after_s is not None and time.monotonic() - started >= args.exit_after_s:
            return args.exit_code
        time.sleep(POLL_S)
    while True:  # noticed: wait to be killed, as an agent with nothing left to save would
        time.sleep(60)


if __name__ == "__main__":
    sys.exit(main())
