"""Exact resume for the setups people run: each case preempted at random points ends bit-identical.

Each case (``resume_cases.py``) trains once uninterrupted, then through four interruptions:
notices at random batches (inside accumulation windows too), one notice right after a mid-epoch
validation, and bare SIGKILLs at random moments (which cost the work since the last periodic
checkpoint). The last attempt runs to the end; every tensor of its model, optimizer and scheduler
state must equal the uninterrupted run's (``torch.equal``), and so must the loop counters
(global step, the step loggers use, the epoch). Runs come from a fork server, so an attempt costs
a fork rather than an interpreter start.
"""

from __future__ import annotations

import contextlib
import json
import mmap
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from fork_server import ForkServer

from checkpoints.environment import PREEMPTED_EXIT_CODE

WORKER = Path(__file__).with_name("resume_matrix_worker.py")
sys.path.insert(0, str(WORKER.parent))
from resume_cases import CASES, TRAIN_SAMPLES, litdata_sample  # noqa: E402
from resume_matrix_worker import BOARD  # noqa: E402

EXACT_CASES = [name for name in CASES if name != "stateless_iterable"]
WAIT_S = 120.0

pytestmark = pytest.mark.slow  # every test trains in real processes (a fork server, or a script of its own)


@pytest.fixture(scope="module")
def litdata_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training samples as LitData chunks, written by ``litdata.optimize`` (several chunks, so shuffling spans them)."""
    litdata = pytest.importorskip("litdata")
    directory = tmp_path_factory.mktemp("litdata") / "optimized"
    litdata.optimize(fn=litdata_sample, inputs=list(range(TRAIN_SAMPLES)), output_dir=str(directory), chunk_size=64, num_workers=1)
    return directory


@pytest.fixture(scope="module")
def litdata_s3_dir(litdata_dir: Path, moto_endpoint: str) -> str:
    """The same chunks in a bucket on the moto server."""
    import boto3

    client = boto3.client("s3", endpoint_url=moto_endpoint)
    client.create_bucket(Bucket="resume-matrix-litdata")
    for chunk in litdata_dir.iterdir():
        client.upload_file(str(chunk), "resume-matrix-litdata", f"optimized/{chunk.name}")
    return "s3://resume-matrix-litdata/optimized"


@pytest.fixture(scope="module")
def server(litdata_dir: Path, litdata_s3_dir: str) -> ForkServer:
    cache = litdata_dir.parent / "litdata-cache"
    fork_server = ForkServer(
        WORKER, {**os.environ, "LITDATA_DIR": str(litdata_dir), "LITDATA_S3_DIR": litdata_s3_dir, "LITDATA_CACHE_DIR": str(cache)}
    )
    yield fork_server
    fork_server.close()


class Attempts:
    """Runs the attempts of one case against one checkpoint URL."""

    def __init__(self, server: ForkServer, case: str, directory: Path, url: str) -> None:
        self.server, self.case, self.directory, self.url = server, case, directory, url
        self.count = 0

    def _start(self, **extra: Any) -> tuple[int, Path]:
        self.count += 1
        board = self.directory / f"attempt-{self.count}.board"
        board.write_bytes(BOARD.pack(0))
        output = self.directory / f"attempt-{self.count}.pt"
        pid = self.server.start(case=self.case, url=self.url, output=str(output), board=str(board), every_steps=5, **extra)
        return pid, board

    def to_end(self, **extra: Any) -> Path:
        self._start(**extra)
        status = self.server.status()
        assert status == 0, f"{self.case}: the run ended with {status}"
        return self.directory / f"attempt-{self.count}.pt"

    def notice(self, stop_after: int, at_validation: bool = False, **extra: Any) -> None:
        self._start(stop_after=stop_after, at_validation=at_validation, **extra)
        status = self.server.status()
        assert status == PREEMPTED_EXIT_CODE, f"{self.case}: a notice after {stop_after} batches ended the run with {status}"

    def kill(self, after_batches: int, rng: random.Random) -> None:
        pid, board = self._start()
        with open(board, "r+b") as handle:
            shared = mmap.mmap(handle.fileno(), BOARD.size)
            deadline = time.monotonic() + WAIT_S
            while BOARD.unpack(shared[:])[0] < after_batches:
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    pytest.fail(f"{self.case}: the run never trained {after_batches} batches (exit {self.server.status()})")
                time.sleep(0.001)
        time.sleep(rng.uniform(0.0, 0.05))
        with contextlib.suppress(ProcessLookupError):  # it ended by itself: the status below says how
            os.kill(pid, signal.SIGKILL)
        status = self.server.status()
        assert status == -signal.SIGKILL, f"{self.case}: the run ended with {status} before the kill"


def assert_identical(expected: Any, actual: Any, where: str = "state") -> None:
    """Every tensor equal with ``torch.equal``, every other value equal, the same structure."""
    if isinstance(expected, torch.Tensor):
        same = isinstance(actual, torch.Tensor) and actual.shape == expected.shape and torch.equal(expected, actual)
        assert same, f"{where} differs" + (
            f" (max abs diff {(expected - actual).abs().max():.3g})"
            if isinstance(actual, torch.Tensor) and actual.shape == expected.shape and expected.is_floating_point()
            else ""
        )
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and expected.keys() == actual.keys(), f"{where}: keys differ"
        for key in expected:
            assert_identical(expected[key], actual[key], f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(expected) == len(actual), f"{where}: lengths differ"
        for index, (left, right) in enumerate(zip(expected, actual, strict=True)):
            assert_identical(left, right, f"{where}[{index}]")
    else:
        assert expected == actual, f"{where}: {expected!r} != {actual!r}"


@pytest.mark.parametrize("case", EXACT_CASES)
def test_preempted_at_random_points_ends_bit_identical(server: ForkServer, case: str, tmp_path: Path) -> None:
    reference = Attempts(server, case, tmp_path, f"file://{tmp_path}/reference").to_end()

    rng = random.Random(f"resume-matrix:{case}")
    attempts = Attempts(server, case, tmp_path, f"file://{tmp_path}/ckpts")
    attempts.notice(rng.randint(2, 13))  # 16 batches an epoch: anywhere in the first epoch, mid-window too
    attempts.kill(rng.randint(7, 14), rng)  # past at least one periodic checkpoint (every 5 steps)
    attempts.notice(1, at_validation=True)  # right after a mid-epoch (or epoch-end) validation
    attempts.kill(rng.randint(7, 14), rng)
    attempts.notice(rng.randint(2, 13))
    final = attempts.to_end()

    assert_identical(torch.load(reference, weights_only=False), torch.load(final, weights_only=False))


def test_a_stateless_iterable_dataset_resumes_at_the_step_and_says_it_is_not_exact(server: ForkServer, tmp_path: Path) -> None:
    """The stream cannot be restored, so the resumed epoch draws and drops the batches already trained: same step count.

    (This stream is deterministic, so here even the weights come out equal; a random one's would not.)
    """
    reference = torch.load(Attempts(server, "stateless_iterable", tmp_path, f"file://{tmp_path}/reference").to_end(), weights_only=False)
    attempts = Attempts(server, "stateless_iterable", tmp_path, f"file://{tmp_path}/ckpts")
    progress = tmp_path / "progress.json"
    attempts.notice(5)
    attempts.notice(12)
    final = torch.load(attempts.to_end(progress=str(progress)), weights_only=False)
    assert (final["global_step"], final["epoch"]) == (reference["global_step"], reference["epoch"])
    assert_identical(reference, final)
    report = json.loads(progress.read_text())
    assert report["resume_exact"] is False and "IterableDataset (StreamOfSamples)" in report["resume_inexact_reason"]


@pytest.mark.parametrize("case", ["manual_two_optimizers", "accumulation"])
def test_progress_counts_steps_in_the_unit_of_the_step(server: ForkServer, case: str, tmp_path: Path) -> None:
    """The progress report's total is where ``step`` ends: two optimizer steps a batch, one per accumulation window."""
    progress = tmp_path / "progress.json"
    reports: list[dict[str, Any]] = []
    attempts = Attempts(server, case, tmp_path, f"file://{tmp_path}/ckpts")
    attempts.notice(7, progress=str(progress))
    reports.append(json.loads(progress.read_text()))
    final_state = torch.load(attempts.to_end(progress=str(progress)), weights_only=False)
    reports.append(json.loads(progress.read_text()))
    expected = {"manual_two_optimizers": 2 * 6 * 16, "accumulation": 6 * 6}[case]  # 6 epochs of 16 batches; windows of 3
    assert final_state["global_step"] == expected
    assert [report["total_steps"] for report in reports] == [expected, expected]
    assert reports[-1]["step"] == expected and reports[-1]["resume_exact"] is True


def test_the_first_attempts_thread_count_is_applied_on_resume(server: ForkServer, tmp_path: Path) -> None:
    """Attempts on machines with other core counts train with the thread count the run started with."""
    reference = torch.load(Attempts(server, "persistent_workers", tmp_path, f"file://{tmp_path}/reference").to_end(), weights_only=False)
    attempts = Attempts(server, "persistent_workers", tmp_path, f"file://{tmp_path}/ckpts")
    attempts.notice(9)  # the first attempt trains with 1 thread (the worker's default); the next start with 2
    final = torch.load(attempts.to_end(threads=2), weights_only=False)
    assert final["threads"] == 1
    assert_identical(reference, final)


def test_sharded_strategies_are_refused(tmp_path: Path) -> None:
    """ModelParallelStrategy (FSDP2) holds a shard per rank; one file from rank 0 would silently lack the rest."""
    script = tmp_path / "sharded.py"
    script.write_text(
        "import lightning.pytorch as pl, sys\n"
        f"sys.path.insert(0, {str(WORKER.parent)!r})\n"
        "from lightning.pytorch.strategies import ModelParallelStrategy\n"
        "from resume_cases import Data, Net\n"
        "from checkpoints import SpotCheckpoint\n"
        f"trainer = pl.Trainer(max_epochs=1, accelerator='cpu', devices=1, logger=False, enable_checkpointing=False,\n"
        f"    strategy=ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),\n"
        f"    callbacks=[SpotCheckpoint('file://{tmp_path}/ckpts', every_steps=5)])\n"
        "trainer.fit(Net(), Data())\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "SpotCheckpoint cannot checkpoint ModelParallelStrategy yet" in result.stderr, result.stderr[-2000:]
    assert not (tmp_path / "ckpts").exists() or not any((tmp_path / "ckpts").glob("step-*"))
