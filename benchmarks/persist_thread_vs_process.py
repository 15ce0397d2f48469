"""Persist in a background thread or a background process: which slows the training loop less?

The training side is a loop of many small torch ops (the way a GPU training loop spends its CPU
time: Python dispatching kernels, holding the GIL), timed step by step. While it runs, a
checkpoint of ~STATE_MB is persisted again and again through the real ``CheckpointStore.commit``
(serialise to a staging file, sha256, upload to a ``file://`` target, manifest):

- ``thread``: snapshot = ``clone()`` on the training thread, persist in a thread of the same process
  (what ``SpotCheckpoint`` does);
- ``process``: snapshot = copy into tensors in shared memory on the training thread, persist in a
  separate process that was started beforehand (no GIL shared with training).

Reported per mode: median step time while persisting against the baseline without persisting
(slowdown %), the snapshot stall, and persists completed.

    .venv/bin/python benchmarks/persist_thread_vs_process.py [--state-mb 200] [--seconds 15]

Writes benchmarks/results/persist_thread_vs_process.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from checkpoints.store import CheckpointStore

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "persist_thread_vs_process.json"
SMALL_OPS_PER_STEP = 300


def make_state(megabytes: int) -> dict[str, torch.Tensor]:
    tensors = max(1, megabytes // 16)
    return {f"w{index}": torch.randn(4 * 2**20) for index in range(tensors)}  # 16 MB each


def persist(state: dict[str, torch.Tensor], target: str, staging: Path, step: int) -> None:
    local = staging / f"persist-{step}.ckpt"
    torch.save(state, local)
    store = CheckpointStore(target)
    store.commit(local, step=step, epoch=0, reason="bench")
    store.prune(1)
    local.unlink()


def process_persister(requests: Any, done: Any, target: str, staging: str) -> None:
    torch.set_num_threads(1)
    while (request := requests.get()) is not None:
        state, step = request
        persist(state, target, Path(staging), step)
        done.put(step)


class Loop:
    """A GIL-bound training stand-in: many tiny ops per step."""

    def __init__(self) -> None:
        self.weight = torch.randn(32, 32)
        self.x = torch.randn(32, 32)

    def step(self) -> float:
        started = time.perf_counter()
        x = self.x
        for _ in range(SMALL_OPS_PER_STEP):
            x = torch.tanh(x @ self.weight) * 0.5
        return time.perf_counter() - started


def run_baseline(seconds: float) -> list[float]:
    loop, times = Loop(), []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        times.append(loop.step())
    return times


def run_thread(state: dict[str, torch.Tensor], seconds: float, target: str, staging: Path) -> dict[str, Any]:
    loop, times, stalls, persists = Loop(), [], [], 0
    worker: threading.Thread | None = None
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if worker is None or not worker.is_alive():
            persists += worker is not None
            started = time.perf_counter()
            snapshot = {name: tensor.clone() for name, tensor in state.items()}
            stalls.append(time.perf_counter() - started)
            worker = threading.Thread(target=persist, args=(snapshot, target, staging, len(stalls)))
            worker.start()
        times.append(loop.step())
    assert worker is not None
    worker.join()
    return {"step_times": times, "stalls": stalls, "persists": persists + 1}


def run_process(state: dict[str, torch.Tensor], seconds: float, target: str, staging: Path) -> dict[str, Any]:
    context = mp.get_context("spawn")
    requests, done = context.Queue(), context.Queue()
    child = context.Process(target=process_persister, args=(requests, done, target, str(staging)))
    child.start()
    shared = {name: torch.empty_like(tensor).share_memory_() for name, tensor in state.items()}
    requests.put((shared, 0))  # hands the shared tensors over once; later requests reuse the same memory
    done.get()
    loop, times, stalls, persists = Loop(), [], [], 0
    busy = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if busy and not done.empty():
            done.get()
            busy, persists = False, persists + 1
        if not busy:
            started = time.perf_counter()
            for name, tensor in state.items():
                shared[name].copy_(tensor)
            stalls.append(time.perf_counter() - started)
            requests.put((shared, len(stalls)))
            busy = True
        times.append(loop.step())
    if busy:
        done.get()
        persists += 1
    requests.put(None)
    child.join()
    return {"step_times": times, "stalls": stalls, "persists": persists}


def summarise(raw: dict[str, Any], baseline_step: float) -> dict[str, Any]:
    step = statistics.median(raw["step_times"])
    return {
        "median_step_s": round(step, 5),
        "mean_step_s": round(statistics.fmean(raw["step_times"]), 5),
        "slowdown_pct": round(100 * (statistics.fmean(raw["step_times"]) / baseline_step - 1), 1),
        "snapshot_stall_median_s": round(statistics.median(raw["stalls"]), 4),
        "persists": raw["persists"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--state-mb", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    state = make_state(args.state_mb)
    with tempfile.TemporaryDirectory() as scratch:
        staging, target = Path(scratch, "staging"), f"file://{scratch}/target"
        staging.mkdir()
        baseline = run_baseline(args.seconds)
        baseline_mean = statistics.fmean(baseline)
        results: dict[str, Any] = {
            "state_mb": args.state_mb,
            "seconds_per_mode": args.seconds,
            "baseline": {"median_step_s": round(statistics.median(baseline), 5), "mean_step_s": round(baseline_mean, 5)},
            "thread": summarise(run_thread(state, args.seconds, target, staging), baseline_mean),
            "process": summarise(run_process(state, args.seconds, target, staging), baseline_mean),
        }
    print(f"{'mode':<10} {'mean step':>10} {'slowdown':>9} {'snapshot':>9} {'persists':>8}")
    print(f"{'none':<10} {results['baseline']['mean_step_s']:>10.5f}")
    for mode in ("thread", "process"):
        row = results[mode]
        print(
            f"{mode:<10} {row['mean_step_s']:>10.5f} {row['slowdown_pct']:>8.1f}% {row['snapshot_stall_median_s']:>9.4f} {row['persists']:>8}"
        )
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
