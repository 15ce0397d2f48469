"""A stand-in for the spotrun agent: watches the metadata service and writes what it saw, one JSON line per event.

Usage: ``python fake_agent.py OUT [--exit-after-s S] [--exit-code N] [--exit-on-notice N] [--grandchild] [--ignore-term]``.
Without ``--exit-after-s`` or ``--exit-on-notice`` it runs until it is killed.
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
    args = parser.parse_args()

    def record(event: str, **fields: object) -> None:
        with open(args.out, "a") as handle:
            handle.write(json.dumps({"event": event, "seen_at": time.time(), **fields}) + "\n")

    if args.ignore_term:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    client = MetadataClient(os.environ["SPOTRUN_IMDS_ENDPOINT"])
    record(
        "started", pid=os.getpid(), pgid=os.getpgid(0), start_ticks=process_start_ticks(os.getpid()),
        instance_id=os.environ.get("SPOTRUN_INSTANCE_ID"), metadata_instance_id=client.instance_id(),
        cwd=os.getcwd(), marker=os.environ.get("FAKE_AGENT_MARKER"),
    )
    if args.grandchild:
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        record("grandchild", pid=sleeper.pid, start_ticks=process_start_ticks(sleeper.pid))
    started = time.monotonic()
    rebalance_seen = False
    while True:
        if not rebalance_seen and (rebalance := client.rebalance()) is not None:
            rebalance_seen = True
            record("rebalance", notice_time=rebalance.timestamp())
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
