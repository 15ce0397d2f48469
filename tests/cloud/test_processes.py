"""Process identity from /proc: pid reuse, zombies and dead groups are told apart from live processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.processes import is_alive, kill_group, process_start_ticks, signal_process, wait_for_exit

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]
NO_SUCH_PID = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A child leading its own process group, killed at the end whatever the test did."""
    process = subprocess.Popen(SLEEPER, process_group=0)
    yield process
    process.kill()
    process.wait()


def test_start_ticks_of_a_living_and_a_missing_process() -> None:
    assert isinstance(process_start_ticks(os.getpid()), int)
    assert process_start_ticks(NO_SUCH_PID) is None


def test_alive_only_with_the_same_start_time(sleeper: subprocess.Popen[bytes]) -> None:
    ticks = process_start_ticks(sleeper.pid)
    assert ticks is not None
    assert is_alive(sleeper.pid, ticks)
    assert not is_alive(sleeper.pid, ticks + 1)  # same number, another process
    assert not is_alive(NO_SUCH_PID, ticks)


def test_a_zombie_is_dead(sleeper: subprocess.Popen[bytes]) -> None:
    ticks = process_start_ticks(sleeper.pid)
    assert ticks is not None
    sleeper.send_signal(signal.SIGKILL)
    assert wait_for_exit(sleeper.pid, ticks, timeout_s=10)
    assert process_start_ticks(sleeper.pid) == ticks  # not reaped yet: still in /proc
    assert not is_alive(sleeper.pid, ticks)


def test_wait_for_exit_times_out_on_a_living_process(sleeper: subprocess.Popen[bytes]) -> None:
    ticks = process_start_ticks(sleeper.pid)
    assert ticks is not None
    assert not wait_for_exit(sleeper.pid, ticks, timeout_s=0.05)
    assert wait_for_exit(NO_SUCH_PID, ticks, timeout_s=0.05)


def test_kill_group_reaches_the_group_and_tolerates_its_absence(sleeper: subprocess.Popen[bytes]) -> None:
    ticks = process_start_ticks(sleeper.pid)
    assert kill_group(sleeper.pid, signal.SIGKILL, ticks)
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    assert not kill_group(sleeper.pid, signal.SIGKILL)


def test_kill_group_leaves_a_stranger_with_a_reused_number_alone(sleeper: subprocess.Popen[bytes]) -> None:
    ticks = process_start_ticks(sleeper.pid)
    assert ticks is not None
    assert not kill_group(sleeper.pid, signal.SIGKILL, leader_start_ticks=ticks - 1)
    assert not signal_process(sleeper.pid, ticks - 1, signal.SIGKILL)
    assert is_alive(sleeper.pid, ticks)


@pytest.mark.parametrize("pgid", [0, 1, -3])
def test_kill_group_refuses_ids_that_would_mean_us_or_everyone(pgid: int) -> None:
    with pytest.raises(ValueError, match="refusing"):
        kill_group(pgid, signal.SIGTERM)
