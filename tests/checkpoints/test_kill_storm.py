"""SIGKILL a training run at dozens of random moments inside its saves; every resume must still be exact.

The run (a toy model carrying 32 MB of state, checkpointing as often as it can to a store with an
object store's per-request latency) is killed again and again: each time the test picks a phase of
a save (snapshot, serialise, upload, manifest write, retention delete), waits until the run enters
it, lets a random fraction of a typical phase pass, and sends SIGKILL. After every kill the newest
committed checkpoint must be sound and no older than any seen before, and the next run must resume
from exactly it. The last run goes to the end; its weights must equal an uninterrupted run's bit
for bit. Processes come from a fork server (``kill_storm_worker.py``) so a kill costs a fork, not
an interpreter start.
"""

from __future__ import annotations

import mmap
import os
import random
import signal
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from fork_server import ForkServer

from checkpoints.store import CheckpointStore

WORKER = Path(__file__).with_name("kill_storm_worker.py")
sys.path.insert(0, str(WORKER.parent))
from kill_storm_worker import LAYOUT, PHASES  # noqa: E402

KILLS = 60
EPOCHS = 20  # 16 steps an epoch: room for every kill to land before the run ends
SAVE_PHASES = ("snapshot", "serialize", "upload", "manifest", "retention")
KILL_WITHIN_S = 0.012  # a kill lands this long at most after the targeted phase began
WAIT_S = 60.0

pytestmark = pytest.mark.slow  # 62 training runs from a fork server


class PhaseWatch:
    """The test's side of the shared phase file."""

    def __init__(self, path: Path) -> None:
        path.write_bytes(LAYOUT.pack(0, *[0] * len(PHASES), -2))
        self._handle = open(path, "r+b")  # stays open while the child writes
        self._map = mmap.mmap(self._handle.fileno(), LAYOUT.size)

    def read(self) -> tuple[str, list[int], int]:
        current, *entries, resumed = LAYOUT.unpack(self._map[:])
        return PHASES[current], entries, resumed


@pytest.fixture(scope="module")
def fork_server() -> ForkServer:
    server = ForkServer(WORKER)
    yield server
    server.close()


def _run_to_end(server: ForkServer, url: str, output: Path, phase_file: Path) -> None:
    PhaseWatch(phase_file)
    server.start(url=url, output=str(output), epochs=EPOCHS, phase_file=str(phase_file))
    assert server.status() == 0, "the run did not finish"


def _kill_in(server: ForkServer, watch_file: Path, url: str, phase: str, rng: random.Random) -> tuple[str | None, int]:
    """Start a run and SIGKILL it a random moment after it enters ``phase``.

    Returns the phase it was in when killed (None if it finished first) and the step it had resumed from.
    """
    watch = PhaseWatch(watch_file)
    pid = server.start(url=url, output=str(watch_file.with_suffix(".unused")), epochs=EPOCHS, phase_file=str(watch_file))
    occurrence = rng.randint(1, 2)
    deadline = time.monotonic() + WAIT_S
    while watch.read()[1][PHASES.index(phase)] < occurrence:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            pytest.fail(f"the run never entered {phase} {occurrence} time(s) within {WAIT_S}s")
        time.sleep(0.0002)
    time.sleep(rng.uniform(0, KILL_WITHIN_S))
    killed_in = watch.read()[0]
    os.kill(pid, signal.SIGKILL)
    status = server.status()
    assert status in (0, -signal.SIGKILL), f"the run ended with {status} before it was killed"
    return (killed_in if status else None), watch.read()[2]


def _assert_same_weights(expected: Path, actual: Path) -> None:
    reference, resumed = torch.load(expected), torch.load(actual)
    assert reference.keys() == resumed.keys()
    for name in reference:
        assert torch.equal(reference[name], resumed[name]), f"{name} differs"


def test_sixty_sigkills_across_every_phase_of_a_save_lose_nothing(fork_server: ForkServer, tmp_path: Path) -> None:
    _run_to_end(fork_server, f"laggy://{tmp_path}/reference", tmp_path / "reference.pt", tmp_path / "reference.phase")

    url = f"laggy://{tmp_path}/ckpts"
    store = CheckpointStore(f"file://{tmp_path}/ckpts")
    rng = random.Random(20261121)
    killed_in: Counter[str] = Counter()
    newest_seen = -1
    for kill in range(KILLS):
        phase_file = tmp_path / f"kill-{kill}.phase"
        landed, resumed_step = _kill_in(fork_server, phase_file, url, SAVE_PHASES[kill % len(SAVE_PHASES)], rng)
        assert landed is not None, f"the run finished after {kill} kills; give it more epochs"
        killed_in[landed] += 1
        assert resumed_step == newest_seen, f"kill {kill}: the run resumed from step {resumed_step}, the newest commit was {newest_seen}"

        committed = store.list()
        for info in committed:  # a commit, once visible, is whole until it is gone
            problem = store.problem(info, check_sha256=True)
            assert problem is None, f"kill {kill} (in {landed}) left committed step {info.step} damaged: {problem}"
        if committed:
            assert committed[0].step >= newest_seen, f"kill {kill} (in {landed}) lost the commit of step {newest_seen}"
            newest_seen = committed[0].step

    _run_to_end(fork_server, url, tmp_path / "final.pt", tmp_path / "final.phase")
    _assert_same_weights(tmp_path / "reference.pt", tmp_path / "final.pt")
    assert all(killed_in[phase] >= 5 for phase in SAVE_PHASES), f"kills did not spread across the phases: {dict(killed_in)}"
