"""What checkpointing costs the training loop: spotrun's SpotCheckpoint vs Lightning's ModelCheckpoint.

One run, side by side on the same target, for each state size and target:

- ``none``: no checkpointing (the baseline; also measures the floor, a bare in-memory clone of the state)
- ``spotrun``: ``SpotCheckpoint(url, every_steps=N, keep=...)``
- ``lightning``: ``ModelCheckpoint(dirpath=url, every_n_train_steps=N, save_top_k=0, save_last=True)``
  (synchronous; ``save_top_k=0`` so each trigger writes one file, the same bytes as spotrun)
- ``lightning_async``: the same with ``Trainer(plugins=[AsyncCheckpointIO()])``

Models: an MLP on random in-memory tensors whose parameters + Adam states are ~100 MB or ~1 GB.
Targets: ``file://`` (a temp dir) and ``s3://`` on a moto server this script starts on 127.0.0.1.
Each configuration runs in its own subprocess, so peak RSS (VmHWM) does not mix.

Stall per checkpoint: a timing callback takes ``time.perf_counter()`` at ``on_train_batch_start`` and
``on_train_batch_end``; it sits after SpotCheckpoint (which saves at batch start) and before
ModelCheckpoint (which Lightning always runs last, saving at batch end), so a save always falls in the
gap between one batch's end and the next batch's start. Stall = that gap minus the median gap of steps
without a checkpoint. Background work that slows later steps does not show as stall, but it does show
in throughput: "extra s/ckpt" = (loop time - steps x baseline step time) / checkpoints, from which the
overhead at one checkpoint every 30 s is projected (extra s/ckpt / 30 s).

    .venv/bin/python benchmarks/checkpoint_overhead.py                      # everything (~10 min on 2 cores)
    .venv/bin/python benchmarks/checkpoint_overhead.py --targets file --sizes 100mb   # quick (~1 min)

Prints a table and writes benchmarks/results/checkpoint_overhead.json (or --output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "checkpoint_overhead.json"
CONFIGS = ["none", "spotrun", "lightning", "lightning_async"]
WARMUP = 3  # steps left out of every figure (the first steps are slow)
BUCKET = "spotrun-bench"
# width, depth (Linear(width, width) layers), batch size: parameters ~ depth * width^2, state = 3 x 4 bytes each
SIZES: dict[str, dict[str, int]] = {
    "100mb": {"width": 2048, "depth": 2, "batch": 32},
    "1gb": {"width": 4096, "depth": 5, "batch": 8},
}
# checkpoint every N steps, periodic checkpoints per run; s3 on moto is ~40 MB/s, so fewer there
SCHEDULE: dict[tuple[str, str], dict[str, int]] = {
    ("100mb", "file"): {"every_steps": 15, "checkpoints": 5},
    ("100mb", "s3"): {"every_steps": 15, "checkpoints": 4},
    ("1gb", "file"): {"every_steps": 8, "checkpoints": 4},
    ("1gb", "s3"): {"every_steps": 10, "checkpoints": 3},
}
GOAL_STALL_VS_FLOOR = 1.5
GOAL_STALL_VS_SYNC = 10.0
GOAL_OVERHEAD_30S_PCT = 2.0
GOAL_EXTRA_MEMORY_X_STATE = 2.0


# ------------------------------------------------------------------------------------------ worker


def _vm(field: str) -> int:
    """A field of /proc/self/status in bytes (VmHWM: peak resident set size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration; returns raw step timings and what was written."""
    import fsspec
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    width, depth, batch = spec["width"], spec["depth"], spec["batch"]

    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            layers: list[nn.Module] = []
            for _ in range(depth):
                layers += [nn.Linear(width, width), nn.ReLU()]
            self.net = nn.Sequential(*layers[:-1])

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.Adam(self.parameters(), lr=1e-4)

    class StepTimer(Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.ends: list[float] = []
            self.steps: list[int] = []  # trainer.global_step after each batch
            self.train_end = 0.0

        def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
            self.starts.append(time.perf_counter())

        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self.ends.append(time.perf_counter())
            self.steps.append(trainer.global_step)

        def on_train_end(self, trainer: pl.Trainer, *args: Any) -> None:
            self.train_end = time.perf_counter()

    samples = batch * 16
    data = DataLoader(TensorDataset(torch.randn(samples, width), torch.randn(samples, width)), batch_size=batch, shuffle=True)
    model = MLP()
    timer = StepTimer()
    config, url, every = spec["config"], spec["url"], spec["every_steps"]
    plugins: list[Any] = []
    if config == "none":
        callbacks: list[Callback] = [timer]
    elif config == "spotrun":
        from checkpoints.callback import SpotCheckpoint

        callbacks = [SpotCheckpoint(url, every_steps=every, keep=1000), timer]  # keep all: they are counted below
    else:
        # Lightning turns a local "file://..." dirpath into "<cwd>/file:/..." (realpath): give it the plain path.
        dirpath = url.removeprefix("file://") if url.startswith("file://") else url
        callbacks = [timer, ModelCheckpoint(dirpath=dirpath, every_n_train_steps=every, save_top_k=0, save_last=True)]
        if config == "lightning_async":
            from lightning.pytorch.plugins.io import AsyncCheckpointIO

            plugins = [AsyncCheckpointIO()]
    with tempfile.TemporaryDirectory(prefix="spotrun-bench-root-") as root:
        trainer = pl.Trainer(
            max_steps=spec["steps"],
            accelerator="cpu",
            devices=1,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=config.startswith("lightning"),
            callbacks=callbacks,
            plugins=plugins or None,
            default_root_dir=root,
            num_sanity_val_steps=0,
            limit_val_batches=0,
        )
        fit_start = time.perf_counter()
        trainer.fit(model, data)
        fit_wall = time.perf_counter() - fit_start
    peak_rss = _vm("VmHWM")

    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    for index, per_param in trainer.optimizers[0].state_dict()["state"].items():
        for name, value in per_param.items():
            if isinstance(value, torch.Tensor):
                state[f"optim.{index}.{name}"] = value
    state_bytes = sum(v.numel() * v.element_size() for v in state.values())
    result: dict[str, Any] = {
        "starts": timer.starts,
        "ends": timer.ends,
        "steps": timer.steps,
        "train_end": timer.train_end,
        "fit_wall_s": fit_wall,
        "peak_rss_bytes": peak_rss,
        "state_bytes": state_bytes,
        "parameters": sum(p.numel() for p in model.parameters()),
        "torch_threads": torch.get_num_threads(),
    }
    if config == "none":  # the floor: a bare in-memory copy of the same state, after the peak was read
        times = []
        for _ in range(3):
            started = time.perf_counter()
            copy = {k: v.clone() for k, v in state.items()}
            times.append(time.perf_counter() - started)
            del copy
        result["floor_s"] = statistics.median(times)
    else:
        fs, root_path = fsspec.core.url_to_fs(url)
        fs.invalidate_cache()
        if config == "spotrun":
            from checkpoints.store import CheckpointStore

            store = CheckpointStore(url)
            store.fs.invalidate_cache()
            infos = store.list()
            result["checkpoint_steps"] = sorted(info.step for info in infos if not getattr(info, "final", False))
            result["final_checkpoints"] = sum(1 for info in infos if getattr(info, "final", False))
            result["checkpoint_bytes"] = fs.du(root_path) / max(1, len(infos))
        else:
            last = f"{root_path}/last.ckpt"
            result["checkpoint_bytes"] = fs.size(last) if fs.exists(last) else None
        try:
            fs.rm(root_path, recursive=True)  # free moto's memory / the disk for the next configuration
        except (FileNotFoundError, OSError):
            pass
    return result


# ------------------------------------------------------------------------------------------ analysis


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def analyse(raw: dict[str, Any], spec: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    starts, ends, steps = raw["starts"], raw["ends"], raw["steps"]
    n = len(ends)
    every = spec["every_steps"]
    if spec["config"] == "spotrun":
        ckpt_steps = set(raw.get("checkpoint_steps", []))
    elif spec["config"] == "none":
        ckpt_steps = set()
    else:
        ckpt_steps = {s for s in steps if s % every == 0}
    gaps = {i: starts[i + 1] - ends[i] for i in range(WARMUP, n - 1)}
    ckpt_gaps = [i for i in gaps if steps[i] in ckpt_steps]
    normal = [gaps[i] for i in gaps if steps[i] not in ckpt_steps]
    normal_gap = statistics.median(normal) if normal else 0.0
    stalls = [max(0.0, gaps[i] - normal_gap) for i in ckpt_gaps]
    busy = [ends[i] - starts[i] for i in range(WARMUP, n)]
    loop_s = ends[-1] - starts[WARMUP]
    loop_steps = n - WARMUP
    out: dict[str, Any] = {
        "config": spec["config"],
        "size": spec["size"],
        "target": spec["target"],
        "steps": n,
        "every_steps": every if spec["config"] != "none" else None,
        "checkpoints": len(ckpt_gaps),
        "checkpoint_steps": sorted(steps[i] for i in ckpt_gaps),
        "step_compute_median_s": statistics.median(busy),
        "normal_gap_s": normal_gap,
        "stall_median_s": statistics.median(stalls) if stalls else None,
        "stall_p95_s": pct(stalls, 0.95) if stalls else None,
        "stall_max_s": max(stalls) if stalls else None,
        "stall_total_s": sum(stalls),
        "loop_s": loop_s,
        "steps_per_s": loop_steps / loop_s,
        "fit_wall_s": raw["fit_wall_s"],
        "final_phase_s": raw["train_end"] - ends[-1],  # after the last step until on_train_end (SpotCheckpoint's final save)
        "peak_rss_mb": raw["peak_rss_bytes"] / 1e6,
        "state_mb": raw["state_bytes"] / 1e6,
        "parameters": raw["parameters"],
        "checkpoint_mb": raw["checkpoint_bytes"] / 1e6 if raw.get("checkpoint_bytes") else None,
    }
    if spec["config"] == "spotrun":
        out["final_checkpoints"] = raw.get("final_checkpoints")
        out["deferred_or_missing"] = len({s for s in steps[WARMUP:-1] if s % every == 0} - ckpt_steps)
    size_mb = out["checkpoint_mb"] or out["state_mb"]
    if spec["config"] == "lightning" and out["stall_median_s"]:
        out["save_MBps"] = size_mb / out["stall_median_s"]  # synchronous: the stall is the whole save
        out["save_MBps_from"] = "synchronous stall"
    elif spec["config"] == "spotrun" and out["final_phase_s"] > 0.05:
        out["save_MBps"] = size_mb / out["final_phase_s"]  # the final save is blocking (waits for any in flight first)
        out["save_MBps_from"] = "final blocking save (lower bound if one was still in flight)"
    if baseline is not None:
        out.update(relative(out, baseline))
    return out


def relative(out: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """The figures that compare a configuration with the no-checkpoint baseline."""
    figures: dict[str, Any] = {}
    base_sps = baseline["steps_per_s"]
    loop_steps = out["steps"] - WARMUP
    figures["overhead_pct"] = (base_sps / out["steps_per_s"] - 1) * 100
    if out["checkpoints"]:
        extra = (out["loop_s"] - loop_steps / base_sps) / out["checkpoints"]
        figures["extra_s_per_checkpoint"] = extra
        figures["projected_overhead_pct_at_30s"] = max(0.0, extra) / 30 * 100
    figures["peak_extra_mb"] = out["peak_rss_mb"] - baseline["peak_rss_mb"]
    return figures


def goals(rows: list[dict[str, Any]], floors: dict[str, float]) -> list[dict[str, Any]]:
    """Every goal, for every checkpointing configuration."""
    results = []
    sync = {(r["size"], r["target"]): r.get("stall_median_s") for r in rows if r["config"] == "lightning"}
    for r in rows:
        if r["config"] == "none" or r.get("stall_median_s") is None:
            continue
        key = f"{r['config']} {r['size']} {r['target']}"
        stall, floor = r["stall_median_s"], floors.get(r["size"])

        def add(goal: str, value: Any, target: Any, ok: bool, key: str = key) -> None:
            results.append({"configuration": key, "goal": goal, "value": value, "target": target, "status": "PASS" if ok else "GAP"})

        if floor:
            add(
                f"stall <= {GOAL_STALL_VS_FLOOR} x floor",
                round(stall, 4),
                round(GOAL_STALL_VS_FLOOR * floor, 4),
                stall <= GOAL_STALL_VS_FLOOR * floor,
            )
        reference = sync.get((r["size"], r["target"]))
        if reference and r["config"] != "lightning":
            add(
                f"stall >= {GOAL_STALL_VS_SYNC:g}x lower than sync ModelCheckpoint",
                round(stall, 4),
                round(reference / GOAL_STALL_VS_SYNC, 4),
                stall * GOAL_STALL_VS_SYNC <= reference,
            )
        if r["size"] == "1gb" and r["target"] == "file" and "projected_overhead_pct_at_30s" in r:
            value = r["projected_overhead_pct_at_30s"]
            add(
                f"overhead <= {GOAL_OVERHEAD_30S_PCT}% at 1 ckpt / 30 s (projected)",
                round(value, 2),
                GOAL_OVERHEAD_30S_PCT,
                value <= GOAL_OVERHEAD_30S_PCT,
            )
        if "peak_extra_mb" in r:
            limit = GOAL_EXTRA_MEMORY_X_STATE * r["state_mb"]
            add(
                f"peak extra host memory <= {GOAL_EXTRA_MEMORY_X_STATE:g} x state",
                round(r["peak_extra_mb"]),
                round(limit),
                r["peak_extra_mb"] <= limit,
            )
    return results


# ------------------------------------------------------------------------------------------ driver


def start_moto() -> tuple[Any, str]:
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": "/dev/null",
            "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        }
    )
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    return server, endpoint


def run_one(spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out = Path(handle.name)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", json.dumps(spec), "--worker-out", str(out)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"worker {spec['config']} {spec['size']} {spec['target']} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def machine() -> dict[str, Any]:
    import torch

    memory = next((line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "0")
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
        platform.processor(),
    )
    return {
        "cpu_cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(int(memory) / 2**20, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": _version("lightning"),
        "load_average_at_start": os.getloadavg(),
    }


def _version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def fmt(value: Any, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def print_table(rows: list[dict[str, Any]], floors: dict[str, float]) -> None:
    header = f"{'size':6} {'target':6} {'config':16} {'ckpts':>5} {'stall med':>9} {'stall p95':>9} {'steps/s':>8} {'ovh %':>7} {'extra s/ck':>10} {'@30s %':>7} {'MB/s':>6} {'peakRSS':>8} {'+RSS MB':>8}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:6} {r['target']:6} {r['config']:16} {r['checkpoints']:5d} {fmt(r['stall_median_s']):>9} {fmt(r['stall_p95_s']):>9} "
            f"{r['steps_per_s']:8.2f} {fmt(r.get('overhead_pct'), '.1f'):>7} {fmt(r.get('extra_s_per_checkpoint')):>10} "
            f"{fmt(r.get('projected_overhead_pct_at_30s'), '.2f'):>7} {fmt(r.get('save_MBps'), '.0f'):>6} {r['peak_rss_mb']:8.0f} {fmt(r.get('peak_extra_mb'), '.0f'):>8}"
        )
    for size, floor in floors.items():
        print(f"floor (bare clone of model + Adam state) {size}: {floor:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="file,s3", help="comma-separated: file,s3")
    parser.add_argument("--sizes", default="100mb,1gb", help="comma-separated: " + ",".join(SIZES))
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ",".join(CONFIGS) + " (none is always run)")
    parser.add_argument("--checkpoints", type=int, default=None, help="periodic checkpoints per run (default: per size/target)")
    parser.add_argument("--single-baseline", action="store_true", help="do not repeat the no-checkpoint run after the others")
    parser.add_argument("--output", default=str(RESULTS))
    parser.add_argument("--timeout", type=float, default=300, help="seconds per configuration")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        Path(args.worker_out).write_text(json.dumps(worker(json.loads(args.worker))))
        return

    targets = [t for t in args.targets.split(",") if t]
    sizes = [s for s in args.sizes.split(",") if s]
    configs = ["none"] + [c for c in args.configs.split(",") if c and c != "none"]
    for name, allowed in (("target", ["file", "s3"]), ("size", list(SIZES)), ("config", CONFIGS)):
        chosen = {"target": targets, "size": sizes, "config": configs}[name]
        if bad := [c for c in chosen if c not in allowed]:
            parser.error(f"unknown {name}(s) {bad}; choose from {allowed}")
    started = time.time()
    info = machine()
    server = start_moto()[0] if "s3" in targets else None
    rows: list[dict[str, Any]] = []
    floors: dict[str, float] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="spotrun-bench-ckpt-") as tmp:
            for size in sizes:
                baseline: dict[str, Any] | None = None
                for target in targets:
                    schedule = dict(SCHEDULE[(size, target)])
                    if args.checkpoints:
                        schedule["checkpoints"] = args.checkpoints
                    every = schedule["every_steps"]
                    steps = WARMUP + every * schedule["checkpoints"] + max(3, every // 2)
                    for config in configs:
                        if config == "none" and baseline is not None:
                            continue  # the baseline does not depend on the target
                        run_id = uuid.uuid4().hex[:8]
                        url = f"file://{tmp}/{config}-{size}-{run_id}" if target == "file" else f"s3://{BUCKET}/{config}-{size}-{run_id}"
                        spec = {
                            "config": config,
                            "size": size,
                            "target": target if config != "none" else "-",
                            "url": url,
                            "every_steps": every,
                            "steps": steps,
                            **SIZES[size],
                        }
                        t0 = time.time()
                        print(
                            f"[{time.time() - started:6.1f}s] {size} {spec['target']} {config}: {steps} steps, checkpoint every {every} ...",
                            flush=True,
                        )
                        raw = run_one(spec, args.timeout)
                        row = analyse(raw, spec, baseline)
                        row["process_wall_s"] = round(time.time() - t0, 1)
                        if config == "none":
                            baseline = row
                            row["_spec"] = spec
                            floors[size] = raw["floor_s"]
                            row["floor_s"] = raw["floor_s"]
                        rows.append(row)
                if baseline is not None and len(configs) > 1 and not args.single_baseline:
                    # Another load on the machine can slow one process: run the baseline again after the
                    # others and compare against the faster of the two (both are kept in the results).
                    spec = {**baseline["_spec"], "url": baseline["_spec"]["url"] + "-again"}
                    print(f"[{time.time() - started:6.1f}s] {size} - none (again) ...", flush=True)
                    raw = run_one(spec, args.timeout)
                    again = analyse(raw, spec, None)
                    again["config"] = "none_again"
                    rows.append(again)
                    if again["steps_per_s"] > baseline["steps_per_s"]:
                        for r in rows:
                            if r["size"] == size and r["config"] not in ("none", "none_again"):
                                r.update(relative(r, again))
                        baseline["used_as_baseline"], again["used_as_baseline"] = False, True
                    else:
                        baseline["used_as_baseline"], again["used_as_baseline"] = True, False
    finally:
        if server is not None:
            server.stop()
    for r in rows:
        r.pop("_spec", None)
    print()
    print_table(rows, floors)
    checked = goals(rows, floors)
    print()
    for g in checked:
        print(f"{g['status']:4}  {g['configuration']:28} {g['goal']:58} value {g['value']}  target {g['target']}")
    load_end = os.getloadavg()
    result = {
        "machine": {**info, "load_average_at_end": load_end},
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "total_wall_s": round(time.time() - started, 1),
        "method": {
            "warmup_steps_excluded": WARMUP,
            "stall": "gap between a checkpoint step's on_train_batch_end and the next on_train_batch_start, minus the median gap of steps without one",
            "extra_s_per_checkpoint": "(loop time - steps / baseline steps_per_s) / checkpoints; includes background work slowing later steps",
            "projected_overhead_pct_at_30s": "extra_s_per_checkpoint / 30 s",
            "peak_extra_mb": "VmHWM of the configuration's process minus VmHWM of the no-checkpoint process (same size)",
            "floor": "median of 3 x {k: v.clone()} over model + Adam state tensors",
            "lightning": "ModelCheckpoint(every_n_train_steps=N, save_top_k=0, save_last=True): one file per trigger",
        },
        "sizes": {s: SIZES[s] for s in sizes},
        "floors_s": floors,
        "configurations": rows,
        "goals": checked,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {output} in {result['total_wall_s']} s; load average at start {info['load_average_at_start']}, at end {load_end}")


if __name__ == "__main__":
    main()
