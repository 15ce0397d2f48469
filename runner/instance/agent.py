"""The agent that runs on every instance: starts training, watches for the interruption notice, reports.

It polls the instance metadata service (IMDSv2) for the spot interruption notice and the
rebalance recommendation; on a notice it asks training for an emergency checkpoint and leaves
with PREEMPTED_EXIT_CODE once that checkpoint is durable. It never takes the training process's
exit code 0 for success: "finished" means the callback reported that training reached its end.
Object storage is its only channel to the controller (``runner.instance.protocol``): a heartbeat and the
log go next to the checkpoints. It runs the spec its launch names by digest, signs what it writes
with the job's key, and ignores stop requests and spending horizons the key did not sign.

A budgeted job's instance runs only as long as its controller's spending horizon
(``SpendingHorizon``) allows: when the grant lapses unrenewed (the controller died, the laptop
was closed), the agent asks training for a checkpoint and a stop, ends it if it does not stop
in time, and leaves, and the instance shuts down with it.

It also notes when this attempt's training first made progress (``training_started_at`` in the
heartbeat: the time of the first progress report, which the callback writes right after the first
step; nodes of a gang other than rank 0 take rank 0's from its heartbeat). Where the instance asks
for it in ``SPOTRUN_TRAINING_STARTED_FILE`` (the local provider's host, whose injected interruptions
count from there), that time is also written to that file, once.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from checkpoints import environment, signing
from checkpoints.control import CHECKPOINT, STOP, ControlWriter, write_json_atomically
from checkpoints.progress import Progress, TrainingStatus, read_progress
from cloud.imds import MetadataClient
from cloud.local_host import TRAINING_STARTED_FILE_ENV
from cloud.provider import RENDEZVOUS_ENV, GangMember, Rendezvous
from cloud.rendezvous import GangRendezvous, hold_gang_rendezvous
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import (
    JOB_NAME,
    AgentStatus,
    Heartbeat,
    JobChannel,
    LaunchCredentials,
    ProtocolError,
    SpecTamperedError,
    SpendingHorizon,
    StopRequest,
    read_spec,
)
from runner.spec.job_spec import stored_form

log = logging.getLogger(__name__)

FAILED_EXIT_CODE = 1
REFUSED_EXIT_CODE = 3  # the spec in the prefix is not the launch's: nothing ran
DEFAULT_METADATA_ENDPOINT = "http://169.254.169.254"
HORIZON_FIRST_GRANT_S = 60.0  # how long a budgeted attempt may run before it has seen its first spending horizon


# The last line of a Python traceback: "ValueError: ...", "lightning.fabric...MisconfigurationException: ...".
_ERROR_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception)(?::\s.*)?$")
_LOG_TAIL_BYTES = 64 * 1024


def last_error_line(log_file: Path) -> str | None:
    """The exception a failed training process ended with, from its log: what the user needs first."""
    try:
        with open(log_file, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - _LOG_TAIL_BYTES))
            tail = handle.read().decode(errors="replace")
    except OSError:
        return None
    errors = [line.strip() for line in tail.splitlines() if _ERROR_LINE.match(line.strip())]
    return errors[-1][:300] if errors else None


def log_name(attempt: int, node: int = 0) -> str:
    """Where an attempt's log goes under ``_spotrun/``: sortable by attempt, then node (rank 0's has no suffix)."""
    return f"logs/attempt-{attempt:04d}.log" if node == 0 else f"logs/attempt-{attempt:04d}-node-{node}.log"


@dataclass(frozen=True)
class AgentSettings:
    """How often the agent looks and reports: under a second locally, 5 s on EC2."""

    checkpoint_url: str
    attempt: int
    node: int = 0  # rank of this instance in its gang
    rendezvous: Rendezvous | None = None  # where this node's training meets the gang's, as its launch named it; None: one instance
    credentials: LaunchCredentials | None = None  # None: launched by a spotrun before digests and keys
    metadata_endpoint: str = DEFAULT_METADATA_ENDPOINT
    poll_interval_s: float = 5.0
    heartbeat_interval_s: float = 5.0


class Agent:
    """Runs one attempt of a job on this instance."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.mailbox = Mailbox.at(settings.checkpoint_url)
        credentials = settings.credentials
        self.job = read_spec(self.mailbox, credentials)
        self.key = credentials.key_bytes if credentials else None
        self.channel = JobChannel(self.mailbox, self.job.name, self.key)
        budget = self.job.budget
        self.budgeted = budget.max_usd is not None and "horizon_s" in budget.model_fields_set  # specs from before horizons have none
        self.scratch = Path(tempfile.mkdtemp(prefix=f"spotrun-{self.job.name}-{settings.attempt}-"))
        self.control = ControlWriter(self.scratch / "control.json")
        self.progress_file = self.scratch / "progress.json"
        self._warned_progress = False
        self.log_file = self.scratch / "train.log"
        self.metadata = MetadataClient(settings.metadata_endpoint)
        self.interruption_at: float | None = None
        self.stop_reason: str | None = None
        self._rebalance_seen = False
        self._last_heartbeat = 0.0
        self.training_started_at: float | None = None
        started_file = os.environ.get(TRAINING_STARTED_FILE_ENV)
        self._training_started_file = Path(started_file) if started_file else None
        self._started = time.time()
        self._horizon: SpendingHorizon | None = None  # the newest authentic grant for this attempt
        self._horizon_seen_at = 0.0
        self._end_training_at: float | None = None  # set when a lapsed horizon's stop must happen by then
        self._rendezvous = GangRendezvous({})  # a local gang's loopback-only store, held by rank 0's agent while training runs

    def run(self) -> int:
        """Train until finished, preempted or failed; returns the agent's exit code. The scratch folder goes with it.

        A SIGTERM (the instance being terminated or shut down) reaches training too, in the same
        process group. The agent waits for training to end, uploads its log, removes its scratch
        folder, and then dies of the signal after all, so that its end reads as the kill it was.
        """
        terminated: list[int] = []
        previous = signal.signal(signal.SIGTERM, lambda signum, _: terminated.append(signum))
        try:
            process = self._start_training()
            self._note(f"attempt {self.settings.attempt}: training started (pid {process.pid})")
            self._heartbeat(AgentStatus.RUNNING, force=True)
            while (exit_code := process.poll()) is None:
                self._watch_training_start()
                self._watch_metadata()
                self._watch_stop_request()
                self._watch_horizon(process)
                self._heartbeat(AgentStatus.RUNNING, force=bool(terminated))
                time.sleep(self.settings.poll_interval_s)
            if terminated:
                self._note(f"terminated; training ended (exit code {exit_code})")
                self._heartbeat(AgentStatus.RUNNING, force=True)
                return 128 + signal.SIGTERM
            status, message, agent_code = self._outcome(exit_code)
            self._note(message)
            self._heartbeat(status, force=True, exit_code=exit_code, message=message)
            return agent_code
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._rendezvous.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            if terminated:
                os.kill(os.getpid(), signal.SIGTERM)  # the default action now: end as killed

    def _start_training(self) -> subprocess.Popen[bytes]:
        train = self.job.train
        checkpoint = self.job.checkpoint
        env = dict(os.environ)
        env.update(
            {
                environment.CHECKPOINT_URL: self.settings.checkpoint_url,
                environment.CHECKPOINT_KEEP: str(checkpoint.keep),
                environment.CONTROL_FILE: str(self.control.path),
                environment.PROGRESS_FILE: str(self.progress_file),
                environment.JOB_NAME: self.job.name,
                environment.ATTEMPT: str(self.settings.attempt),
                signing.KEY_ENV: self.key.hex() if self.key else "",
                "PYTHONUNBUFFERED": "1",
                # `python` in a command line means the interpreter spotrun itself runs on.
                "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
            }
        )
        env.update(self._gang_env())
        if checkpoint.keep_every:
            env[environment.CHECKPOINT_KEEP_EVERY] = str(checkpoint.keep_every)
        if checkpoint.every_steps:
            env[environment.CHECKPOINT_EVERY_STEPS] = str(checkpoint.every_steps)
        else:
            env[environment.CHECKPOINT_EVERY] = f"{checkpoint.every_s}s"
        if train.command:
            argv = ["/bin/sh", "-c", train.command]
        else:
            job_file = self.scratch / JOB_NAME
            job_file.write_text(json.dumps(stored_form(self.job)))
            argv = [sys.executable, "-m", "runner.instance.train_worker", str(job_file), str(self.scratch / "trainer")]
        output = open(self.log_file, "ab")  # handed to the child, closed with it
        try:
            return subprocess.Popen(argv, cwd=self.job.workdir, env=env, stdout=output, stderr=subprocess.STDOUT)
        finally:
            output.close()

    def _gang_env(self) -> dict[str, str]:
        """What torch.distributed (and a command-mode script) needs on each node of a gang; nothing for one instance.

        The rendezvous is the one this node's launch named (``GangMember.joining`` says where each rank connects).
        """
        nodes = self.job.resources.nodes
        if nodes == 1:
            return {}
        if self.settings.rendezvous is None:
            raise ValueError(f"node {self.settings.node} of a {nodes}-node job started without a rendezvous ({RENDEZVOUS_ENV})")
        member = GangMember(self.settings.node, nodes, self.settings.rendezvous)
        self._rendezvous = hold_gang_rendezvous(member)
        return {
            **self._rendezvous.env,
            "NODE_RANK": str(member.node),
            "MASTER_ADDR": member.rendezvous.address,
            "MASTER_PORT": str(member.rendezvous.port),
            "WORLD_SIZE": str(nodes * self.job.resources.devices),
        }

    def _progress(self) -> Progress | None:
        """Training's newest progress report; None before the first, and for one that does not fit the contract (warned once).

        The training process writes the file; whatever it holds must not end the agent that watches it.
        """
        try:
            return read_progress(self.progress_file)
        except ValueError as error:
            if not self._warned_progress:
                log.warning("ignoring the progress report: %s", error)
                self._warned_progress = True
            return None

    def _watch_training_start(self) -> None:
        """Note the first training step of this attempt, and tell the instance's host if it asked."""
        if self.training_started_at is not None:
            return
        if self.settings.node == 0:
            progress = self._progress()
            # The callback's first report comes right after the first step; its time is when it wrote it.
            started = progress.time if progress is not None and progress.status is TrainingStatus.TRAINING else None
        elif self._training_started_file is not None:  # rank 0's agent noted it; read it only where someone waits for it
            try:
                heartbeat = self.channel.read_heartbeat(0)
            except Exception as error:  # the next poll retries (a forged one is ignored the same way)
                log.warning("could not read rank 0's heartbeat: %s", error)
                return
            started = heartbeat.training_started_at if heartbeat is not None and heartbeat.attempt == self.settings.attempt else None
        else:
            return
        if started is None:
            return
        self.training_started_at = started
        self._note(f"training made its first step ({time.time() - self.training_started_at:.1f}s ago)")
        if self._training_started_file is not None:
            try:
                write_json_atomically(self._training_started_file, {"time": self.training_started_at, "attempt": self.settings.attempt})
            except OSError as error:  # only an emulated instance asks; training goes on regardless
                log.warning("could not write %s: %s", self._training_started_file, error)
        self._heartbeat(AgentStatus.RUNNING, force=True)

    def _watch_metadata(self) -> None:
        if self.interruption_at is None:
            notice = self.metadata.interruption()
            if notice is not None:
                self.interruption_at = notice.timestamp()
                self.control.request(STOP, deadline=self.interruption_at, reason="spot interruption notice")
                self._note(f"spot interruption notice: instance goes at {notice.isoformat()}; emergency checkpoint requested")
                self._tell_the_gang(f"node {self.settings.node} got a spot interruption notice")
                self._heartbeat(AgentStatus.RUNNING, force=True)
                return
        if not self._rebalance_seen and self.interruption_at is None and self.metadata.rebalance() is not None:
            self._rebalance_seen = True
            self.control.request(CHECKPOINT, reason="rebalance recommendation")
            self._note("rebalance recommendation: checkpoint requested")

    def _tell_the_gang(self, reason: str) -> None:
        """Ask every other node of the gang, through the bucket, to take the same emergency checkpoint now.

        The training's own collective would carry the stop to them at the next step too; the
        bucket also reaches nodes whose collective is stuck or slow, and the controller.
        """
        if self.job.resources.nodes == 1:
            return
        try:
            self.channel.write_stop(StopRequest(attempt=self.settings.attempt, kind="gang", reason=reason, time=time.time()))
        except Exception as error:  # the collective still carries the stop
            log.warning("could not tell the gang: %s", error)

    def _watch_stop_request(self) -> None:
        """The controller's request to checkpoint and stop, read from object storage: no inbound port needed."""
        if self.stop_reason is not None or self.interruption_at is not None:
            return
        try:
            request = self.channel.read_stop()
        except ProtocolError as error:  # another job's (or a damaged) request: not this job's to obey
            log.warning("%s", error)
            return
        except Exception as error:  # storage trouble must never stop training; the next poll retries
            log.warning("could not read the stop request: %s", error)
            return
        if request is None or request.attempt != self.settings.attempt:
            return
        self._stop(request.reason or "the controller asked", f"stop requested by the controller ({request.reason}); checkpointing")

    def _stop(self, reason: str, note: str) -> None:
        self.stop_reason = reason
        self.control.request(STOP, reason=reason)
        self._note(note)
        self._heartbeat(AgentStatus.RUNNING, force=True)

    def _watch_horizon(self, process: subprocess.Popen[bytes]) -> None:
        """A budgeted attempt runs while its controller keeps renewing the spending horizon; past it, stop, then end training."""
        if not self.budgeted:
            return
        now = time.time()
        if self._end_training_at is not None:
            if now >= self._end_training_at:
                self._note("training did not stop in the time the lapsed spending horizon gave it; ending it")
                process.terminate()
                self._end_training_at = now + 30.0  # and again, until it is gone
            return
        try:
            granted = self.channel.read_horizon()
        except ProtocolError as error:  # a forged grant extends nothing; the last authentic one stands
            log.warning("%s", error)
            granted = None
        except Exception as error:  # unreadable now: the grant already held still runs out on time
            log.warning("could not read the spending horizon: %s", error)
            granted = None
        if granted is not None and granted.attempt == self.settings.attempt and granted != self._horizon:
            self._horizon, self._horizon_seen_at = granted, now
        if self._horizon is None:
            lapsed = now - self._started >= HORIZON_FIRST_GRANT_S
            why = f"no spending horizon from the controller within {HORIZON_FIRST_GRANT_S:.0f}s"
            grace_s = HORIZON_FIRST_GRANT_S
        else:
            lapsed = self._horizon.lapsed(now, self._horizon_seen_at)
            why = f"the controller's spending horizon ran out unrenewed ({self._horizon.reason})"
            grace_s = self._horizon.stop_grace_s
        if not lapsed or self.stop_reason is not None or self.interruption_at is not None:
            return
        self._end_training_at = now + grace_s
        self._stop(f"spending horizon lapsed: {why}", f"{why}: no controller is watching the budget; checkpointing and stopping")

    def _outcome(self, exit_code: int) -> tuple[AgentStatus, str, int]:
        progress = self._progress()
        checkpoint_step = progress.checkpoint_step if progress is not None else None
        if exit_code == environment.PREEMPTED_EXIT_CODE and self.stop_reason is not None and self.interruption_at is None:
            return (
                AgentStatus.STOPPED,
                f"checkpoint at step {checkpoint_step} is durable; stopped ({self.stop_reason})",
                environment.PREEMPTED_EXIT_CODE,
            )
        if exit_code == environment.PREEMPTED_EXIT_CODE:
            return (
                AgentStatus.PREEMPTED,
                f"emergency checkpoint at step {checkpoint_step} is durable; leaving",
                environment.PREEMPTED_EXIT_CODE,
            )
        if exit_code == 0 and progress is not None and progress.status is TrainingStatus.FINISHED:
            return AgentStatus.FINISHED, f"training finished at step {progress.step}", 0
        if self._end_training_at is not None and self.interruption_at is None:  # the horizon lapsed; training had to be ended
            return (
                AgentStatus.STOPPED,
                f"training ended (exit code {exit_code}) without a checkpoint after {self.stop_reason}",
                environment.PREEMPTED_EXIT_CODE,
            )
        if exit_code == 0 and self.settings.node > 0:
            return AgentStatus.EXITED, "training exited 0 (rank 0 reports how the gang's training ended)", 0
        if self.interruption_at is not None:
            return (
                AgentStatus.PREEMPTED,
                f"training ended (exit code {exit_code}) during the interruption notice",
                environment.PREEMPTED_EXIT_CODE,
            )
        if exit_code == 0:
            return (
                AgentStatus.FAILED,
                (
                    "training exited 0 without reaching its end (no 'finished' report from the spotrun callback; "
                    "in command mode the script must use spotrun_checkpoint())"
                ),
                FAILED_EXIT_CODE,
            )
        error = last_error_line(self.log_file)
        return AgentStatus.FAILED, f"training failed with exit code {exit_code}" + (f": {error}" if error else ""), FAILED_EXIT_CODE

    def _heartbeat(self, status: AgentStatus, *, force: bool = False, exit_code: int | None = None, message: str | None = None) -> None:
        now = time.time()
        if not force and now - self._last_heartbeat < self.settings.heartbeat_interval_s:
            return
        self._last_heartbeat = now
        heartbeat = Heartbeat(
            status=status,
            job=self.job.name,
            attempt=self.settings.attempt,
            node=self.settings.node,
            instance_id=os.environ.get("SPOTRUN_INSTANCE_ID"),
            time=now,
            training_started_at=self.training_started_at,
            interruption_at=self.interruption_at,
            stop_reason=self.stop_reason,
            exit_code=exit_code,
            message=message,
            progress=_as_of(self._progress(), now),
        )
        try:
            self.channel.write_heartbeat(heartbeat)
            self.mailbox.write_bytes(log_name(self.settings.attempt, self.settings.node), self.log_file.read_bytes())
        except Exception as error:  # storage trouble must never stop training; next beat retries
            log.warning("heartbeat upload failed: %s", error)

    def _note(self, message: str) -> None:
        """A line in the attempt's log (what `spotrun logs` shows) and on the agent's own output."""
        line = f"[spotrun agent {time.strftime('%H:%M:%S')}] {message}\n"
        with open(self.log_file, "a") as handle:
            handle.write(line)
        sys.stdout.write(line)
        sys.stdout.flush()


def refuse(settings: AgentSettings, error: SpecTamperedError) -> int:
    """Tell the controller (in a heartbeat signed with the job's key) that this instance ran nothing, and why."""
    message = str(error)
    sys.stderr.write(f"spotrun agent: {message}\n")
    credentials = settings.credentials
    if credentials is not None:
        channel = JobChannel(Mailbox.at(settings.checkpoint_url), credentials.job, credentials.key_bytes)
        heartbeat = Heartbeat(
            status=AgentStatus.REFUSED, job=credentials.job, attempt=settings.attempt, node=settings.node, time=time.time(), message=message
        )
        try:
            channel.write_heartbeat(heartbeat)
        except Exception as upload_error:  # the controller still sees the instance end with this exit code
            log.warning("could not report the refusal: %s", upload_error)
    return REFUSED_EXIT_CODE


def _as_of(progress: Progress | None, now: float) -> Progress | None:
    """The training's report as a heartbeat at ``now`` carries it: its time is the heartbeat's (they share one key)."""
    return replace(progress, time=now) if progress is not None else None
