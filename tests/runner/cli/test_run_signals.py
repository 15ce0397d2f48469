"""A `spotrun run` process stopped by SIGTERM behaves as Ctrl-C: it says so, exits 128 + 15, and hands its job over at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from cloud.local import LocalProvider
from cloud.provider import InstanceState
from runner.control.controller import CONTROLLER_NAME_ENV, Controller
from runner.control.providers import agent_command, provider_for
from runner.state.store import open_store

REPO = Path(__file__).resolve().parents[3]
TINY_TRAINING = REPO / "tests" / "e2e" / "tiny_training.py"


def test_sigterm_releases_the_lease_says_how_to_resume_and_leaves_the_instance_running(spotrun_home: Path, tmp_path: Path) -> None:
    spec = {
        "name": "sigterm",
        "train": {"command": f"python {TINY_TRAINING} 1000 0.5"},
        "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
        "local": {"preempt_every": 0, "spot_price": 0.45, "on_demand_price": 1.006},
    }
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    output = tmp_path / "controller.log"
    # Named as if on another machine: its lease can then only be handed over by releasing it, not because its pid is gone.
    env = {**os.environ, CONTROLLER_NAME_ENV: "laptop-elsewhere"}
    with open(output, "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runner", "run", str(spec_file)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    store = open_store(spotrun_home)
    try:
        deadline = time.monotonic() + 60
        while not store.intervals("sigterm"):
            assert process.poll() is None and time.monotonic() < deadline, output.read_text()
            time.sleep(0.1)
        assert store.lease("sigterm") is not None

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 128 + signal.SIGTERM, output.read_text()

        said = output.read_text()
        assert "controller stopped (SIGTERM); job sigterm's instance keeps running" in said
        assert "`spotrun resume sigterm`" in said and "`spotrun cancel sigterm`" in said
        assert store.lease("sigterm") is None
        job = store.job("sigterm")
        other = Controller(store, provider_for(job.spec, spotrun_home, store), agent_command=agent_command, owner="service:1:abcdef")
        assert other.cycle("sigterm").lease_owner == "service:1:abcdef"  # at once, not after the lease would have lapsed
        [row] = store.intervals("sigterm")
        assert other.provider.poll([row.instance_id])[row.instance_id].state is InstanceState.RUNNING
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        cleaner = LocalProvider(
            spotrun_home, preempt_every_s=0, notice_s=0, seed=0, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0
        )
        cleaner.terminate([row.instance_id for row in store.intervals("sigterm")])
