"""The ``local`` provider: every instance is a process group on this machine, with spot interruptions injected.

An instance is a detached host process (``cloud.local_host``) that runs the agent in a process
group of its own and serves it an emulated instance metadata service, so a job can prove that
it survives preemption before it spends a dollar. Interruptions come the way EC2 gives them:
a rebalance recommendation, a notice, and ``notice_s`` later a kill of everything the agent
started. Spot instances are interrupted after an exponentially distributed time of *training*
with mean ``preempt_every_s``, drawn from ``seed``, the job and the attempt, so a run replays
exactly. The lifetime's clock starts at the attempt's first training step, which the agent
reports to its host (see ``cloud.local_host``), not at the launch: start-up (interpreter, torch
and Lightning imports, the resume download) takes seconds to tens of seconds and grows on a busy
machine, and counting it would let a slow start eat a short lifetime, so that attempts die before
their first step and the run starves. ``preempt_every_s`` is thus the mean training time between
interruptions; each one also costs a start-up. A spot availability trace, by contrast, takes
capacity away at its own wall-clock times, and ``interrupt`` serves a notice at once, both
whatever the training does.

State lives in files under ``HOME/local/instances/<id>/`` (see ``cloud.local_files``), never in
this object: a controller can die and a new ``LocalProvider`` on the same home carries on.

Times: what the host records (start, notice, end) is this machine's wall clock; ``clock`` stamps
what the provider decides itself (launch time, the end of an instance found without a host),
so it must agree with the wall clock outside of tests.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from cloud.billing import constant_price, price_at
from cloud.errors import CapacityError, InstanceNotFoundError, ProviderError
from cloud.local_files import (
    HostState,
    InstanceFiles,
    InstanceSpec,
    instances_dir,
    read_spec,
    read_state,
    write_json_atomic,
    write_state,
)
from cloud.local_host import TERM_GRACE_S
from cloud.processes import is_alive, kill_group, signal_process, wait_for_exit
from cloud.provider import (
    LOOPBACK,
    EndReason,
    Instance,
    InstanceState,
    InstanceStatus,
    Interruptible,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    PricePoint,
    Provider,
    ProviderPriors,
)
from cloud.rendezvous import local_gang_env

DEFAULT_INSTANCE_TYPE = "local"
ZONE = "local"
LAUNCH_TIMEOUT_S = 30.0  # from spawning the host to its first state.json
TERMINATE_TIMEOUT_S = TERM_GRACE_S + 5.0  # the host's own grace period, and time to record the end
INTERRUPT_ACK_TIMEOUT_S = 5.0
_POLL_S = 0.02
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{17}")
_HOST_LOG_TAIL_LINES = 20
# Launch to first progress before anything is measured: an interpreter, torch and Lightning start on this machine.
RESTART_OVERHEAD_PRIOR_S = 15.0
T = TypeVar("T")


@dataclass(frozen=True)
class SpotAvailability:
    """Spot capacity over time from a trace: tick ``i`` covers ``origin + [i, i + 1) * gap_s``; the trace repeats.

    With it, the local cloud behaves like a real spot pool: no spot offer while the current tick
    is 0, and a spot instance gets its notice ``notice_s`` before the next 0 tick begins.
    """

    gap_s: float
    available: tuple[bool, ...]
    origin: float

    @classmethod
    def from_file(cls, path: str | Path, origin: float) -> SpotAvailability:
        """Read a trace file (``{"metadata": {"gap_seconds": N}, "data": [0, 1, ...]}``, validated with the spec)."""
        raw = json.loads(Path(path).read_text())
        return cls(float(raw["metadata"]["gap_seconds"]), tuple(bool(value) for value in raw["data"]), origin)

    def _tick(self, when: float) -> int:
        return math.floor((when - self.origin) / self.gap_s)

    def available_at(self, when: float) -> bool:
        """Whether spot capacity can be had at ``when``."""
        return self.available[self._tick(when) % len(self.available)]

    def next_loss_after(self, when: float) -> float | None:
        """When the first tick without capacity after ``when`` begins; None if the trace never lacks it."""
        if all(self.available):
            return None
        tick = self._tick(when) + 1
        while self.available[tick % len(self.available)]:
            tick += 1
        return self.origin + tick * self.gap_s


def instance_id_for(token: str) -> str:
    """The instance id a launch token always maps to (EC2's form: ``i-`` and 17 hex digits)."""
    return "i-" + hashlib.sha256(token.encode()).hexdigest()[:17]


class LocalProvider(Provider, Interruptible):
    """Instances are processes on this machine; spot interruptions are injected on a seeded schedule, or served on request."""

    name = "local"

    def __init__(
        self,
        home: Path,
        *,
        preempt_every_s: float,
        notice_s: float,
        seed: int,
        spot_price_usd_per_hour: float,
        on_demand_price_usd_per_hour: float,
        gpus: int = 1,
        cpus: int = 1,
        spot_availability: SpotAvailability | None = None,
        capacity: Mapping[str, int] | None = None,
        rebalance_lead_s: float | None = None,
        spot_price_changes: Sequence[PricePoint] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``preempt_every_s`` 0 never interrupts; ``rebalance_lead_s`` (default ``notice_s``) 0 sends no rebalance.

        ``spot_price_changes`` moves the spot price as a spot market does: from each point's time on,
        spot costs its price (offers, and the price history running instances are billed by).
        """
        rebalance_lead_s = notice_s if rebalance_lead_s is None else rebalance_lead_s
        for label, value in (
            ("preempt_every_s", preempt_every_s),
            ("notice_s", notice_s),
            ("rebalance_lead_s", rebalance_lead_s),
            ("spot_price_usd_per_hour", spot_price_usd_per_hour),
            ("on_demand_price_usd_per_hour", on_demand_price_usd_per_hour),
        ):
            if value < 0:
                raise ValueError(f"{label} must be zero or more, got {value}")
        self.home = Path(home)
        self.preempt_every_s = preempt_every_s
        self.notice_s = notice_s
        self.rebalance_lead_s = rebalance_lead_s
        self.seed = seed
        self.spot_price_usd_per_hour = spot_price_usd_per_hour
        self.on_demand_price_usd_per_hour = on_demand_price_usd_per_hour
        self.gpus = gpus
        self.cpus = cpus
        self.spot_availability = spot_availability
        self.spot_price_changes = tuple(sorted(spot_price_changes, key=lambda point: point.time))
        self.capacity = dict(capacity or {})
        self._clock = clock
        # Hosts this object started: kept only to reap them, so none lingers as a zombie while we live.
        self._hosts: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------ primitives

    def offers(self, request: OfferRequest) -> list[Offer]:
        """One offer per requested instance type (``local`` when none is named), in zone ``local`` at the configured price.

        No spot offer while the spot availability trace (if any) says there is no capacity.
        """
        if request.market is Market.SPOT and self.spot_availability and not self.spot_availability.available_at(self._clock()):
            return []
        price = self._spot_price_at(self._clock()) if request.market is Market.SPOT else self.on_demand_price_usd_per_hour
        return [
            Offer(self.name, instance_type, ZONE, request.market, price, self.on_demand_price_usd_per_hour, self.gpus)
            for instance_type in request.instance_types or (DEFAULT_INSTANCE_TYPE,)
        ]

    def price_history(self, offer: Offer, start: float, end: float) -> tuple[PricePoint, ...]:
        """As EC2 answers: the price in effect at ``start`` and every change until ``end``; on-demand prices never change."""
        if offer.market is Market.ON_DEMAND or not self.spot_price_changes:
            return constant_price(offer.price_usd_per_hour, start)
        changes = tuple(point for point in self.spot_price_changes if start < point.time <= end)
        return (PricePoint(start, self._spot_price_at(start)), *changes)

    def _spot_price_at(self, when: float) -> float:
        return price_at((PricePoint(0.0, self.spot_price_usd_per_hour), *self.spot_price_changes), when)

    def rendezvous_port(self) -> int:
        """A port free on this machine now: every gang shares the loopback address, so each needs its own port."""
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((LOOPBACK, 0))
            return int(probe.getsockname()[1])

    @property
    def priors(self) -> ProviderPriors:
        """A process start for a restart, and the configured mean training time between injected interruptions."""
        return ProviderPriors(restart_overhead_s=RESTART_OVERHEAD_PRIOR_S, spot_s_between_preemptions=self.preempt_every_s or None)

    def _start(self, offer: Offer, request: LaunchRequest) -> Instance:
        """Start a host running ``request.agent_command``; a launch of the same token that wins a race returns its instance."""
        if not request.agent_command:
            raise ProviderError(f"launch of {request.job!r} attempt {request.attempt}: the agent command is empty")
        instance_id = instance_id_for(request.token)
        self._check_capacity(offer, instance_id)
        spec = InstanceSpec(
            instance_id=instance_id,
            token=request.token,
            job=request.job,
            attempt=request.attempt,
            offer=offer,
            agent_command=tuple(request.agent_command),
            env={**self._thread_limits(), **request.env, **self._gang_env(request)},
            # The directory spotrun was started from, as `python train.py` would expect on this machine.
            workdir=request.workdir or os.getcwd(),
            tags=self.instance_tags(request),  # what an EC2 instance would carry, kept with the instance
            launched_at=self._clock(),
            interrupt_after_s=self._interrupt_after_s(offer, request),
            notice_s=self.notice_s,
            rebalance_lead_s=self.rebalance_lead_s,
            capacity_notice_at=self._capacity_notice_at(offer),
        )
        files = InstanceFiles.of(self.home, instance_id)
        if not _claim(files, spec):
            existing = self.launched_under(request.token, offer)
            assert existing is not None  # a claimed folder always holds its spec
            return existing
        self._start_host(files, spec)
        return Instance(instance_id, offer, spec.launched_at, LOOPBACK)

    def _find_launched(self, token: str, offer: Offer) -> Instance | None:
        """The instance whose folder the token names, with the offer it was launched on (not ``offer``, a repeat's)."""
        found = self._lookup(instance_id_for(token))
        if found is None:
            return None
        spec = found[1]
        return Instance(spec.instance_id, spec.offer, spec.launched_at, LOOPBACK)

    def poll(self, instance_ids: Sequence[str]) -> dict[str, InstanceStatus]:
        """Each instance's state from its files; a dead host that recorded no end is reported (and recorded) HOST_LOST."""
        self._reap()
        return {instance_id: self._status(instance_id) for instance_id in instance_ids}

    def terminate(self, instance_ids: Sequence[str]) -> None:
        """SIGTERM each host and wait (bounded) until each instance is recorded terminated."""
        self._reap()
        stopping: list[tuple[InstanceFiles, HostState]] = []
        for instance_id in instance_ids:
            found = self._lookup(instance_id)
            if found is None:
                continue  # nothing by that id runs here, so nothing to stop
            files, spec = found
            # A launch in another process may still be bringing the host up: let it, then stop it.
            state = _poll_until(functools.partial(self._current_state, files, spec), LAUNCH_TIMEOUT_S + 1)
            if state is None:
                raise ProviderError(f"local instance {instance_id} is still starting; terminate it again in a few seconds")
            if state.state is InstanceState.RUNNING:
                _signal_host(state, signal.SIGTERM)
                stopping.append((files, state))
        deadline = time.monotonic() + TERMINATE_TIMEOUT_S
        for files, state in stopping:
            self._await_termination(files, state, deadline)

    # ------------------------------------------------------ fault injection

    def interrupt(self, instance_id: str, notice_s: float | None = None) -> None:
        """Serve the interruption notice now; the agent group is killed ``notice_s`` later (default: the configured notice)."""
        notice_s = self.notice_s if notice_s is None else notice_s
        if notice_s < 0:
            raise ValueError(f"notice_s must be zero or more, got {notice_s}")
        files, state = self._running(instance_id, "interrupt")
        if state.notice_at is not None:
            return  # already being taken back; EC2 sends one notice per instance
        write_json_atomic(files.control, {"action": "interrupt", "notice_s": notice_s})
        _signal_host(state, signal.SIGUSR1)

        def acknowledged() -> bool | None:
            current = read_state(files)
            if current is not None and (current.notice_at is not None or current.state is InstanceState.TERMINATED):
                return True
            return None if _host_alive(state) else False

        if _poll_until(acknowledged, INTERRUPT_ACK_TIMEOUT_S):
            return
        raise ProviderError(
            f"local instance {instance_id} did not acknowledge the interruption within {INTERRUPT_ACK_TIMEOUT_S:g}s "
            f"(its host died or hangs); see {files.host_log}"
        )

    def kill_without_notice(self, instance_id: str) -> None:
        """SIGKILL the host and the agent group together, recording nothing: what a crashed machine looks like."""
        _, state = self._running(instance_id, "kill")
        _signal_host(state, signal.SIGKILL)
        _kill_agent_group(state)
        # Returns once the host is gone, so the next poll reports the loss.
        _wait_for_host_exit(state, TERMINATE_TIMEOUT_S)
        self._reap()

    def agent_log_path(self, instance_id: str) -> Path:
        """The file holding the agent's output."""
        found = self._lookup(instance_id)
        if found is None:
            raise InstanceNotFoundError(f"no local instance {instance_id} under {instances_dir(self.home)}")
        return found[0].agent_log

    # -------------------------------------------------------------- private

    def _check_capacity(self, offer: Offer, instance_id: str) -> None:
        """CapacityError when the instance type already has as many live instances as ``capacity`` allows."""
        limit = self.capacity.get(offer.instance_type)
        if limit is None or not instances_dir(self.home).exists():
            return
        live = 0
        for folder in instances_dir(self.home).iterdir():
            if folder.name.startswith("."):
                continue  # a launch being claimed right now
            spec, state = read_spec(InstanceFiles(folder)), read_state(InstanceFiles(folder))
            if folder.name == instance_id:
                return  # a launch seen before: idempotent, not a new instance
            if (
                spec is not None
                and spec.offer.instance_type == offer.instance_type
                and (state is None or state.state is not InstanceState.TERMINATED)
            ):
                live += 1
        if live >= limit:
            raise CapacityError(f"InsufficientInstanceCapacity: the local cloud has {limit} {offer.instance_type} and all are in use")

    def _gang_env(self, request: LaunchRequest) -> dict[str, str]:
        """A gang member's rank and rendezvous as the agent's environment, and loopback for all its collectives (``cloud.rendezvous``).

        Every node of a local gang is on this machine, so nothing they say to each other needs to leave it.
        """
        return {} if request.gang is None else {**request.gang.env(), **local_gang_env()}

    def _thread_limits(self) -> dict[str, str]:
        """An emulated instance's CPUs, as the thread pools of what it runs see them.

        Instances are processes sharing this machine: left to its default, torch starts a thread per
        core in each, and on a machine that is busy (another instance, anything else) its parallel
        regions wait for threads that are not scheduled: on 2 cores with one taken, 2 intra-op
        threads trained the digits MLP 2.2x slower than 1, and 10x slower with two others busy.
        """
        return {"OMP_NUM_THREADS": str(self.cpus), "MKL_NUM_THREADS": str(self.cpus)}

    def _interrupt_after_s(self, offer: Offer, request: LaunchRequest) -> float | None:
        """The injected lifetime of a spot instance: seconds of training, counted from the attempt's first step."""
        if offer.market is not Market.SPOT or not self.preempt_every_s:
            return None
        # Seeded by job and attempt: each attempt draws its own time, and the same spec gives the
        # same schedule on every machine and every run (a demo can count on its preemptions).
        return random.Random(f"{self.seed}:{request.job}:{request.attempt}").expovariate(1.0 / self.preempt_every_s)

    def _capacity_notice_at(self, offer: Offer) -> float | None:
        """When the spot trace's next loss of capacity serves a spot instance its notice: ``notice_s`` before the loss."""
        if offer.market is not Market.SPOT or self.spot_availability is None:
            return None
        now = self._clock()
        lost_at = self.spot_availability.next_loss_after(now)
        return None if lost_at is None else max(now, lost_at - self.notice_s)

    def _start_host(self, files: InstanceFiles, spec: InstanceSpec) -> None:
        """Spawn the detached host and wait until it has recorded its first state."""
        ready_read, ready_write = os.pipe()
        try:
            with open(files.host_log, "ab") as host_log:
                self._hosts[spec.instance_id] = subprocess.Popen(
                    [sys.executable, "-m", "cloud.local_host", str(files.root), "--ready-fd", str(ready_write)],
                    pass_fds=(ready_write,),
                    start_new_session=True,  # outlives us, and no Ctrl-C meant for the controller reaches it
                    stdin=subprocess.DEVNULL,
                    stdout=host_log,
                    stderr=subprocess.STDOUT,
                    cwd=files.root,
                )
        except OSError as error:
            os.close(ready_read)
            self._abandon(files)
            raise ProviderError(f"cannot start the host of local instance {spec.instance_id}: {error}") from error
        finally:
            os.close(ready_write)
        # The host writes one byte once state.json exists; its death closes the pipe at once.
        try:
            readable, _, _ = select.select([ready_read], [], [], LAUNCH_TIMEOUT_S)
            ready = bool(readable) and os.read(ready_read, 1) == b"1"
        finally:
            os.close(ready_read)
        if not ready:
            host = self._hosts.pop(spec.instance_id)
            host.kill()
            host.wait()
            self._abandon(files)
            raise ProviderError(
                f"local instance {spec.instance_id} did not start within {LAUNCH_TIMEOUT_S:g}s "
                f"(host exit code {host.returncode}); {files.host_log} ends with:\n{_tail(files.host_log)}"
            )

    def _abandon(self, files: InstanceFiles) -> None:
        """Record a launch that failed as lost, so a repeat of it and every poll report it ended."""
        state = read_state(files) or HostState(state=InstanceState.RUNNING)
        if state.state is not InstanceState.TERMINATED:
            self._record_lost(files, state, ended_at=self._clock())

    def _lookup(self, instance_id: str) -> tuple[InstanceFiles, InstanceSpec] | None:
        """The files and spec of ``instance_id``; None for an id that was never launched here."""
        if not _INSTANCE_ID.fullmatch(instance_id):
            return None  # also keeps ids like "../x" from naming paths outside the home
        files = InstanceFiles.of(self.home, instance_id)
        spec = read_spec(files)
        return None if spec is None else (files, spec)

    def _status(self, instance_id: str) -> InstanceStatus:
        found = self._lookup(instance_id)
        if found is None:
            now = self._clock()
            return InstanceStatus(instance_id, InstanceState.TERMINATED, launched_at=now, ended_at=now, end_reason=EndReason.HOST_LOST)
        files, spec = found
        state = self._current_state(files, spec)
        if state is None:
            return InstanceStatus(instance_id, InstanceState.PENDING, launched_at=spec.launched_at)
        return state.status(spec)

    def _current_state(self, files: InstanceFiles, spec: InstanceSpec) -> HostState | None:
        """``state.json``, after recording the loss of a host that died without writing its end; None while starting."""
        state = read_state(files)
        if state is None:
            if self._clock() - spec.launched_at < LAUNCH_TIMEOUT_S:
                return None
            # The launcher died before the host came up: the instance never ran.
            return self._record_lost(files, HostState(state=InstanceState.RUNNING), _last_seen_alive(files, spec.launched_at))
        if state.state is InstanceState.TERMINATED or _host_alive(state):
            return state
        # The host writes its end before it exits: read again, it may have ended between the two looks.
        state = read_state(files)
        assert state is not None
        if state.state is InstanceState.TERMINATED:
            return state
        return self._record_lost(files, state, _last_seen_alive(files, state.started_at or spec.launched_at))

    def _record_lost(self, files: InstanceFiles, state: HostState, ended_at: float) -> HostState:
        """The host is gone without a word: nothing of the instance may keep running, and its end is recorded once."""
        _kill_agent_group(state)
        ended = state.ended(EndReason.HOST_LOST, ended_at)
        write_state(files, ended)
        _append_line(
            files.host_log, f"provider: host gone without recording an end; agent group killed; recorded {EndReason.HOST_LOST.value}"
        )
        return ended

    def _await_termination(self, files: InstanceFiles, state: HostState, deadline: float) -> None:
        if not _wait_for_host_exit(state, deadline - time.monotonic()):
            # A host that ignores its own SIGTERM gets no more chances; nothing may outlive terminate().
            _signal_host(state, signal.SIGKILL)
            _wait_for_host_exit(state, TERMINATE_TIMEOUT_S)
        self._reap()
        final = read_state(files)
        if final is None or final.state is not InstanceState.TERMINATED:
            _kill_agent_group(state)
            write_state(files, state.ended(EndReason.TERMINATED_BY_USER, self._clock()))
            _append_line(files.host_log, "provider: host did not record its termination; agent group killed")

    def _running(self, instance_id: str, action: str) -> tuple[InstanceFiles, HostState]:
        found = self._lookup(instance_id)
        if found is None:
            raise InstanceNotFoundError(f"no local instance {instance_id} under {instances_dir(self.home)}")
        files, spec = found
        state = self._current_state(files, spec)
        if state is None or state.state is not InstanceState.RUNNING:
            described = "starting" if state is None else f"terminated ({state.end_reason.value if state.end_reason else 'unknown'})"
            raise ProviderError(f"cannot {action} local instance {instance_id}: it is {described}, not running")
        return files, state

    def _reap(self) -> None:
        for instance_id, host in list(self._hosts.items()):
            if host.poll() is not None:
                del self._hosts[instance_id]


def _claim(files: InstanceFiles, spec: InstanceSpec) -> bool:
    """Create the instance's folder with its spec in one step; False when the token was launched before.

    The spec is written into a private folder that is then renamed into place: rename fails when
    the target exists, so of two launches with one token exactly one wins, and the folder is
    never seen without its spec.
    """
    parent = files.root.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.instance_id}-", dir=parent))  # 0700: the env may hold secrets
    write_json_atomic(staging / files.spec.name, spec.to_json())
    try:
        os.rename(staging, files.root)
    except OSError as error:
        shutil.rmtree(staging)
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            return False
        raise
    return True


def _poll_until(predicate: Callable[[], T | None], timeout_s: float) -> T | None:
    """The first non-None value of ``predicate``, or None after ``timeout_s``.

    What another process writes to a file raises no event the stdlib can wait on, hence polling.
    """
    deadline = time.monotonic() + timeout_s
    while (value := predicate()) is None and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    return value


def _host_alive(state: HostState) -> bool:
    return state.host_pid is not None and state.host_start_ticks is not None and is_alive(state.host_pid, state.host_start_ticks)


def _signal_host(state: HostState, sig: int) -> None:
    if state.host_pid is not None and state.host_start_ticks is not None:
        signal_process(state.host_pid, state.host_start_ticks, sig)


def _wait_for_host_exit(state: HostState, timeout_s: float) -> bool:
    if state.host_pid is None or state.host_start_ticks is None:
        return True
    return wait_for_exit(state.host_pid, state.host_start_ticks, timeout_s)


def _kill_agent_group(state: HostState) -> None:
    """SIGKILL everything the agent started; the recorded start time keeps a reused group id safe."""
    if state.agent_pid is not None:
        kill_group(state.agent_pid, signal.SIGKILL, state.agent_start_ticks)


def _last_seen_alive(files: InstanceFiles, not_before: float) -> float:
    """When a vanished host last showed life: the newest of its heartbeat, state and log (its own writes only)."""
    times = [not_before]
    for path in (files.heartbeat, files.state, files.host_log):
        try:
            times.append(path.stat().st_mtime)
        except FileNotFoundError:
            pass
    return max(times)


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(lines[-_HOST_LOG_TAIL_LINES:]) or "(empty)"


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as handle:
        handle.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")
