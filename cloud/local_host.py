"""The "hypervisor" of one local instance: runs its agent, serves its metadata, and takes it away.

Run as ``python -m cloud.local_host INSTANCE_DIR``, detached by the provider into a session of its
own, so it outlives the controller that launched it, as an EC2 instance outlives the laptop that
called RunInstances. It starts the agent in a new process group, gives it an IMDSv2 endpoint,
and ends the instance the way EC2 would:

- injected interruption: rebalance recommendation ``rebalance_lead_s`` before the notice, then
  the notice announcing ``terminate_at = now + notice_s``, then SIGKILL to the agent's whole
  group at that time (``spot-interruption``). An agent that leaves early does not shorten the
  window: EC2 takes the instance back at the announced time regardless.
- when the notice is due: ``interrupt_after_s`` after the attempt's first training step, or at
  ``capacity_notice_at`` (the spot trace's loss of capacity), whichever comes first. The host
  learns of the first step from the agent: when a lifetime was drawn it names a file in
  ``SPOTRUN_TRAINING_STARTED_FILE`` (``InstanceFiles.training_started``), the agent writes the
  step's time there once its training reports progress, and the host looks for the file a few
  times a second until it appears. Start-up (interpreter, imports, resume download) thus never
  counts against the injected lifetime, however busy the machine: an attempt cannot be taken away
  by the schedule before it has trained at all. An agent that never writes the file is never
  interrupted by the schedule (the trace and ``interrupt`` still reach it).
- the agent exits with no notice served: ``agent-exited`` with its exit code.
- SIGTERM to the host (the provider's terminate): SIGTERM to the agent group, a grace period,
  SIGKILL (``terminated-by-user``).
- SIGUSR1: read ``control.json`` and serve a notice now (``LocalProvider.interrupt``).

Exit codes in ``state.json`` are the agent's own; one killed by a signal it did not get from the
host reads 128 + the signal number, as shells report it. None means the host killed the agent.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

from cloud.imds import MetadataServer
from cloud.local_files import HostState, InstanceFiles, InstanceSpec, read_json, read_spec, write_state
from cloud.processes import kill_group, process_start_ticks
from cloud.provider import EndReason, InstanceState

log = logging.getLogger("cloud.local_host")

METADATA_ENDPOINT_ENV = "SPOTRUN_IMDS_ENDPOINT"
INSTANCE_ID_ENV = "SPOTRUN_INSTANCE_ID"
TRAINING_STARTED_FILE_ENV = "SPOTRUN_TRAINING_STARTED_FILE"  # where the agent writes {"time": first step}
TRAINING_START_POLL_S = 0.2  # how often the host looks for that file until it appears
TERM_GRACE_S = 5.0  # how long a terminated agent gets between SIGTERM and SIGKILL
HEARTBEAT_INTERVAL_S = 5.0  # how stale "last seen alive" may be when a host is found dead
AGENT_NOT_STARTED_EXIT_CODE = 127  # what a shell reports for a command it could not run


class Host:
    """Supervises one instance's agent from start to termination."""

    def __init__(self, files: InstanceFiles, spec: InstanceSpec) -> None:
        """Nothing starts before ``run``."""
        self.files = files
        self.spec = spec
        pid = os.getpid()
        self._state = HostState(state=InstanceState.RUNNING, host_pid=pid, host_start_ticks=process_start_ticks(pid))
        self._terminate_requested = False
        self._control_requested = False

    def run(self, ready_fd: int | None = None) -> None:
        """Run the instance to its end; writes a byte to ``ready_fd`` once ``state.json`` exists."""
        wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Signals only set flags; the byte the interpreter writes to this pipe for each one wakes
        # the select() in the loop, so nothing polls and no signal is missed between two looks.
        signal.set_wakeup_fd(wake_write)
        signal.signal(signal.SIGTERM, self._on_terminate)
        signal.signal(signal.SIGUSR1, self._on_control)
        metadata = MetadataServer(self.spec.instance_id)
        agent: subprocess.Popen[bytes] | None = None
        try:
            agent = self._start_agent(metadata.start())
            _notify_ready(ready_fd)
            if agent is not None:
                self._supervise(agent, metadata, wake_read)
        finally:
            if self._state.state is not InstanceState.TERMINATED:
                # The host itself failed: take the agent down with it, as a crashed machine would.
                if agent is not None:
                    kill_group(agent.pid, signal.SIGKILL)
                self._record(self._state.ended(EndReason.HOST_LOST, time.time()), "host failed; agent group killed")
            metadata.close()

    def _on_terminate(self, signum: int, frame: object) -> None:
        self._terminate_requested = True

    def _on_control(self, signum: int, frame: object) -> None:
        self._control_requested = True

    def _start_agent(self, metadata_url: str) -> subprocess.Popen[bytes] | None:
        env = {**os.environ, **self.spec.env, METADATA_ENDPOINT_ENV: metadata_url, INSTANCE_ID_ENV: self.spec.instance_id}
        if self.spec.interrupt_after_s is not None:  # named only where the host waits for it
            env[TRAINING_STARTED_FILE_ENV] = str(self.files.training_started)
        else:
            env.pop(TRAINING_STARTED_FILE_ENV, None)
        with open(self.files.agent_log, "ab") as output:
            try:
                # process_group=0: the agent leads a new group, so one killpg reaches all it starts.
                agent = subprocess.Popen(
                    self.spec.agent_command,
                    env=env,
                    cwd=self.spec.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    process_group=0,
                )
            except OSError as error:
                output.write(f"spotrun local host: cannot start the agent {list(self.spec.agent_command)}: {error}\n".encode())
                now = time.time()
                state = replace(self._state, metadata_url=metadata_url, started_at=now)
                self._record(state.ended(EndReason.AGENT_EXITED, now, AGENT_NOT_STARTED_EXIT_CODE), f"agent did not start: {error}")
                return None
        self._record(
            replace(
                self._state,
                agent_pid=agent.pid,
                agent_start_ticks=process_start_ticks(agent.pid),
                metadata_url=metadata_url,
                started_at=time.time(),
            ),
            f"running: agent pid {agent.pid}, metadata at {metadata_url}",
        )
        return agent

    def _supervise(self, agent: subprocess.Popen[bytes], metadata: MetadataServer, wake_read: int) -> None:
        """Sleep until the next thing due, a signal or the agent's exit; act on it; until the instance ends."""
        spec = self.spec
        agent_exit: int | None = None  # the agent's exit code once it has ended by itself
        next_heartbeat = time.time()
        agent_fd = os.pidfd_open(agent.pid)
        try:
            while True:
                now = time.time()
                if self._awaiting_training_start():
                    self._look_for_training_start(now)
                notice_due, rebalance_due = self._notice_due(), self._rebalance_due()
                if self._terminate_requested:
                    self._end(agent, EndReason.TERMINATED_BY_USER, self._stop_agent(agent, agent_fd, agent_exit))
                    return
                if self._control_requested:
                    self._control_requested = False
                    notice_s = self._read_control()
                    if notice_s is not None and self._state.notice_at is None:
                        # EC2 may send the rebalance recommendation together with the notice.
                        if spec.rebalance_lead_s > 0 and self._state.rebalance_at is None:
                            self._recommend_rebalance(metadata, now)
                        self._serve_notice(metadata, now, notice_s)
                if rebalance_due is not None and now >= rebalance_due and self._state.rebalance_at is None:
                    self._recommend_rebalance(metadata, now)
                if notice_due is not None and now >= notice_due and self._state.notice_at is None:
                    self._serve_notice(metadata, now, spec.notice_s)
                if agent_exit is None and (agent_exit := _exit_code_if_exited(agent.pid)) is not None:
                    log.info("agent exited with code %s", agent_exit)
                terminate_at = self._state.terminate_at
                if terminate_at is not None and now >= terminate_at:
                    # The end of the notice window: EC2 takes the instance back, whatever the agent did.
                    exit_code = agent_exit if agent_exit is not None else _exit_code_if_exited(agent.pid)
                    self._end(agent, EndReason.SPOT_INTERRUPTION, exit_code)
                    return
                if agent_exit is not None and terminate_at is None:
                    self._end(agent, EndReason.AGENT_EXITED, agent_exit)
                    return
                if now >= next_heartbeat:
                    self.files.heartbeat.touch()
                    next_heartbeat = now + HEARTBEAT_INTERVAL_S
                due = [next_heartbeat, terminate_at]
                if self._state.notice_at is None:
                    due += [notice_due, rebalance_due if self._state.rebalance_at is None else None]
                    if self._awaiting_training_start():
                        due.append(now + TRAINING_START_POLL_S)
                # Once the agent has exited its pidfd stays readable; watching it then would spin.
                _wait(wake_read, agent_fd if agent_exit is None else None, min(t for t in due if t is not None))
        finally:
            os.close(agent_fd)

    def _awaiting_training_start(self) -> bool:
        """Whether the injected lifetime still waits for its clock to start (no notice has come meanwhile)."""
        return self.spec.interrupt_after_s is not None and self._state.training_started_at is None and self._state.notice_at is None

    def _notice_due(self) -> float | None:
        """When the notice is due: the injected lifetime after the first training step, or the trace's loss, if sooner."""
        due = [self.spec.capacity_notice_at]
        if self.spec.interrupt_after_s is not None and self._state.training_started_at is not None:
            due.append(self._state.training_started_at + self.spec.interrupt_after_s)
        return min((t for t in due if t is not None), default=None)

    def _rebalance_due(self) -> float | None:
        """``rebalance_lead_s`` before the notice, but not before the agent started; None without a notice due."""
        notice_due = self._notice_due()
        if notice_due is None or self.spec.rebalance_lead_s <= 0:
            return None
        assert self._state.started_at is not None
        return max(self._state.started_at, notice_due - self.spec.rebalance_lead_s)

    def _look_for_training_start(self, now: float) -> None:
        """Record the first training step once the agent has written it to ``training-started.json``.

        The agent's time is taken as given, within [agent start, now]: it is this machine's clock,
        and the file appears up to one agent poll after the step.
        """
        try:
            report = read_json(self.files.training_started)
        except (OSError, ValueError) as error:  # written atomically, so this is not a half-written file
            log.warning("unreadable %s: %s", self.files.training_started, error)
            return
        if report is None:
            return
        reported = report.get("time")
        assert self._state.started_at is not None
        started = min(now, max(self._state.started_at, float(reported))) if isinstance(reported, (int, float)) else now
        interrupt_after_s = self.spec.interrupt_after_s
        assert interrupt_after_s is not None
        self._record(
            replace(self._state, training_started_at=started),
            f"training started {started - self._state.started_at:.1f}s after the agent: "
            f"injected interruption due {interrupt_after_s:.1f}s of training later",
        )

    def _recommend_rebalance(self, metadata: MetadataServer, now: float) -> None:
        metadata.recommend_rebalance(now)
        self._record(replace(self._state, rebalance_at=now), "rebalance recommended")

    def _serve_notice(self, metadata: MetadataServer, now: float, notice_s: float) -> None:
        terminate_at = now + notice_s
        metadata.schedule_interruption(terminate_at)
        self._record(
            replace(self._state, notice_at=now, terminate_at=terminate_at), f"interruption notice served: terminating in {notice_s:g}s"
        )

    def _stop_agent(self, agent: subprocess.Popen[bytes], agent_fd: int, agent_exit: int | None) -> int | None:
        """SIGTERM the agent group and give the agent the grace period; its exit code if it left in time."""
        if agent_exit is not None:
            return agent_exit
        log.info("SIGTERM received: stopping the agent group (grace %gs)", TERM_GRACE_S)
        kill_group(agent.pid, signal.SIGTERM)
        select.select([agent_fd], [], [], TERM_GRACE_S)
        return _exit_code_if_exited(agent.pid)

    def _end(self, agent: subprocess.Popen[bytes], reason: EndReason, agent_exit: int | None) -> None:
        """Kill whatever is left of the agent's group (all of it goes with the instance, as on EC2) and record the end."""
        kill_group(agent.pid, signal.SIGKILL)
        agent.wait()
        self._record(self._state.ended(reason, time.time(), agent_exit), f"terminated: {reason.value} (agent exit code {agent_exit})")

    def _read_control(self) -> float | None:
        """The notice length of the pending interrupt request, or None (logged) when there is none."""
        try:
            request = read_json(self.files.control)
            self.files.control.unlink(missing_ok=True)
        except (OSError, ValueError) as error:
            log.warning("SIGUSR1: unreadable %s: %s", self.files.control, error)
            return None
        notice_s = request.get("notice_s") if request else None
        if not request or request.get("action") != "interrupt" or not isinstance(notice_s, (int, float)) or notice_s < 0:
            log.warning("SIGUSR1 without a valid interrupt request in %s: %r", self.files.control, request)
            return None
        return float(notice_s)

    def _record(self, state: HostState, message: str) -> None:
        self._state = state
        write_state(self.files, state)
        log.info("%s", message)


def _wait(wake_read: int, agent_fd: int | None, until: float) -> None:
    """Sleep until ``until``, a signal (a byte on ``wake_read``) or the agent's exit, whichever comes first."""
    watched = [wake_read] if agent_fd is None else [wake_read, agent_fd]
    readable, _, _ = select.select(watched, [], [], max(0.0, until - time.time()))
    if wake_read in readable:
        os.read(wake_read, 512)


def _exit_code_if_exited(pid: int) -> int | None:
    """The exit code of our child ``pid`` if it has ended, without reaping it.

    Not reaping keeps the process group's id held by the zombie, so the killpg that follows
    cannot hit a stranger that reused the number.
    """
    result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    if result is None:
        return None
    if result.si_code == os.CLD_EXITED:
        return result.si_status
    return 128 + result.si_status


def _notify_ready(ready_fd: int | None) -> None:
    """Tell the launching provider that ``state.json`` exists; fine if it is gone already."""
    if ready_fd is None:
        return
    try:
        os.write(ready_fd, b"1")
    except BrokenPipeError:
        pass
    finally:
        os.close(ready_fd)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m cloud.local_host INSTANCE_DIR``."""
    parser = argparse.ArgumentParser(prog="python -m cloud.local_host", description="Run one local spotrun instance.")
    parser.add_argument("instance_dir", type=Path, help="the instance's folder, holding instance.json")
    parser.add_argument("--ready-fd", type=int, help="a pipe to write one byte to once state.json exists")
    args = parser.parse_args(argv)
    files = InstanceFiles(args.instance_dir)
    logging.basicConfig(filename=files.host_log, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    spec = read_spec(files)
    if spec is None:
        parser.error(f"{files.spec} does not exist: the provider writes it before starting the host")
    Host(files, spec).run(args.ready_fd)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
