"""The controller loop: launch, watch, tell preemption from failure, relaunch, until the job ends.

Each cycle reads everything it needs from the state store, the provider (one batched poll) and
the heartbeat in object storage, so the controller can be killed at any moment and started
again: the next one carries on from the store. An attempt is recorded with its idempotency token
*before* the launch call, and a new attempt starts only once the previous instance is reported
terminated, so one job never has two instances at once.

A controller acts only on jobs whose lease it holds (``StateStore.acquire_leases``), renewed at
the start of every cycle; a killed controller's jobs are adopted by another once its leases
expire, and the store refuses the writes of a controller that lost a lease.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from checkpoints.durations import format_duration
from checkpoints.environment import NODE_ENV, PREEMPTED_EXIT_CODE, RENDEZVOUS_ENV
from checkpoints.store import CheckpointStore
from cloud.billing import BilledInterval, interval_cost_usd, on_demand_equivalent_usd
from cloud.errors import CapacityError
from cloud.provider import (
    TAG_ATTEMPT,
    TAG_JOB,
    TAG_NODE,
    TAG_RENDEZVOUS,
    TAG_URL,
    EndReason,
    Instance,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    Provider,
)
from runner import forecast, ledger
from runner.agent import HEARTBEAT_NAME, STOP_REQUEST_NAME
from runner.errors import LeaseLostError
from runner.policy import Situation, policy_named
from runner.store import Attempt, Interval, Job, JobState, Outcome, StateStore

SPOT_CHECK_INTERVAL_S = 30.0  # how long the deadline policy trusts a look at spot availability
GANG_RETRY_MAX_S = 60.0  # the longest wait between tries to fill a partial gang
STOP_FOR_BUDGET = "budget"
STOP_FOR_MARKET = "market"
BUDGET_ALERTS_PCT = (50, 80, 100)
DEADLINE_POLICY = policy_named("auto")  # the same policy `spotrun simulate` evaluates


@dataclass(frozen=True)
class ControllerSettings:
    """Timing of the loop.

    ``stop_grace_s`` is how long an instance asked to checkpoint and stop (budget, market switch)
    has before it is terminated anyway; the budget check reserves that long at the current price.
    """

    poll_interval_s: float = 1.0
    stop_grace_s: float = 60.0
    lease_s: float = 30.0  # how long a controller's claim on a job lasts unless renewed: a killed controller's jobs wait this long

    def __post_init__(self) -> None:
        if self.lease_s <= 2 * self.poll_interval_s:
            raise ValueError(f"lease_s ({self.lease_s}s) must be more than two polling intervals ({self.poll_interval_s}s each), or leases lapse between cycles")

    @property
    def stop_reserve_s(self) -> float:
        """Running time a budget keeps back: the next polling interval, and the grace to checkpoint and stop."""
        return self.poll_interval_s + self.stop_grace_s


CONTROLLER_NAME_ENV = "SPOTRUN_CONTROLLER_NAME"


def controller_id() -> str:
    """A name for this controller that no other shares: ``$SPOTRUN_CONTROLLER_NAME`` or the host, the process, a random suffix.

    The pid and suffix keep two controllers started with one name apart (pids are reused).
    """
    return f"{os.environ.get(CONTROLLER_NAME_ENV) or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _owner_is_gone(owner: str) -> bool:
    """Whether a lease's owner is a controller process of this machine that no longer runs (killed, crashed).

    Its lease need not be waited out: `spotrun resume` after a killed `spotrun run` takes over at
    once. A controller on another machine (or given a name of its own), or a pid now reused, is
    waited for until its lease lapses.
    """
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def classify(status: InstanceStatus, heartbeat: dict[str, Any] | None, *, stop_requested: str | None = None) -> tuple[Outcome, str]:
    """How an attempt whose instance is gone ended: the agent's word first, then the provider's.

    An instance the controller itself asked to stop (``stop_requested``) and then ended, by
    itself or by a terminate after the grace period, was stopped, not preempted.
    """
    agent_status = heartbeat.get("status") if heartbeat else None
    if agent_status == "finished":
        return Outcome.FINISHED, heartbeat.get("message") or "training finished"
    if agent_status == "stopped":
        return Outcome.STOPPED, heartbeat.get("message") or "stopped"
    if stop_requested and status.end_reason is EndReason.TERMINATED_BY_USER:
        return Outcome.STOPPED, f"terminated after the stop request ({stop_requested}) without a reported checkpoint"
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
        owner: str | None = None,
    ) -> None:
        self.owner = owner or controller_id()
        self.store = store.for_controller(self.owner)
        self.provider = provider
        self.agent_command = agent_command
        self.agent_env = agent_env or {}
        self.settings = settings
        self.clock = clock
        self.sleep = sleep
        self._spot_checked: dict[tuple[str, ...], tuple[float, bool]] = {}  # instance types -> (when, any spot offer)

    def drive(self, name: str, *, on_cycle: Callable[[Job], None] | None = None) -> Job:
        """Run cycles until the job reaches a final state; returns it.

        While another controller holds the job's lease, the cycles only watch (``job.lease_owner``
        says who drives); this one takes over when that lease is released, lapses, or belonged to a
        process on this machine that is gone. The lease is given up on the way out, so a controller
        stopped by Ctrl-C hands the job over at once.
        """
        try:
            while True:
                job = self.cycle(name)
                if on_cycle is not None:
                    on_cycle(job)
                if job.state.is_final:
                    return job
                self.sleep(self.settings.poll_interval_s)
        finally:
            self.release([name])

    def release(self, names: Sequence[str]) -> None:
        """Give up this controller's leases on ``names`` (jobs it holds no lease on are left alone)."""
        self.store.release_leases(names)

    def cycle(self, name: str) -> Job:
        """One look at the job and one step towards its end."""
        return self.cycle_many([name])[0]

    def cycle_many(self, names: Sequence[str]) -> list[Job]:
        """One step for each job whose lease this controller holds, with one batched provider poll for all of their instances.

        The leases are renewed (or taken) first. A job whose lease is lost mid-cycle is left to
        its new controller; a job that reached its end gives its lease up.
        """
        held = self.store.acquire_leases(names, self.settings.lease_s, vacated=_owner_is_gone)
        renewed_at = time.monotonic()
        work: list[tuple[Job, list[Attempt], Attempt | None, list[Interval]]] = []  # each job's ledger rows, read once a cycle
        for name in names:
            job = self.store.job(name)
            if job.state.is_final or name not in held:
                continue
            attempts = self.store.attempts(name)
            current = attempts[-1] if attempts and attempts[-1].is_open else None
            work.append((job, attempts, current, self.store.intervals(name)))
        watched = [row.instance_id for job, _, current, rows in work if not job.cancel_requested for row in _of_attempt(rows, current)]
        statuses = self.provider.poll(watched) if watched else {}
        for job, attempts, current, rows in work:
            if time.monotonic() - renewed_at > self.settings.lease_s / 3:  # a long cycle (many launches) keeps its leases
                held = self.store.acquire_leases(sorted(held), self.settings.lease_s)
                renewed_at = time.monotonic()
            if job.name not in held:
                continue
            try:
                self._step(job, attempts, current, rows, statuses)
            except LeaseLostError:
                continue  # adopted by another controller while this one was stalled: its job now
        jobs = [self.store.job(name) for name in names]
        self.release([job.name for job in jobs if job.state.is_final and job.lease_owner == self.owner])
        return jobs

    def _step(
        self, job: Job, attempts: list[Attempt], current: Attempt | None, rows: list[Interval], statuses: dict[str, InstanceStatus]
    ) -> None:
        nodes = _of_attempt(rows, current)
        if job.cancel_requested:
            self._cancel(job, current, nodes)
        elif current is None:
            self._launch(job, len(attempts) + 1, rows)
        elif current.instance_id is None:
            self._finish_launch(job, current)
        else:
            self._watch(job, current, {row.node: (row, statuses[row.instance_id]) for row in nodes}, rows)

    # ---------------------------------------------------------------- launch

    def _launch(self, job: Job, number: int, intervals: list[Interval]) -> None:
        """Record the attempt on the best offer, then launch, moving down the offers while capacity is short.

        The market comes from the spec, or from the deadline policy (``market: auto``); no launch
        happens when the budget cannot pay for the next polling interval. When no offer has
        capacity the job waits for the next cycle (the provider puts exhausted zones aside for a
        while, so the next cycle's offers differ).
        """
        spec = job.spec
        instance_types = tuple(spec["resources"]["instance_types"])
        market, why = self._market_to_launch(job, intervals)
        if market is None:
            self._wait(job, number, f"attempt {number}: waiting for spot capacity ({why})")
            return
        offers = self._not_released(job, self.provider.offers(OfferRequest(instance_types=instance_types, market=market, nodes=forecast.nodes(job.spec))))
        if not offers:
            self._wait(job, number, f"attempt {number}: no {market.value} capacity in any offer for {list(instance_types)}; trying again")
            return
        if self._budget_cannot_start(job, offers[0], intervals):
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
                f"attempt {number}: {offer.instance_type} {offer.market.value} in {offer.zone} at ${offer.price_usd_per_hour:.3f}/h"
                + (f" ({why})" if why else ""),
                attempt=number,
            )
            try:
                self._finish_launch(job, attempt)
                return
            except CapacityError as error:
                self.store.event(job.name, "capacity", f"attempt {number}: {error}", attempt=number)
        self._wait(job, number, f"attempt {number}: no capacity in any offer for {list(instance_types)}; trying again")

    def _not_released(self, job: Job, offers: list[Offer]) -> list[Offer]:
        """Offers other than the one the previous attempt gave up on because its gang never filled (when others exist)."""
        attempts = self.store.attempts(job.name)
        if not attempts or attempts[-1].outcome is not Outcome.RELEASED:
            return offers
        last = attempts[-1]
        others = [offer for offer in offers if (offer.instance_type, offer.zone, offer.market.value) != (last.instance_type, last.zone, last.market)]
        return others or offers

    def _wait(self, job: Job, number: int, message: str) -> None:
        if job.message != message:
            self.store.set_state(job.name, JobState.PROVISIONING, message, attempt=number)

    def _market_to_launch(self, job: Job, intervals: list[Interval]) -> tuple[Market | None, str]:
        """The market the next instance is bought in, and why (empty unless the deadline policy chose)."""
        market = job.spec["resources"]["market"]
        if market != "auto":
            return (Market.ON_DEMAND if market == "on-demand" else Market.SPOT), ""
        return self._policy_choice(job, intervals, running=None)

    def _policy_choice(self, job: Job, intervals: list[Interval], *, running: Market | None) -> tuple[Market | None, str]:
        """What the deadline policy wants now; with no estimate of the work yet, spot when it can be had, else on-demand."""
        spec = job.spec
        spot_available = running is Market.SPOT or self._spot_offered(tuple(spec["resources"]["instance_types"]), forecast.nodes(spec))
        left = forecast.work(spec, job.progress)
        if left is None:
            return (Market.SPOT if spot_available else Market.ON_DEMAND), "no estimate of the work yet: set budget.expected_runtime"
        now = self.clock()
        deadline = datetime.fromisoformat(spec["budget"]["deadline_at"]).timestamp()
        situation = Situation(
            elapsed_s=now - job.created_at,
            work_done_s=left.done_s,
            total_work_s=left.total_s,
            deadline_s=deadline - job.created_at,
            restart_overhead_s=forecast.restart_overhead_s(spec, intervals),
            running=running,
            spot_available=spot_available,
            decision_interval_s=self.settings.poll_interval_s,
        )
        choice = DEADLINE_POLICY.choose(situation)
        return choice, f"deadline policy: {format_duration(situation.slack_s)} of slack, spot {'available' if spot_available else 'unavailable'}"

    def _spot_offered(self, instance_types: tuple[str, ...], nodes: int) -> bool:
        """Whether any spot offer exists, asked of the provider at most every SPOT_CHECK_INTERVAL_S (on EC2 it is API calls)."""
        now = self.clock()
        checked = self._spot_checked.get(instance_types)
        if checked is None or now - checked[0] >= SPOT_CHECK_INTERVAL_S:
            offered = bool(self.provider.offers(OfferRequest(instance_types=instance_types, market=Market.SPOT, nodes=nodes)))
            checked = self._spot_checked[instance_types] = (now, offered)
        return checked[1]

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
            gpus=offer.gpus,
        )

    def _finish_launch(self, job: Job, attempt: Attempt) -> None:
        """Launch every node of the attempt not launched yet (after a restart, idempotently: the same tokens).

        Rank 0 goes first: its private address and the provider's rendezvous port become every
        other node's MASTER_ADDR and MASTER_PORT. A CapacityError for rank 0 moves the attempt to
        the next offer; for another node the gang waits, partial, until ``gang_timeout``.
        """
        launched = {row.node: row for row in self.store.intervals(job.name) if row.attempt == attempt.number}
        nodes = forecast.nodes(job.spec)
        port = None
        if nodes > 1:
            port = int(launched[0].address.rsplit(":", 1)[1]) if 0 in launched else self.provider.rendezvous_port()
        for node in range(nodes):
            if node in launched:
                continue
            # Rank 0 reaches its own rendezvous on loopback; the others at rank 0's private address.
            gang = {} if port is None else {TAG_NODE: str(node), TAG_RENDEZVOUS: f"127.0.0.1:{port}" if node == 0 else launched[0].address}
            request = LaunchRequest(
                job=job.name,
                attempt=attempt.number,
                token=attempt.token if node == 0 else f"{attempt.token}-n{node}",
                agent_command=self.agent_command(job, attempt.number),
                env={**self.agent_env, **_gang_env(gang)},
                workdir=job.spec["workdir"],
                tags={**_launch_tags(job, attempt.number), **gang},
                placement_group=job.spec["resources"].get("placement_group"),
            )
            try:
                instance = self.provider.launch(_offer_of(attempt), request)
            except CapacityError as error:
                if node == 0:
                    raise
                self._note_partial(job, attempt, len(launched), error)
                return
            address = f"{instance.private_address}:{port}" if node == 0 and port is not None else instance.private_address
            launched[node] = self._open_interval(job, attempt, node, instance, address)
            self.store.event(job.name, "launch", f"attempt {attempt.number}: {_node_label(job, node)}instance {instance.instance_id} launched", attempt=attempt.number)

    def _open_interval(self, job: Job, attempt: Attempt, node: int, instance: Instance, address: str) -> Interval:
        spec = job.spec
        interval = Interval(
            job=job.name, attempt=attempt.number, node=node, instance_id=instance.instance_id, provider=attempt.provider,
            instance_type=attempt.instance_type, zone=attempt.zone, market=attempt.market, gpus=attempt.gpus,
            price_usd_per_hour=attempt.price_usd_per_hour, on_demand_price_usd_per_hour=attempt.on_demand_price_usd_per_hour,
            requested_at=attempt.requested_at, start=instance.launched_at, end=None, end_reason=None, outcome=None,
            cost_usd=None, on_demand_usd=None, prices=((instance.launched_at, attempt.price_usd_per_hour),),
            productive_at=None, work_lost_s=None, steps_lost=None, team=spec.get("team"),
            tags={str(key): str(value) for key, value in (spec.get("tags") or {}).items()}, launched_by=job.launched_by,
            address=address,
        )
        self.store.set_launched(interval)
        return interval

    def _note_partial(self, job: Job, attempt: Attempt, held: int, error: CapacityError) -> None:
        message = f"attempt {attempt.number}: {held} of {forecast.nodes(job.spec)} nodes up, waiting for capacity for the rest ({error})"
        self.store.event(job.name, "capacity", message, attempt=attempt.number)
        if job.message != message:
            self.store.set_state(job.name, JobState.PROVISIONING, message, attempt=attempt.number)

    # ----------------------------------------------------------------- watch

    def _watch(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], intervals: list[Interval]) -> None:
        """One look at a running attempt: all its nodes, the heartbeat, the budget and the market.

        A gang lives and ends as one: once any node is gone the others are stopped (at once if it
        was lost, after the grace period if it exited by itself, so a finishing rank 0 can commit
        its final checkpoint), and the attempt ends when every node has.
        """
        heartbeat = self._heartbeat(job, attempt)
        if heartbeat:
            self._note_heartbeat(job, attempt, heartbeat)
            job = self.store.job(job.name)
        ended = {node: status for node, (_, status) in nodes.items() if status.state is InstanceState.TERMINATED}
        if not ended:
            if len(nodes) < forecast.nodes(job.spec):
                self._fill_gang(job, attempt, nodes)
                return
            if job.state is not JobState.RUNNING and heartbeat and heartbeat.get("status") == "running":
                self.store.set_state(job.name, JobState.RUNNING, f"attempt {attempt.number} training", attempt=attempt.number)
            if job.stop_requested == STOP_FOR_MARKET:
                self._terminate_after_grace(job, attempt, nodes)
            if not self._enforce_budget(job, attempt, nodes, intervals) and job.stop_requested is None and job.spec["resources"]["market"] == "auto":
                self._follow_policy(job, attempt, intervals)
            return
        if len(ended) < len(nodes):
            self._stop_the_rest(job, attempt, nodes, ended)
            return
        statuses = {node: status for node, (_, status) in nodes.items()}
        outcome, message = _gang_outcome(statuses, heartbeat, stop_requested=job.stop_requested)
        if len(nodes) < forecast.nodes(job.spec) and outcome is not Outcome.FINISHED:
            outcome, message = Outcome.RELEASED, message
        rank0 = statuses[0]
        ended_at = max((status.ended_at or self.clock()) for status in statuses.values())
        node_outcomes = _node_outcomes(outcome, statuses)
        end_reason = rank0.end_reason.value if rank0.end_reason else "unknown"
        self.store.end_attempt(job.name, attempt.number, ended_at=ended_at, end_reason=end_reason, outcome=outcome, exit_code=rank0.exit_code)
        for node, (row, status) in nodes.items():
            self._close_interval(job, attempt, row, status, node_outcomes[node], heartbeat)
        self.store.event(job.name, "exit", f"attempt {attempt.number} {outcome.value}: {message}", attempt=attempt.number)
        self._decide_after(job, attempt, outcome, message)

    def _fill_gang(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]]) -> None:
        """Launch the nodes a partial gang still lacks, or, past ``gang_timeout``, release what it holds."""
        timeout = job.spec["resources"].get("gang_timeout_s", 600.0)
        if self.clock() - attempt.requested_at <= timeout:
            shortfalls = [event for _, event in self.store.events(job.name) if event.kind == "capacity" and event.attempt == attempt.number]
            if shortfalls and self.clock() - shortfalls[-1].time < min(GANG_RETRY_MAX_S, 2.0 ** len(shortfalls)):
                return  # backing off: 2, 4, 8 ... s between tries, at most a minute
            self._finish_launch(job, attempt)
            return
        self.store.event(
            job.name, "gang",
            f"attempt {attempt.number}: only {len(nodes)} of {forecast.nodes(job.spec)} nodes after {format_duration(timeout)}; releasing them to try another offer",
            attempt=attempt.number,
        )
        self.provider.terminate([row.instance_id for row, _ in nodes.values()])

    def _stop_the_rest(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], ended: dict[int, InstanceStatus]) -> None:
        lost = any(status.end_reason in _LOST for status in ended.values())
        first_end = min((status.ended_at or self.clock()) for status in ended.values())
        if lost or len(nodes) < forecast.nodes(job.spec) or self.clock() - first_end > self.settings.stop_grace_s:
            running = [row.instance_id for node, (row, _) in nodes.items() if node not in ended]
            self.store.event(job.name, "gang", f"attempt {attempt.number}: node {min(ended)} ended; stopping the rest of the gang", attempt=attempt.number)
            self.provider.terminate(running)

    def _heartbeat(self, job: Job, attempt: Attempt) -> dict[str, Any] | None:
        heartbeat = CheckpointStore(job.checkpoint_url).read_json(HEARTBEAT_NAME)
        if heartbeat is None or heartbeat.get("attempt") != attempt.number:
            return None
        return heartbeat

    def _note_heartbeat(self, job: Job, attempt: Attempt, heartbeat: dict[str, Any]) -> None:
        previous = job.progress
        same_attempt = previous.get("attempt") == attempt.number
        if heartbeat.get("interruption_at") and not (same_attempt and previous.get("interruption_at")):
            self.store.event(job.name, "notice", f"attempt {attempt.number}: spot interruption notice; emergency checkpoint requested", attempt=attempt.number)
        if heartbeat.get("training_status") == "training" and not (same_attempt and previous.get("training_status") == "training"):
            self.store.set_productive(job.name, attempt.number, float(heartbeat.get("time") or self.clock()))
        if heartbeat != previous:
            self.store.set_progress(job.name, heartbeat)

    def _close_interval(
        self, job: Job, attempt: Attempt, row: Interval, status: InstanceStatus, outcome: Outcome, heartbeat: dict[str, Any] | None
    ) -> None:
        """Price one node's ended interval by the provider's billing rules over the price series it ran under."""
        ended_at = status.ended_at if status.ended_at is not None else self.clock()
        offer = _offer_of(attempt)
        prices = self.provider.price_history(offer, row.start, ended_at)
        interval = BilledInterval(offer.market, row.start, ended_at, prices, status.end_reason)
        training_from = row.productive_at if row.productive_at is not None else row.start
        lost_s, lost_steps = _work_lost(heartbeat, training_from, ended_at) if outcome is Outcome.PREEMPTED else (None, None)
        self.store.close_interval(
            job.name, attempt.number, node=row.node, end=ended_at, end_reason=status.end_reason.value if status.end_reason else "unknown",
            outcome=outcome, cost_usd=interval_cost_usd(interval),
            on_demand_usd=on_demand_equivalent_usd(interval, attempt.on_demand_price_usd_per_hour),
            prices=tuple((point.time, point.usd_per_hour) for point in prices), work_lost_s=lost_s, steps_lost=lost_steps,
        )

    def _decide_after(self, job: Job, attempt: Attempt, outcome: Outcome, message: str) -> None:
        if job.stop_requested:
            self.store.clear_stop(job.name)
        if outcome is Outcome.FINISHED:
            self.store.set_state(job.name, JobState.SUCCEEDED, message, attempt=attempt.number)
        elif outcome is Outcome.STOPPED and job.stop_requested == STOP_FOR_BUDGET:
            spent = ledger.summarize(self.store.intervals(job.name), self.clock()).spent_usd
            max_usd = job.spec["budget"]["max_usd"]
            self.store.set_state(
                job.name, JobState.BUDGET_EXHAUSTED,
                f"spent ${spent:.4f} of the ${max_usd:.2f} budget ({message}); "
                f"`spotrun resume {job.name} --budget USD` continues from the checkpoint",
                attempt=attempt.number,
            )
        elif outcome is Outcome.STOPPED:
            self.store.set_state(job.name, JobState.RECOVERING, f"attempt {attempt.number} stopped to change market ({message})", attempt=attempt.number)
        elif outcome is Outcome.RELEASED:
            self.store.set_state(job.name, JobState.RECOVERING, f"attempt {attempt.number}: the gang never filled; trying another offer", attempt=attempt.number)
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

    # ----------------------------------------------------------------- budget

    def _enforce_budget(
        self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], intervals: list[Interval]
    ) -> bool:
        """Announce 50/80/100 % and stop the instance before the next interval would cross the cap; True once stopping.

        Spend is priced as if the instance were stopped now (no refund assumed), so the cap holds
        whatever the cloud does next. The stop is asked for while the budget still pays for the
        grace period; if the instance has not stopped when one more interval would cross the
        cap, it is terminated: the job never overspends by more than one polling interval.
        """
        max_usd = (job.spec.get("budget") or {}).get("max_usd")
        if max_usd is None:
            return False
        now = self.clock()
        spent = ledger.summarize(intervals, now).spent_usd
        self._announce_budget(job, spent, max_usd)
        per_s = len(nodes) * attempt.price_usd_per_hour / 3600.0
        next_interval = spent + per_s * self.settings.poll_interval_s
        if job.stop_requested == STOP_FOR_BUDGET:
            if next_interval >= max_usd:
                self.store.event(job.name, "stop", f"attempt {attempt.number}: budget reached before the checkpoint; terminating", attempt=attempt.number)
                self.provider.terminate([row.instance_id for row, _ in nodes.values()])
            return True
        if spent + per_s * self.settings.stop_reserve_s >= max_usd:
            self._request_stop(job, attempt, STOP_FOR_BUDGET, f"budget: ${spent:.4f} of ${max_usd:.2f} spent")
            return True
        return False

    def _announce_budget(self, job: Job, spent: float, max_usd: float) -> None:
        crossed = [pct for pct in BUDGET_ALERTS_PCT if spent >= max_usd * pct / 100 and pct > job.budget_alerted_pct]
        if crossed:
            pct = crossed[-1]
            self.store.alert_budget(
                job.name, pct, f"budget: {pct}% used (${spent:.4f} of ${max_usd:.2f})", {"pct": pct, "spent_usd": spent, "max_usd": max_usd}
            )

    def _budget_cannot_start(self, job: Job, offer: Offer, intervals: list[Interval]) -> bool:
        """End the job BUDGET_EXHAUSTED when what is left would not pay for a restart and one interval on ``offer``."""
        max_usd = (job.spec.get("budget") or {}).get("max_usd")
        if max_usd is None:
            return False
        spent = ledger.summarize(intervals, self.clock()).spent_usd
        needed_usd = forecast.start_cost_usd(job.spec, intervals, offer.price_usd_per_hour, reserve_s=self.settings.stop_reserve_s)
        if spent + needed_usd < max_usd:
            return False
        self.store.set_state(
            job.name, JobState.BUDGET_EXHAUSTED,
            f"spent ${spent:.4f} of the ${max_usd:.2f} budget; another instance needs about ${needed_usd:.4f} before it makes progress. "
            f"`spotrun resume {job.name} --budget USD` continues from the newest checkpoint",
        )
        return True

    # ----------------------------------------------------------------- market

    def _follow_policy(self, job: Job, attempt: Attempt, intervals: list[Interval]) -> None:
        """Under ``market: auto``, stop the instance (checkpoint first) when the deadline policy wants another market."""
        running = Market(attempt.market)
        choice, why = self._policy_choice(job, intervals, running=running)
        if choice is not running:
            wanted = choice.value if choice is not None else "no instance (wait for spot)"
            self._request_stop(job, attempt, STOP_FOR_MARKET, f"switch from {running.value} to {wanted}: {why}")

    def _request_stop(self, job: Job, attempt: Attempt, kind: str, reason: str) -> None:
        """Ask the agent, through object storage, for a checkpoint and a stop."""
        CheckpointStore(job.checkpoint_url).write_json(
            STOP_REQUEST_NAME, {"attempt": attempt.number, "kind": kind, "reason": reason, "time": self.clock()}
        )
        self.store.request_stop(job.name, kind, f"attempt {attempt.number}: checkpoint and stop requested ({reason})", attempt=attempt.number)

    def _terminate_after_grace(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]]) -> None:
        if job.stop_requested_at is not None and self.clock() - job.stop_requested_at > self.settings.stop_grace_s:
            self.store.event(job.name, "stop", f"attempt {attempt.number}: no checkpoint within {self.settings.stop_grace_s:.0f}s of the stop request; terminating", attempt=attempt.number)
            self.provider.terminate([row.instance_id for row, _ in nodes.values()])

    # ---------------------------------------------------------------- cancel

    def _cancel(self, job: Job, attempt: Attempt | None, nodes: list[Interval]) -> None:
        if attempt is not None and nodes:
            self.provider.terminate([row.instance_id for row in nodes])
            statuses = self.provider.poll([row.instance_id for row in nodes])
            for row in nodes:
                status = statuses[row.instance_id]
                if status.end_reason is None:
                    status = InstanceStatus(status.instance_id, status.state, status.launched_at, status.ended_at or self.clock(), EndReason.TERMINATED_BY_USER, status.exit_code)
                if row.node == 0:
                    assert status.end_reason is not None
                    self.store.end_attempt(
                        job.name, attempt.number, ended_at=status.ended_at or self.clock(), end_reason=status.end_reason.value,
                        outcome=Outcome.CANCELLED, exit_code=status.exit_code,
                    )
                self._close_interval(job, attempt, row, status, Outcome.CANCELLED, None)
        elif attempt is not None:
            self.store.end_attempt(
                job.name, attempt.number, ended_at=self.clock(), end_reason="never-launched", outcome=Outcome.CANCELLED, exit_code=None
            )
        self.store.set_state(job.name, JobState.CANCELLED, "cancelled by request")


def _of_attempt(intervals: list[Interval], attempt: Attempt | None) -> list[Interval]:
    """The ledger rows of ``attempt``: one per node launched for it."""
    return [row for row in intervals if attempt is not None and row.attempt == attempt.number]


def _offer_of(attempt: Attempt) -> Offer:
    return Offer(
        provider=attempt.provider,
        instance_type=attempt.instance_type,
        zone=attempt.zone,
        market=Market(attempt.market),
        price_usd_per_hour=attempt.price_usd_per_hour,
        on_demand_price_usd_per_hour=attempt.on_demand_price_usd_per_hour,
        gpus=attempt.gpus,
    )


def _work_lost(heartbeat: dict[str, Any] | None, started: float, ended_at: float) -> tuple[float, int]:
    """Training done after the last committed checkpoint: lost when the instance went.

    The clock stops when training stopped: at the agent's last report if it reported an end
    (after an emergency checkpoint that is right after the checkpoint), else at the end of the
    instance. It starts at the checkpoint if this attempt committed one, else when training
    started (``started``: the time before that is restart overhead, counted apart).
    """
    if heartbeat is None:
        return max(0.0, ended_at - started), 0
    checkpoint = heartbeat.get("checkpoint") or {}
    reported_end = heartbeat.get("status") in ("preempted", "stopped", "failed")
    stopped_at = float(heartbeat.get("time") or ended_at) if reported_end else ended_at
    since = max(float(checkpoint.get("time") or 0.0), started)
    steps = max(0, int(heartbeat.get("step") or 0) - int(checkpoint.get("step") or heartbeat.get("resumed_from_step") or 0))
    return max(0.0, stopped_at - since), steps


def _launch_tags(job: Job, attempt: int) -> dict[str, str]:
    """The spec's team and free-form tags (for cost allocation), and what the agent needs to find its job."""
    spec = job.spec
    tags = {str(key): str(value) for key, value in (spec.get("tags") or {}).items()}
    if spec.get("team"):
        tags["team"] = str(spec["team"])
    return {**tags, TAG_JOB: job.name, TAG_ATTEMPT: str(attempt), TAG_URL: job.checkpoint_url}


_LOST = (EndReason.SPOT_INTERRUPTION, EndReason.HOST_LOST)


def _node_label(job: Job, node: int) -> str:
    return f"node {node}: " if forecast.nodes(job.spec) > 1 else ""


def _gang_env(gang: dict[str, str]) -> dict[str, str]:
    """A gang member's rank and rendezvous as the agent's environment (EC2 instances read the same from their tags)."""
    return {NODE_ENV: gang[TAG_NODE], RENDEZVOUS_ENV: gang[TAG_RENDEZVOUS]} if gang else {}


def _gang_outcome(statuses: dict[int, InstanceStatus], heartbeat: dict[str, Any] | None, *, stop_requested: str | None) -> tuple[Outcome, str]:
    """How a gang's attempt ended: rank 0's word on finishing, then any node lost, then any node's failure."""
    outcome, message = classify(statuses[0], heartbeat, stop_requested=stop_requested)
    if len(statuses) == 1 or outcome is Outcome.FINISHED:
        return outcome, message
    lost = sorted(node for node, status in statuses.items() if status.end_reason in _LOST)
    if lost:
        reason = statuses[lost[0]].end_reason
        assert reason is not None
        return Outcome.PREEMPTED, f"node {lost[0]}: {reason.value}"
    failed = sorted(
        node for node, status in statuses.items()
        if status.end_reason is EndReason.AGENT_EXITED and status.exit_code not in (0, PREEMPTED_EXIT_CODE)
    )
    if failed and outcome is not Outcome.STOPPED:
        return Outcome.FAILED, f"node {failed[0]}: the agent exited with code {statuses[failed[0]].exit_code}"
    return outcome, message


def _node_outcomes(outcome: Outcome, statuses: dict[int, InstanceStatus]) -> dict[int, Outcome]:
    """Each node's ledger outcome: a preempted gang counts one preemption per node actually lost, the rest stopped with it."""
    if outcome is not Outcome.PREEMPTED or len(statuses) == 1:
        return dict.fromkeys(statuses, outcome)
    lost = [node for node, status in statuses.items() if status.end_reason in _LOST] or [0]
    return {node: Outcome.PREEMPTED if node in lost else Outcome.STOPPED for node in statuses}
