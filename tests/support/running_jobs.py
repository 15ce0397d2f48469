"""Jobs recorded RUNNING as a launch leaves them, on instances that exist and train nothing: what a controller cycle is measured on.

Each job has attempt 1 with its instance, one open ledger row, and the heartbeat its agent wrote.
A local instance is the files a local host keeps (``cloud.local_files``: its spec, and a running
state) with one idle process standing in for every instance's host, so ``LocalProvider.poll``
reads real files and finds a live host; no agent runs, so the heartbeat stays as written until
``write_heartbeat`` writes the next. Used by the controller's query-count test and by
``benchmarks/controller_cycle.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from checkpoints import signing
from checkpoints.progress import Progress, TrainingStatus
from cloud.launch_tokens import node_token
from cloud.local import instance_id_for
from cloud.local_files import HostState, InstanceFiles, InstanceSpec, write_json_atomic, write_state
from cloud.processes import process_start_ticks
from cloud.provider import InstanceState, Market, Offer
from runner.cost import ledger
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import AgentStatus, Heartbeat, JobChannel
from runner.spec.job_spec import JobSpec
from runner.state.store import Attempt, Interval, Job, JobState, StateStore

SPOT_USD_PER_HOUR = 0.45
ON_DEMAND_USD_PER_HOUR = 1.006
LAUNCHED_S_AGO = 600.0  # every instance was launched this long before it is recorded
TRAINING_AFTER_S = 20.0  # and trained from this long after its launch


@dataclass(frozen=True)
class RunningInstance:
    """The instance a job's attempt runs on, as its attempt and ledger row record it."""

    instance_id: str
    instance_type: str
    zone: str
    launched_at: float


@dataclass(frozen=True)
class RunningJob:
    """A job recorded running, and its instance."""

    job: Job
    instance: RunningInstance

    def beat(self, step: int) -> None:
        """Its agent's next heartbeat: training reached ``step``."""
        write_heartbeat(self.job, self.instance, step=step)


def attempt_token(job: Job) -> str:
    """The first attempt's idempotency token, as the controller makes it."""
    return f"{job.name}-{int(job.created_at)}-1"


def record_running(store: StateStore, spec: JobSpec, instance_of: Callable[[Job], RunningInstance]) -> RunningJob:
    """Record ``spec``'s job running attempt 1 on ``instance_of(job)``: its attempt, an open ledger row, RUNNING, its agent's heartbeat."""
    job = store.create_job(spec, spec_path=f"/jobs/{spec.name}.yaml", launched_by="tester", key=signing.new_key())
    instance = instance_of(job)
    requested_at, start = instance.launched_at - 30.0, instance.launched_at
    store.start_attempt(
        Attempt(
            job=job.name,
            number=1,
            token=attempt_token(job),
            provider=spec.resources.provider,
            instance_type=instance.instance_type,
            zone=instance.zone,
            market=Market.SPOT.value,
            price_usd_per_hour=SPOT_USD_PER_HOUR,
            on_demand_price_usd_per_hour=ON_DEMAND_USD_PER_HOUR,
            instance_id=None,
            requested_at=requested_at,
            launched_at=None,
            ended_at=None,
            end_reason=None,
            outcome=None,
            exit_code=None,
            gpus=1,
        )
    )
    interval = Interval(
        job=job.name,
        attempt=1,
        node=0,
        instance_id=instance.instance_id,
        provider=spec.resources.provider,
        instance_type=instance.instance_type,
        zone=instance.zone,
        market=Market.SPOT.value,
        gpus=1,
        price_usd_per_hour=SPOT_USD_PER_HOUR,
        on_demand_price_usd_per_hour=ON_DEMAND_USD_PER_HOUR,
        requested_at=requested_at,
        start=start,
        end=None,
        end_reason=None,
        outcome=None,
        cost_usd=None,
        on_demand_usd=None,
        prices=((start, SPOT_USD_PER_HOUR),),
        productive_at=start + TRAINING_AFTER_S,
        work_lost_s=None,
        steps_lost=None,
        team=spec.team,
        tags=dict(spec.tags),
        launched_by="tester",
    )
    store.set_launched(
        replace(interval, on_demand_usd=ledger.open_row_on_demand_usd(interval, ledger.worked_before_s([interval], interval, start)))
    )
    store.set_state(job.name, JobState.RUNNING, "attempt 1 training", attempt=1)
    running = RunningJob(store.job(job.name), instance)
    running.beat(1200)
    return running


def write_heartbeat(job: Job, instance: RunningInstance, *, step: int) -> None:
    """What a running agent of attempt 1 reports at ``step`` of a training that makes 30 steps a second."""
    now = time.time()
    progress = Progress(
        status=TrainingStatus.TRAINING,
        time=now,
        step=step,
        epoch=step // 90,
        total_steps=11520,
        loss=0.41,
        steps_per_s=30.0,
    )
    heartbeat = Heartbeat(
        status=AgentStatus.RUNNING,
        job=job.name,
        attempt=1,
        node=0,
        instance_id=instance.instance_id,
        time=now,
        training_started_at=instance.launched_at + TRAINING_AFTER_S,
        progress=progress,
    )
    JobChannel(Mailbox.at(job.checkpoint_url), job.name, job.key_bytes).write_heartbeat(heartbeat)


@contextmanager
def idle_host() -> Iterator[subprocess.Popen[bytes]]:
    """One idle process standing in for the host of every local instance: alive, so each poll finds its instance running."""
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    try:
        yield host
    finally:
        host.kill()
        host.wait()


def local_instance(home: Path, job: Job, host: subprocess.Popen[bytes]) -> RunningInstance:
    """The files of the job's running local instance of attempt 1, as ``LocalProvider.launch`` and its host write them."""
    token = node_token(attempt_token(job), 0)
    files = InstanceFiles.of(home, instance_id_for(token))
    files.root.mkdir(parents=True)
    launched_at = time.time() - LAUNCHED_S_AGO
    offer = Offer("local", "local", "local", Market.SPOT, SPOT_USD_PER_HOUR, ON_DEMAND_USD_PER_HOUR, 1)
    spec = InstanceSpec(
        instance_id=files.root.name,
        token=token,
        job=job.name,
        attempt=1,
        offer=offer,
        agent_command=("spotrun", "agent"),
        env={},
        workdir=str(home),
        tags={},
        launched_at=launched_at,
        interrupt_after_s=None,
        notice_s=5.0,
        rebalance_lead_s=5.0,
    )
    write_json_atomic(files.spec, spec.to_json())
    write_state(
        files,
        HostState(
            state=InstanceState.RUNNING,
            host_pid=host.pid,
            host_start_ticks=process_start_ticks(host.pid),
            started_at=launched_at + 1.0,
            training_started_at=launched_at + TRAINING_AFTER_S,
        ),
    )
    return RunningInstance(files.root.name, "local", "local", launched_at)
