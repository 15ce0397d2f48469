"""Resume is exact: a run stopped (emergency save) or SIGKILLed anywhere ends with the same weights."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch

from checkpoints import latest
from checkpoints.environment import PREEMPTED_EXIT_CODE
from checkpoints.progress import read_progress

TOY = Path(__file__).with_name("toy_training.py")

pytestmark = pytest.mark.slow  # every test trains in real processes, several runs each


def _train(url: str, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOY), url, str(output), *extra], capture_output=True, text=True, timeout=240)


def _assert_same_weights(expected: Path, actual: Path) -> None:
    reference, resumed = torch.load(expected), torch.load(actual)
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), f"{name} differs"


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run: the weights every interrupted run must reproduce bit for bit."""
    directory = tmp_path_factory.mktemp("reference")
    result = _train(f"file://{directory}/ckpts", directory / "final.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    return directory / "final.pt"


@pytest.mark.parametrize("stops", [(5, 20, 47), (16,), (32, 40)])  # 16 and 32: epoch boundaries (16 batches/epoch)
def test_emergency_stops_resume_bit_exactly(reference: Path, tmp_path: Path, stops: tuple[int, ...]) -> None:
    url = f"file://{tmp_path}/ckpts"
    for step in stops:
        result = _train(url, tmp_path / "unused.pt", "--stop-at-step", str(step), "--control", str(tmp_path / f"control-{step}.json"))
        assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-3000:]
        newest = latest(url)
        assert newest is not None and newest.step == step and newest.reason == "emergency"
    result = _train(url, tmp_path / "final.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_weights(reference, tmp_path / "final.pt")


def test_sigkill_at_random_moments_resumes_bit_exactly(reference: Path, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/ckpts"
    rng = random.Random(20261121)
    kills = 0
    while kills < 4:
        before = latest(url)
        if before is not None and before.final:
            break
        # Kill 1-3 checkpoints past where this run resumed, up to 60 ms later: mid-step, mid-save or mid-prune.
        target = (before.step if before else 0) + 3 * rng.randint(1, 3)
        process = subprocess.Popen(
            [sys.executable, str(TOY), url, str(tmp_path / "unused.pt"), "--every-steps", "3"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_step = time.monotonic() + 120
        while process.poll() is None and time.monotonic() < wait_for_step:
            newest = latest(url)
            if newest is not None and newest.step >= target:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.06))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait(timeout=60)
    assert kills >= 3
    result = _train(url, tmp_path / "final.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_weights(reference, tmp_path / "final.pt")


def _reported_step(progress_file: Path) -> int:
    """The step the callback last reported reaching; 0 before its first report."""
    report = read_progress(progress_file)
    return report.step if report is not None else 0


def test_sigterm_takes_an_emergency_checkpoint_and_exits_preempted(reference: Path, tmp_path: Path) -> None:
    """Plain Lightning exits 0 on SIGTERM without saving; under SpotCheckpoint it saves, then exits 75."""
    url, progress = f"file://{tmp_path}/ckpts", tmp_path / "progress.json"
    process = subprocess.Popen(
        [
            sys.executable,
            str(TOY),
            url,
            str(tmp_path / "unused.pt"),
            "--every-steps",
            "1000",
            "--progress",
            str(progress),
            "--step-delay",
            "0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline and _reported_step(progress) < 1:
        time.sleep(0.02)
    time.sleep(random.Random(7).uniform(0.5, 1.5))  # 64 steps of >= 0.1 s: still well inside training
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == PREEMPTED_EXIT_CODE, stderr[-3000:]
    emergency = latest(url)
    assert emergency is not None and emergency.reason == "emergency" and 1 <= emergency.step < 64

    result = _train(url, tmp_path / "final.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_same_weights(reference, tmp_path / "final.pt")


@pytest.mark.parametrize("damage", ["flip-one-byte", "delete-manifest"])
def test_damaged_newest_checkpoint_resumes_from_the_previous_one(reference: Path, tmp_path: Path, damage: str) -> None:
    url = f"file://{tmp_path}/ckpts"
    stopped = _train(url, tmp_path / "unused.pt", "--stop-at-step", "20", "--control", str(tmp_path / "control.json"))
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    newest = latest(url)
    assert newest is not None and newest.step == 20
    directory = Path(newest.url.removeprefix("file://"))
    if damage == "flip-one-byte":
        data = bytearray((directory / "model.ckpt").read_bytes())
        data[len(data) // 3] ^= 0x01
        (directory / "model.ckpt").write_bytes(bytes(data))
    else:
        (directory / "MANIFEST.json").unlink()

    result = _train(url, tmp_path / "final.pt")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step-000000000014" in result.stderr  # resumed from the previous checkpoint (every 7 steps)
    if damage == "flip-one-byte":
        assert "skipping damaged checkpoint" in result.stderr and "step-000000000020" in result.stderr
    _assert_same_weights(reference, tmp_path / "final.pt")


def test_final_checkpoint_loads_in_plain_lightning(reference: Path, tmp_path: Path) -> None:
    url = f"file://{tmp_path}/ckpts"
    assert _train(url, tmp_path / "final.pt").returncode == 0
    final = latest(url)
    assert final is not None and final.final
    local = tmp_path / "copy.ckpt"
    local.write_bytes(Path(final.data_url.removeprefix("file://")).read_bytes())

    sys.path.insert(0, str(TOY.parent))
    try:
        from toy_training import ToyData, ToyModel
    finally:
        sys.path.remove(str(TOY.parent))
    restored = RecordRestoredState()
    # One epoch more than the run had: Lightning then starts training (and calls on_train_start) however the run ended.
    trainer = pl.Trainer(
        max_epochs=7, logger=False, enable_checkpointing=False, enable_progress_bar=False, num_sanity_val_steps=0, callbacks=[restored]
    )
    trainer.fit(ToyModel(), ToyData(), ckpt_path=str(local))
    assert restored.step == final.step
    reference_weights = torch.load(reference)
    assert all(torch.equal(reference_weights[name], restored.weights[name]) for name in reference_weights)


class RecordRestoredState(pl.Callback):
    """What plain Lightning restored, captured before it trains any further."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.step = trainer.global_step
        self.weights = {name: tensor.clone() for name, tensor in pl_module.state_dict().items()}


def test_ddp_emergency_save_asked_by_one_rank_is_taken_by_both_and_resumes_bit_exactly(tmp_path: Path) -> None:
    """2 processes, gloo on CPU: rank 1 alone gets SIGUSR1; both ranks save the same step and stop."""
    reference = _train(f"file://{tmp_path}/reference", tmp_path / "reference.pt", "--ddp")
    assert reference.returncode == 0, reference.stderr[-3000:]

    url = f"file://{tmp_path}/ckpts"
    stopped = _train(url, tmp_path / "unused.pt", "--ddp", "--signal-rank", "1", "--signal-at-step", "11", "--every-steps", "100")
    assert stopped.returncode == PREEMPTED_EXIT_CODE, stopped.stderr[-3000:]
    newest = latest(url)
    assert newest is not None and (newest.step, newest.reason) == (11, "emergency")

    resumed = _train(url, tmp_path / "final.pt", "--ddp", "--every-steps", "100")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same_weights(tmp_path / "reference.pt", tmp_path / "final.pt")
