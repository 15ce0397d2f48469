"""The controller loop: launch, watch, tell preemption from failure, relaunch, until the job ends.

Each cycle reads everything it needs from the state store, the provider (one batched poll) and
the heartbeat in object storage, so the controller can be killed at any moment and started
again: the next one carries on from the store. An attempt is recorded with its idempotency token
*before* the launch call, and a new attempt starts only once the previous instance is reported
terminated, so one job never has two instances at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from checkpoints.store import CheckpointStore
from cloud.errors import CapacityError
from cloud.provider import (
    TAG_ATTEMPT,
    TAG_JOB,
    TAG_URL,
    EndReason,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    Provider,
)
from runner.agent import HEARTBEAT_NAME
from runner.errors import JobStateError
from runner.store import Attempt, Job, JobState, Outcome, StateStore


@dataclass(frozen=True)
class ControllerSettings:
    """Timing of the loop."""

    poll_interval_s: float = 1.0


@contextmanager
def job_lock(home: Path, name: str) -> Iterator[None]:
    """Hold the right to drive ``name``: a second controller for the same job is refused, not queued.

    An OS file lock, so it is released when its holder dies, however it dies.
    """
    directory = home / "locks"
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / f"{name}.lock", "a+")  # noqa: SIM115 - held for the duration of the context
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise JobStateError(f"job {name!r} is already being driven by a controller ({holder})") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()


def classify(status: InstanceStatus, heartbeat: dict[str, Any] | None) -> tuple[Outcome, str]:
    """How an attempt whose instance is gone ended: the agent's word first, then the provider's."""
    agent_status = heartbeat.get("status") if heartbeat else None
    if agent_status == "finished":
        return Outcome.FINISHED, heartbeat.get("message") or "training finished"
    if status.end_reason is EndReason.SPOT_INTERRUPTION:
        return Outcome.PREEMPTED, "spot interruption"
    if agent_status == "preempted":
        return Outcome.PREEMPTED, heartbeat.get("message") or "preempted"
    if status.end_reason in (EndReason.HOST_LOST, EndReason.TERMINATED_BY_USER):
        return Outcome.PREEMPTED, f"instance lost without notice ({status.end_reason.value})"
    if agent_status == "failed":
        return Outcome.FAILED, heartbeat.get("message") or "training failed"
    return Outcome.FAILED, f"the agent exited with code {status.exit_code} without reporting an outcome"


class Controller:
    """Drives jobs of one provider through their lifecycle."""

    def __init__(
        self,
        store: StateStore,
        provider: Provider,
        *,
        agent_command: Callable[[Job, int], tuple[str, ...]],
        agent_env: dict[str, str] | None = None,
        settings: ControllerSettings = ControllerSettings(),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.provider = provider
        self.agent_command = agent_command
        self.agent_env = agent_env or {}
        self.settings = settings
        self.clock = clock
        self.sleep = sleep

    def drive(self, name: str, *, on_cycle: Callable[[Job], None] | None = None) -> Job:
        """Run cycles until the job reaches a final state; returns it."""
        while True:
            job = self.cycle(name)
            if on_cycle is not None:
                on_cycle(job)
            if job.state.is_final:
                return job
            self.sleep(self.settings.poll_interval_s)

    def cycle(self, name: str) -> Job:
        """One look at the job and one step towards its end."""
        return self.cycle_many([name])[0]

    def cycle_many(self, names: Sequence[str]) -> list[Job]:
        """One step for each job, with one batched provider poll for all of their instances."""
        work: list[tuple[Job, list[Attempt], Attempt | None]] = []
        for name in names:
            job = self.store.job(name)
            if job.state.is_final:
                continue
            attempts = self.store.attempts(name)
            work.append((job, attempts, attempts[-1] if attempts and attempts[-1].is_open else None))
        watched = [current.instance_id for job, _, current in work if current and current.instance_id and not job.cancel_requested]
        statuses = self.provider.poll(watched) if watched else {}
        for job, attempts, current in work:
            if job.cancel_requested:
                self._cancel(job, current)
            elif current is None:
                self._launch(job, len(attempts) + 1)
            elif current.instance_id is None:
                self._finish_launch(job, current)
            else:
                self._watch(job, current, statuses[current.instance_id])
        return [self.store.job(name) for name in names]

    # ---------------------------------------------------------------- launch

    def _launch(self, job: Job, number: int) -> None:
        """Record the attempt on the best offer, then launch, moving down the offers while capacity is short.

        When no offer has capacity the job waits for the next cycle (the provider puts exhausted
        zones aside for a while, so the next cycle's offers differ).
        """
        spec = job.spec
        offers = self.provider.offers(
            OfferRequest(instance_types=tuple(spec["resources"]["instance_types"]), market=_market(spec), nodes=1)
        )
        if not offers:
            self._wait_for_capacity(job, number)
            return
        attempt = self._attempt_on(job, number, offers[0], tried=0)
        self.store.start_attempt(attempt)
        for tried, offer in enumerate(offers):
            if tried:
                attempt = self._attempt_on(job, number, offer, tried=tried)
                self.store.retarget_attempt(attempt)
            self.store.set_state(
                job.name,
                JobState.PROVISIONING,
                f"attempt {number}: {offer.instance_type} {offer.market.value} in {offer.zone} at ${offer.price_usd_per_hour:.3f}/h",
                attempt=number,
            )
            try:
                self._finish_launch(job, attempt)
                return
            except CapacityError as error:
                self.store.event(job.name, "capacity", f"attempt {number}: {error}", attempt=number)
        self._wait_for_capacity(job, number)

    def _wait_for_capacity(self, job: Job, number: int) -> None:
        message = f"attempt {number}: no capacity in any offer for {job.spec['resources']['instance_types']}; trying again"
        if job.message != message:
            self.store.set_state(job.name, JobState.PROVISIONING, message, attempt=number)

    def _attempt_on(self, job: Job, number: int, offer: Offer, *, tried: int) -> Attempt:
        return Attempt(
            job=job.name,
            number=number,
            # A new token per offer tried: a token names one launch request, with one set of parameters.
            token=f"{job.name}-{int(job.created_at)}-{number}" + (f"-{tried}" if tried else ""),
            provider=offer.provider,
            instance_type=offer.instance_type,
            zone=offer.zone,
            market=offer.market.value,
            price_usd_per_hour=offer.price_usd_per_hour,
            on_demand_price_usd_per_hour=offer.on_demand_price_usd_per_hour,
            instance_id=None,
            requested_at=self.clock(),
            launched_at=None,
            ended_at=None,
            end_reason=None,
            outcome=None,
            exit_code=None,
        )

    def _finish_launch(self, job: Job, attempt: Attempt) -> None:
        """Launch (or, after a controller restart, re-launch idempotently with the same token)."""
        offer = Offer(
            provider=attempt.provider,
            instance_type=attempt.instance_type,
            zone=attempt.zone,
            market=Market(attempt.market),
            price_usd_per_hour=attempt.price_usd_per_hour,
            on_demand_price_usd_per_hour=attempt.on_demand_price_usd_per_hour,
        )
        request = LaunchRequest(
            job=job.name,
            attempt=attempt.number,
            token=attempt.token,
            agent_command=self.agent_command(job, attempt.number),
            env=self.agent_env,
            workdir=job.spec["workdir"],
            tags=_launch_tags(job, attempt.number),
        )
        instance = self.provider.launch(offer, request)
        self.store.set_launched(job.name, attempt.number, instance.instance_id, instance.launched_at)
        self.store.event(job.name, "launch", f"attempt {attempt.number}: instance {instance.instance_id} launched", attempt=attempt.number)

    # ----------------------------------------------------------------- watch

    def _watch(self, job: Job, attempt: Attempt, status: InstanceStatus) -> None:
        heartbeat = self._heartbeat(job, attempt)
        if heartbeat:
            self._note_heartbeat(job, attempt, heartbeat)
        if status.state is not InstanceState.TERMINATED:
            if job.state is not JobState.RUNNING and heartbeat and heartbeat.get("status") == "running":
                self.store.set_state(job.name, JobState.RUNNING, f"attempt {attempt.number} training", attempt=attempt.number)
            return
        outcome, message = classify(status, heartbeat)
        ended_at = status.ended_at if status.ended_at is not None else self.clock()
        self.store.end_attempt(
            job.name,
            attempt.number,
            ended_at=ended_at,
            end_reason=status.end_reason.value if status.end_reason else "unknown",
            outcome=outcome,
            exit_code=status.exit_code,
        )
        self.store.event(job.name, "exit", f"attempt {attempt.number} {outcome.value}: {message}", attempt=attempt.number)
        self._decide_after(job, attempt, outcome, message)

    def _heartbeat(self, job: Job, attempt: Attempt) -> dict[str, Any] | None:
        heartbeat = CheckpointStore(job.checkpoint_url).read_json(HEARTBEAT_NAME)
        if heartbeat is None or heartbeat.get("attempt") != attempt.number:
            return None
        return heartbeat

    def _note_heartbeat(self, job: Job, attempt: Attempt, heartbeat: dict[str, Any]) -> None:
        previous = job.progress
        already_noted = previous.get("attempt") == attempt.number and previous.get("interruption_at")
        if heartbeat.get("interruption_at") and not already_noted:
            self.store.event(job.name, "notice", f"attempt {attempt.number}: spot interruption notice; emergency checkpoint requested", attempt=attempt.number)
        if heartbeat != previous:
            self.store.set_progress(job.name, heartbeat)

    def _decide_after(self, job: Job, attempt: Attempt, outcome: Outcome, message: str) -> None:
        if outcome is Outcome.FINISHED:
            self.store.set_state(job.name, JobState.SUCCEEDED, message, attempt=attempt.number)
        elif outcome is Outcome.PREEMPTED:
            self.store.count(job.name, "preemptions")
            self.store.set_state(job.name, JobState.RECOVERING, f"attempt {attempt.number} preempted ({message}); relaunching", attempt=attempt.number)
        else:
            allowed = job.spec["resources"]["max_restarts_on_errors"]
            if job.restarts_on_errors < allowed:
                self.store.count(job.name, "restarts_on_errors")
                self.store.set_state(
                    job.name, JobState.RECOVERING,
                    f"attempt {attempt.number} failed ({message}); restart {job.restarts_on_errors + 1} of {allowed}",
                    attempt=attempt.number,
                )
            else:
                self.store.set_state(job.name, JobState.FAILED, message, attempt=attempt.number)

    # ---------------------------------------------------------------- cancel

    def _cancel(self, job: Job, attempt: Attempt | None) -> None:
        if attempt is not None and attempt.instance_id is not None:
            self.provider.terminate([attempt.instance_id])
            status = self.provider.poll([attempt.instance_id])[attempt.instance_id]
            self.store.end_attempt(
                job.name,
                attempt.number,
                ended_at=status.ended_at or self.clock(),
                end_reason=(status.end_reason or EndReason.TERMINATED_BY_USER).value,
                outcome=Outcome.CANCELLED,
                exit_code=status.exit_code,
            )
        elif attempt is not None:
            self.store.end_attempt(
                job.name, attempt.number, ended_at=self.clock(), end_reason="never-launched", outcome=Outcome.CANCELLED, exit_code=None
            )
        self.store.set_state(job.name, JobState.CANCELLED, "cancelled by request")


def _launch_tags(job: Job, attempt: int) -> dict[str, str]:
    """The spec's team and free-form tags (for cost allocation), and what the agent needs to find its job."""
    spec = job.spec
    tags = {str(key): str(value) for key, value in (spec.get("tags") or {}).items()}
    if spec.get("team"):
        tags["team"] = str(spec["team"])
    return {**tags, TAG_JOB: job.name, TAG_ATTEMPT: str(attempt), TAG_URL: job.checkpoint_url}


def _market(spec: dict[str, Any]) -> Market:
    market = spec["resources"]["market"]
    return Market.ON_DEMAND if market == "on-demand" else Market.SPOT
