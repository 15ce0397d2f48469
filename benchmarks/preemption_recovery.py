"""What a preemption costs on the local provider: checkpoint-on-notice latency, restart time, work lost.

Runs the digits job through `spotrun run` three times: uninterrupted, then with spot notices and a
bare kill injected at fixed fractions of training, watching the job's heartbeat like a user would.
Prints the figures and writes them to benchmarks/results/preemption_recovery.json.

    .venv/bin/python benchmarks/preemption_recovery.py
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from runner.instance.protocol import Heartbeat

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "preemption_recovery.json"
EPOCHS, STEPS_PER_EPOCH = 10, 45
PLAN = [(0.25, "notice"), (0.45, "notice"), (0.65, "kill")]  # fraction of training steps, kind of interruption
SPEC = {
    "train": {
        "model": "examples/digits.py:DigitsClassifier",
        "model_args": {"hidden": [2048, 2048], "patience": 100},
        "data": "examples/digits.py:DigitsData",
        "data_args": {"batch_size": 32},
        "trainer": {"max_epochs": EPOCHS, "enable_progress_bar": False, "logger": False, "enable_model_summary": False},
    },
    "checkpoint": {"every_steps": 40, "keep": 3},
    "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
    "local": {"preempt_every": 0, "notice": "5s"},
}


def spotrun(home: Path, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "SPOTRUN_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "runner", *args], cwd=REPO, env=env, text=True, **popen)


def run_job(home: Path, name: str, plan: list[tuple[float, str]]) -> dict[str, Any]:
    """Run one job, injecting ``plan``; returns a timeline of heartbeats and interruptions."""
    from checkpoints.store import CheckpointStore
    from runner.instance.mailbox import Mailbox
    from runner.instance.protocol import HEARTBEAT_NAME, AgentStatus, Heartbeat

    spec_file = home / f"{name}.yaml"
    home.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(yaml.safe_dump({"name": name, **SPEC}))
    started = time.time()
    controller = spotrun(home, "run", str(spec_file), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = CheckpointStore(f"file://{home}/checkpoints/{name}")
    mailbox = Mailbox(store)
    beats: list[Heartbeat] = []
    interruptions: list[dict[str, Any]] = []
    pending = list(plan)
    while controller.poll() is None:
        written = mailbox.read(HEARTBEAT_NAME)
        beat = None if written is None else Heartbeat.from_json(written, where=HEARTBEAT_NAME)
        if beat and (not beats or beat.time != beats[-1].time):
            beats.append(beat)
        progress = beat.progress if beat else None
        if (
            pending
            and beat
            and progress
            and beat.status is AgentStatus.RUNNING
            and progress.step >= pending[0][0] * EPOCHS * STEPS_PER_EPOCH
        ):
            fraction, kind = pending.pop(0)
            committed = store.latest()
            interruptions.append(
                {
                    "kind": kind,
                    "at": time.time(),
                    "attempt": beat.attempt,
                    "step_seen": progress.step,
                    "committed_step": committed.step if committed else 0,
                }
            )
            spotrun(home, "interrupt", name, *(["--no-notice"] if kind == "kill" else []), stdout=subprocess.DEVNULL).wait()
        time.sleep(0.05)
    checkpoints = [info.to_json() for info in store.list()]
    return {
        "wall_s": time.time() - started,
        "returncode": controller.returncode,
        "beats": beats,
        "interruptions": interruptions,
        "checkpoints": checkpoints,
    }


def resumed_step(beats: list[Heartbeat], attempt: int) -> int:
    """The step ``attempt`` resumed from, as its training reported it (0: from scratch)."""
    own = (beat.progress.resumed_from_step for beat in beats if beat.attempt == attempt and beat.progress is not None)
    return next((step for step in own if step is not None), 0)


def analyse(job: dict[str, Any]) -> list[dict[str, Any]]:
    """Per interruption: emergency checkpoint latency, steps lost, time until training moves again."""
    figures = []
    beats: list[Heartbeat] = job["beats"]
    for event in job["interruptions"]:
        attempt = event["attempt"]
        own = [beat.progress for beat in beats if beat.attempt == attempt and beat.progress is not None]
        reached = max([event["step_seen"], *(progress.step for progress in own)])
        resumed = resumed_step(beats, attempt + 1)
        # On a kill the newest heartbeat may be up to a second old: steps_lost is then a lower bound.
        entry = {
            "kind": event["kind"],
            "at_step": event["step_seen"],
            "reached_step": reached,
            "resumed_from_step": resumed,
            "steps_lost": reached - resumed,
        }
        emergency = [
            progress.checkpoint
            for progress in own
            if progress.checkpoint is not None and progress.checkpoint.reason == "emergency" and progress.checkpoint.time >= event["at"]
        ]
        if event["kind"] == "notice" and emergency:
            entry["checkpoint_durable_after_notice_s"] = round(emergency[0].time - event["at"], 3)
        moving = next(
            (beat for beat in beats if beat.attempt == attempt + 1 and beat.progress is not None and beat.progress.step > resumed), None
        )
        if moving is not None:
            entry["interruption_to_training_again_s"] = round(moving.time - event["at"], 2)
        figures.append(entry)
    return figures


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="spotrun-bench-") as directory:
        base = run_job(Path(directory) / "base", "bench-base", [])
        interrupted = run_job(Path(directory) / "int", "bench-int", PLAN)
    per = analyse(interrupted)
    notices = [p["checkpoint_durable_after_notice_s"] for p in per if "checkpoint_durable_after_notice_s" in p]
    restarts = [p["interruption_to_training_again_s"] for p in per if "interruption_to_training_again_s" in p]
    result = {
        "machine": f"{os.cpu_count()} CPU cores, no GPU",
        "job": f"digits MLP 64-2048-2048-10, {EPOCHS} epochs x {STEPS_PER_EPOCH} steps, checkpoint every 40 steps, notice 5 s",
        "uninterrupted_wall_s": round(base["wall_s"], 1),
        "interrupted_wall_s": round(interrupted["wall_s"], 1),
        "overhead_per_interruption_s": round((interrupted["wall_s"] - base["wall_s"]) / len(PLAN), 1),
        "checkpoint_durable_after_notice_s_median": round(statistics.median(notices), 3) if notices else None,
        "steps_lost_on_notice": [p["steps_lost"] for p in per if p["kind"] == "notice"],
        "steps_lost_on_kill": [p["steps_lost"] for p in per if p["kind"] == "kill"],
        "interruption_to_training_again_s_median": round(statistics.median(restarts), 2) if restarts else None,
        "interruptions": per,
        "both_succeeded": base["returncode"] == 0 and interrupted["returncode"] == 0,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
