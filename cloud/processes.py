"""Process identity and signalling that survive pid reuse, read from ``/proc`` (Linux).

A pid alone does not name a process for long: once it exits, the kernel may hand the number to
another one. Local instances are watched by processes that come and go (a controller restarted
an hour later), so every pid is stored with the process's start time in clock ticks since boot,
and a process counts as the same one only when both match.
"""

from __future__ import annotations

import os
import select
from pathlib import Path

_PROC = Path("/proc")
# In /proc/PID/stat, after the ")" that ends the command name: field 3 (state) is index 0 and
# field 22 (starttime) is index 19. The name itself may hold spaces and parentheses.
_STATE_INDEX = 0
_START_TICKS_INDEX = 19
_DEAD_STATES = frozenset({"Z", "X"})  # a zombie has exited; it only waits to be reaped


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start ticks) of ``pid``, or None when there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[_STATE_INDEX], int(fields[_START_TICKS_INDEX])


def process_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, to store beside the pid; None if it is gone."""
    stat = _stat(pid)
    return None if stat is None else stat[1]


def is_alive(pid: int, start_ticks: int) -> bool:
    """Whether the process that started at ``start_ticks`` as ``pid`` still runs (zombies count as dead)."""
    stat = _stat(pid)
    return stat is not None and stat[0] not in _DEAD_STATES and stat[1] == start_ticks


def kill_group(pgid: int, sig: int, leader_start_ticks: int | None = None) -> bool:
    """Send ``sig`` to process group ``pgid``; False when the group is already gone.

    With ``leader_start_ticks``, a living process now holding the number ``pgid`` with another
    start time is a stranger that reused it, and is left alone. (While any member of the group
    lives, Linux does not reuse its id, so a group whose leader is gone is still ours.)
    """
    if pgid <= 1:
        # killpg(0) would signal our own group and killpg(1) init's: never what a caller means.
        raise ValueError(f"refusing to signal process group {pgid}")
    if leader_start_ticks is not None:
        ticks = process_start_ticks(pgid)
        if ticks is not None and ticks != leader_start_ticks:
            return False
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def signal_process(pid: int, start_ticks: int, sig: int) -> bool:
    """Send ``sig`` to ``pid`` only if it is still the process that started at ``start_ticks``."""
    if not is_alive(pid, start_ticks):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def wait_for_exit(pid: int, start_ticks: int, timeout_s: float) -> bool:
    """Block until the process exits or ``timeout_s`` passes; True when it is gone.

    Works for processes that are not our children (a host started by an earlier controller):
    a pidfd becomes readable when its process exits, so this sleeps in the kernel, not in a loop.
    """
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        # Checked after opening: from here on the pidfd names this very process even if it exits.
        if not is_alive(pid, start_ticks):
            return True
        readable, _, _ = select.select([pidfd], [], [], max(0.0, timeout_s))
        return bool(readable)
    finally:
        os.close(pidfd)
