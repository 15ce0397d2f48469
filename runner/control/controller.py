"""The controller loop: launch, watch, tell preemption from failure, relaunch, until the job ends.

Each cycle reads everything it needs from the state store (every job's rows at its start, in a
few queries however many jobs: ``StateStore.live_snapshot``, then passed down, not read again),
the provider (one batched poll) and the heartbeat in object storage, so the controller can be
killed at any moment and started again: the next one carries on from the store. An attempt is
recorded with its idempotency token *before* the launch call, and a new attempt starts only once
the previous instance is reported terminated, so one job never has two instances at once.
Terminated means shown to be: a poll that fails, or one answer that misses an instance,
relaunches nothing (``Controller._gone``).

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
from dataclasses import dataclass, replace

from checkpoints.durations import format_duration
from checkpoints.environment import PREEMPTED_EXIT_CODE
from checkpoints.progress import Progress, TrainingStatus
from cloud.billing import BilledInterval, interval_cost_usd, price_at
from cloud.errors import CapacityError, ProviderError
from cloud.launch_tokens import node_token
from cloud.provider import (
    TAG_KEY,
    TAG_SPEC,
    TAG_URL,
    EndReason,
    GangMember,
    Instance,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    PricePoint,
    Provider,
    Rendezvous,
)
from runner.control.admission import admit
from runner.control.policy import Situation, policy_named
from runner.cost import forecast, ledger
from runner.errors import LeaseLostError
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import (
    AgentStatus,
    Heartbeat,
    JobChannel,
    LaunchCredentials,
    ProtocolError,
    SpendingHorizon,
    StopRequest,
    write_spec,
)
from runner.money import format_usd
from runner.state.store import Attempt, Interval, Job, JobRows, JobState, Outcome, StateStore

SPOT_CHECK_INTERVAL_S = 30.0  # how long the deadline policy trusts a look at spot availability
GANG_RETRY_MAX_S = 60.0  # the longest wait between tries to fill a partial gang
STOP_FOR_BUDGET = "budget"
STOP_FOR_MARKET = "market"
BUDGET_ALERTS_PCT = (50, 80, 100)
LOSS_CONFIRM_POLLS = 3  # polls in a row that must report an instance gone or unknown before it counts as lost
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
            raise ValueError(
                f"lease_s ({self.lease_s}s) must be more than two polling intervals ({self.poll_interval_s}s each), or leases lapse between cycles"
            )

    @property
    def stop_reserve_s(self) -> float:
        """Running time a budget keeps back: the next polling interval, and the grace to checkpoint and stop."""
        return self.poll_interval_s + self.stop_grace_s

    @property
    def loss_confirm_s(self) -> float:
        """How long an instance must be reported gone or unknown, and its agent silent, before it counts as lost.

        Three polling intervals: half a minute on EC2, where the agent reports every 5 s, so its
        heartbeat is then six beats late; 3 s on this machine, where it reports every second.
        """
        return LOSS_CONFIRM_POLLS * self.poll_interval_s


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


def classify(status: InstanceStatus, heartbeat: Heartbeat | None, *, stop_requested: str | None = None) -> tuple[Outcome, str]:
    """How an attempt whose instance is gone ended: the agent's word first, then the provider's.

    An instance the controller itself asked to stop (``stop_requested``) and then ended, by
    itself or by a terminate once its time to stop ran out (``STOP_TIMEOUT``, see
    :func:`_labelled`), was stopped, not preempted.

    Only the agent's own report that training failed is a failure of the user's code, counted
    against ``max_restarts_on_errors``. An agent that died without a word (see
    :func:`_died_unreported`) says nothing about the training: its host counts as lost, and the
    attempt is relaunched like a preempted one.
    """
    agent_status = heartbeat.status if heartbeat else None
    said = heartbeat.message if heartbeat else None
    if agent_status is AgentStatus.FINISHED:
        return Outcome.FINISHED, said or "training finished"
    if agent_status is AgentStatus.STOPPED:
        return Outcome.STOPPED, said or "stopped"
    if agent_status is AgentStatus.REFUSED:  # someone rewrote the spec in the prefix; the next launch writes it again
        return Outcome.PREEMPTED, said or "the agent refused a spec that was not its launch's"
    if status.end_reason is EndReason.STOP_TIMEOUT:
        return Outcome.STOPPED, f"terminated when the stop request ({stop_requested}) ran out of time, without a reported checkpoint"
    if status.end_reason is EndReason.SPOT_INTERRUPTION:
        return Outcome.PREEMPTED, "spot interruption"
    if agent_status is AgentStatus.PREEMPTED:
        return Outcome.PREEMPTED, said or "preempted"
    if status.end_reason in (EndReason.HOST_LOST, EndReason.TERMINATED_BY_USER):
        return Outcome.PREEMPTED, f"instance lost without notice ({status.end_reason.value})"
    if agent_status is AgentStatus.FAILED:
        return Outcome.FAILED, said or "training failed"
    if _died_unreported(status, heartbeat):
        return Outcome.PREEMPTED, f"{_agent_death(status)}: the host counts as lost"
    return Outcome.FAILED, f"the agent exited with code {status.exit_code} without reporting an outcome"


# What an agent reports as it leaves; without one of these, it left without a word.
_AGENT_VERDICTS = frozenset(
    {AgentStatus.FINISHED, AgentStatus.STOPPED, AgentStatus.PREEMPTED, AgentStatus.FAILED, AgentStatus.EXITED, AgentStatus.REFUSED}
)
# The verdicts an agent gives once training has stopped (its report's time is when): the work since the checkpoint ends there.
_REPORTED_ENDS = frozenset({AgentStatus.PREEMPTED, AgentStatus.STOPPED, AgentStatus.FAILED})


def _killed(status: InstanceStatus) -> bool:
    """Whether the agent process was killed by a signal (the exit code reads 128 + the signal, as shells report it)."""
    return status.end_reason is EndReason.AGENT_EXITED and status.exit_code is not None and status.exit_code > 128


def _died_unreported(status: InstanceStatus, heartbeat: Heartbeat | None) -> bool:
    """Whether rank 0's agent ended without its verdict: killed by a signal, or with no exit code (EC2) after reporting it ran.

    An agent that exits by itself with a code of its own (an agent that never started, one that
    crashed at start-up) keeps counting as a failure: relaunched without a bound it would repeat.
    """
    if status.end_reason is not EndReason.AGENT_EXITED or (heartbeat is not None and heartbeat.status in _AGENT_VERDICTS):
        return False
    return _killed(status) or (status.exit_code is None and heartbeat is not None)


def _agent_death(status: InstanceStatus) -> str:
    if status.exit_code is None:
        return "the agent ended without reporting how its training did"
    return f"the agent was killed (exit code {status.exit_code}) without reporting how its training did"


def _labelled(status: InstanceStatus, stop_requested: str | None) -> InstanceStatus:
    """An ended instance with its end as the ledger records it: the provider's, but STOP_TIMEOUT for the controller's own kill.

    The controller terminates an instance it asked to stop when its time to stop runs out (the
    grace period, or the budget); providers report that as any terminate, ``terminated-by-user``,
    which would read as if someone had cancelled it.
    """
    if stop_requested and status.end_reason is EndReason.TERMINATED_BY_USER:
        return replace(status, end_reason=EndReason.STOP_TIMEOUT)
    return status


@dataclass
class _Unseen:
    """An instance the provider has reported gone or unknown on ``polls`` polls in a row, the first at ``since``."""

    since: float
    polls: int = 0


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
        self._horizons: dict[str, SpendingHorizon] = {}  # job -> the spending horizon this controller last granted
        self._fetched_prices: dict[tuple[str, str, str, str], _FetchedPrices] = {}  # (provider, type, zone, market) -> its price history
        self._unseen: dict[str, _Unseen] = {}  # instance id -> since when the provider reports it gone or unknown
        self._known_progress: dict[str, Progress] = {}  # job -> its last report, at the step a restart resumes from
        self._poll_failures = 0  # provider polls failed in a row

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
        snapshot = self.store.live_snapshot([name for name in names if name in held])  # every job's rows, in three queries
        work = [rows for name in names if (rows := snapshot.get(name)) is not None and not rows.job.state.is_final]
        watched = [row.instance_id for rows in work if not rows.job.cancel_requested for row in rows.open_intervals]
        statuses: dict[str, InstanceStatus] | None
        poll_error: ProviderError | None = None
        recovered_after = self._poll_failures
        try:
            statuses = self.provider.poll(watched) if watched else {}
            self._poll_failures = 0
        except ProviderError as error:  # an outage of the provider is no news about the instances: nothing is relaunched on it
            statuses, poll_error, recovered_after = None, error, 0
            self._poll_failures += 1
        for rows in work:
            job = rows.job
            if time.monotonic() - renewed_at > self.settings.lease_s / 3:  # a long cycle (many launches) keeps its leases
                held = self.store.acquire_leases(sorted(held), self.settings.lease_s)
                renewed_at = time.monotonic()
            if job.name not in held:
                continue
            try:
                if rows.open_intervals and not job.cancel_requested:
                    if poll_error is not None and self._poll_failures == 1:
                        self.store.event(job.name, "provider", f"the provider's poll failed ({poll_error}); looking again next cycle")
                    elif poll_error is None and recovered_after:
                        self.store.event(job.name, "provider", f"the provider answers again, after {recovered_after} failed polls")
                self._step(rows, statuses)
            except LeaseLostError:
                continue  # adopted by another controller while this one was stalled: its job now
        found = self.store.jobs_named(names)  # as the cycle left them, in one query
        jobs = [found[name] if name in found else self.store.job(name) for name in names]  # store.job: the error naming what exists
        ended = [job.name for job in jobs if job.state.is_final and job.lease_owner == self.owner]
        if ended:
            self.release(ended)
        return jobs

    def _step(self, rows: JobRows, statuses: dict[str, InstanceStatus] | None) -> None:
        """One step for one job, on the rows the cycle read at its start (and what this step writes), never read again."""
        job, current, intervals, nodes = rows.job, rows.open_attempt, list(rows.intervals), rows.open_intervals
        if job.cancel_requested:
            self._cancel(job, current, nodes)
        elif current is None:
            self._launch(job, rows.attempts, intervals)
        elif current.instance_id is None:
            self._finish_launch(job, current, intervals)
        elif statuses is not None:  # None: the provider did not answer this cycle's poll
            self._watch(job, current, {row.node: (row, statuses[row.instance_id]) for row in nodes}, intervals)

    # ---------------------------------------------------------------- launch

    def _launch(self, job: Job, attempts: Sequence[Attempt], intervals: list[Interval]) -> None:
        """Record the attempt after ``attempts`` on the best offer, then launch, moving down the offers while capacity is short.

        The market comes from the spec, or from the deadline policy (``market: auto``); no launch
        happens when the budget cannot pay for the next polling interval. When no offer has
        capacity the job waits for the next cycle (the provider puts exhausted zones aside for a
        while, so the next cycle's offers differ).
        """
        number = len(attempts) + 1
        instance_types = tuple(job.spec.resources.instance_types)
        market, why = self._market_to_launch(job, intervals)
        if market is None:
            self._wait(job, number, f"attempt {number}: waiting for spot capacity ({why})")
            return
        offers = self._not_released(
            attempts, self.provider.offers(OfferRequest(instance_types=instance_types, market=market, nodes=job.spec.resources.nodes))
        )
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
                self._finish_launch(job, attempt, intervals)
                return
            except CapacityError as error:
                self.store.event(job.name, "capacity", f"attempt {number}: {error}", attempt=number)
        self._wait(job, number, f"attempt {number}: no capacity in any offer for {list(instance_types)}; trying again")

    def _not_released(self, attempts: Sequence[Attempt], offers: list[Offer]) -> list[Offer]:
        """Offers other than the one the previous attempt gave up on because its gang never filled (when others exist)."""
        if not attempts or attempts[-1].outcome is not Outcome.RELEASED:
            return offers
        last = attempts[-1]
        others = [
            offer
            for offer in offers
            if (offer.instance_type, offer.zone, offer.market.value) != (last.instance_type, last.zone, last.market)
        ]
        return others or offers

    def _wait(self, job: Job, number: int, message: str) -> None:
        if job.message != message:
            self.store.set_state(job.name, JobState.PROVISIONING, message, attempt=number)

    def _market_to_launch(self, job: Job, intervals: list[Interval]) -> tuple[Market | None, str]:
        """The market the next instance is bought in, and why (empty unless the deadline policy chose)."""
        market = job.spec.resources.fixed_market
        if market is not None:
            return market, ""
        return self._policy_choice(job, intervals, running=None)

    def _policy_choice(self, job: Job, intervals: list[Interval], *, running: Market | None) -> tuple[Market | None, str]:
        """What the deadline policy wants now; with no estimate of the work yet, the market held, else spot when it can be had."""
        spec = job.spec
        spot_available = running is Market.SPOT or self._spot_offered(tuple(spec.resources.instance_types), spec.resources.nodes)
        left = forecast.work(spec, self._steady_progress(job))
        if left is None:
            held = running or (Market.SPOT if spot_available else Market.ON_DEMAND)
            return held, "no estimate of the work yet: set budget.expected_runtime"
        now = self.clock()
        assert spec.budget.deadline_at is not None  # market auto requires a deadline (JobSpec)
        deadline = spec.budget.deadline_at.timestamp()
        situation = Situation(
            elapsed_s=now - job.created_at,
            work_done_s=left.done_s,
            total_work_s=left.total_s,
            deadline_s=deadline - job.created_at,
            restart_overhead_s=forecast.restart_overhead_s(spec, intervals, self.provider.priors),
            running=running,
            spot_available=spot_available,
            decision_interval_s=self.settings.poll_interval_s,
        )
        choice = DEADLINE_POLICY.choose(situation)
        return (
            choice,
            f"deadline policy: {format_duration(situation.slack_s)} of slack, spot {'available' if spot_available else 'unavailable'}",
        )

    def _steady_progress(self, job: Job) -> Progress | None:
        """The job's progress as the deadline policy reads it: the newest report, with the last step and throughput known.

        A new attempt reports no step until its training has made one, and no throughput until its
        second report. Read as they come, those first reports make the job look back at its start
        (with ``budget.expected_runtime``) or without any estimate at every restart, and the policy
        switched markets on them: spot, on-demand, spot within seconds. Until the attempt reports its
        own, the step it resumes from (the last checkpoint reported) and the last throughput stand in.
        """
        progress = job.training_progress
        known = self._known_progress.get(job.name)
        if progress is None:
            return known
        if known is not None and not progress.steps_per_s:
            progress = replace(progress, steps_per_s=known.steps_per_s)
        self._known_progress[job.name] = replace(progress, step=progress.resumes_at)
        return progress

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

    def _finish_launch(self, job: Job, attempt: Attempt, rows: list[Interval]) -> None:
        """Launch every node of the attempt not launched yet (after a restart, idempotently: the same tokens).

        ``rows`` are the job's ledger rows as this cycle read them: a launch adds rows of this attempt
        only, each of them kept in ``launched``. Rank 0 goes first: its private address and the
        provider's rendezvous port become every other node's MASTER_ADDR and MASTER_PORT. A
        CapacityError for rank 0 moves the attempt to the next offer; for another node the gang
        waits, partial, until ``gang_timeout``.
        """
        launched = {row.node: row for row in rows if row.attempt == attempt.number}
        nodes = job.spec.resources.nodes
        # The spec is written again before every launch (what another job's instance overwrote is put
        # back), and the launch names it by digest: the agent runs this spec or nothing.
        credentials = LaunchCredentials(job=job.name, spec_sha256=write_spec(Mailbox.at(job.checkpoint_url), job.spec), key=job.key)
        self._grant_horizon(job, attempt, rows)
        hosted = _rendezvous_in_ledger(launched[0]) if nodes > 1 and 0 in launched else None  # the gang's, once rank 0 is up
        port = (hosted.port if hosted is not None else self.provider.rendezvous_port()) if nodes > 1 else None
        for node in range(nodes):
            if node in launched:
                continue
            gang = None if port is None else GangMember.joining(node, nodes, port=port, rank0_address=hosted.address if hosted else None)
            request = LaunchRequest(
                job=job.name,
                attempt=attempt.number,
                token=node_token(attempt.token, node),
                agent_command=self.agent_command(job, attempt.number),
                env={**self.agent_env, **credentials.to_env()},
                workdir=job.spec.workdir,
                tags={**_launch_tags(job), **_credential_tags(credentials)},
                placement_group=job.spec.resources.placement_group,
                gang=gang,
            )
            try:
                instance = self.provider.launch(_offer_of(attempt), request)
            except CapacityError as error:
                if node == 0:
                    raise
                self._note_partial(job, attempt, len(launched), error)
                return
            if node == 0 and port is not None:
                hosted = Rendezvous(instance.private_address, port)
            launched[node] = self._open_interval(
                job, attempt, node, instance, _ledger_address(instance, hosted if node == 0 else None), rows
            )
            self.store.event(
                job.name,
                "launch",
                f"attempt {attempt.number}: {_node_label(job, node)}instance {instance.instance_id} launched",
                attempt=attempt.number,
            )

    def _open_interval(self, job: Job, attempt: Attempt, node: int, instance: Instance, address: str, rows: list[Interval]) -> Interval:
        """Record the node's launched instance as an open ledger row; ``rows`` are the job's rows before this launch."""
        spec = job.spec
        interval = Interval(
            job=job.name,
            attempt=attempt.number,
            node=node,
            instance_id=instance.instance_id,
            provider=attempt.provider,
            instance_type=attempt.instance_type,
            zone=attempt.zone,
            market=attempt.market,
            gpus=attempt.gpus,
            price_usd_per_hour=attempt.price_usd_per_hour,
            on_demand_price_usd_per_hour=attempt.on_demand_price_usd_per_hour,
            requested_at=attempt.requested_at,
            start=instance.launched_at,
            end=None,
            end_reason=None,
            outcome=None,
            cost_usd=None,
            on_demand_usd=None,
            prices=((instance.launched_at, attempt.price_usd_per_hour),),
            productive_at=None,
            work_lost_s=None,
            steps_lost=None,
            team=spec.team,
            tags=dict(spec.tags),
            launched_by=job.launched_by,
            address=address,
        )
        # From its first moment the row holds its node's earlier work (as each refresh keeps it), so its share of the
        # on-demand equivalent continues the one instance's bill instead of starting a second 60 s minimum.
        earlier_s = ledger.worked_before_s(rows, interval, self.clock())
        interval = replace(interval, on_demand_usd=ledger.open_row_on_demand_usd(interval, earlier_s))
        self.store.set_launched(interval)
        return interval

    def _note_partial(self, job: Job, attempt: Attempt, held: int, error: CapacityError) -> None:
        message = f"attempt {attempt.number}: {held} of {job.spec.resources.nodes} nodes up, waiting for capacity for the rest ({error})"
        self.store.event(job.name, "capacity", message, attempt=attempt.number)
        if job.message != message:
            self.store.set_state(job.name, JobState.PROVISIONING, message, attempt=attempt.number)

    # ----------------------------------------------------------------- watch

    def _watch(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], intervals: list[Interval]) -> None:
        """One look at a running attempt: all its nodes, the heartbeat, the budget and the market.

        A gang lives and ends as one: once any node is gone the others are stopped (at once if it
        was lost, after the grace period if it exited by itself, so a finishing rank 0 can commit
        its final checkpoint), and the attempt ends when every node has. Which nodes are gone is
        :meth:`_gone`'s answer, not one poll's.
        """
        heartbeat = self._heartbeat(job, attempt)
        if heartbeat:
            job = self._note_heartbeat(job, attempt, heartbeat)
        ended = self._gone(job, attempt, nodes, heartbeat)
        if not ended:
            intervals = self._refresh_running_prices(job, attempt, intervals)
            self._grant_horizon(job, attempt, intervals)
            if len(nodes) < job.spec.resources.nodes:
                self._fill_gang(job, attempt, nodes, intervals)
                return
            if job.state is not JobState.RUNNING and heartbeat and heartbeat.status is AgentStatus.RUNNING:
                self.store.set_state(job.name, JobState.RUNNING, f"attempt {attempt.number} training", attempt=attempt.number)
            if job.stop_requested == STOP_FOR_MARKET:
                self._terminate_after_grace(job, attempt, nodes)
            if (
                not self._enforce_budget(job, attempt, nodes, intervals)
                and job.stop_requested is None
                and job.spec.resources.market == "auto"
            ):
                self._follow_policy(job, attempt, intervals)
            return
        if len(ended) < len(nodes):
            self._stop_the_rest(job, attempt, nodes, ended)
            return
        statuses = ended
        outcome, message = _gang_outcome(statuses, heartbeat, stop_requested=job.stop_requested)
        if len(nodes) < job.spec.resources.nodes and outcome is not Outcome.FINISHED:
            outcome, message = Outcome.RELEASED, message
        rank0 = statuses[0]
        ended_at = max((status.ended_at or self.clock()) for status in statuses.values())
        node_outcomes = _node_outcomes(outcome, statuses)
        end_reason = rank0.end_reason.value if rank0.end_reason else "unknown"
        self.store.end_attempt(
            job.name, attempt.number, ended_at=ended_at, end_reason=end_reason, outcome=outcome, exit_code=rank0.exit_code
        )
        for node, (row, _) in nodes.items():
            self._close_interval(job, attempt, row, statuses[node], node_outcomes[node], heartbeat)
        self.store.event(job.name, "exit", f"attempt {attempt.number} {outcome.value}: {message}", attempt=attempt.number)
        self._decide_after(job, attempt, outcome, message)

    def _gone(
        self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], heartbeat: Heartbeat | None
    ) -> dict[int, InstanceStatus]:
        """The nodes whose end the evidence shows, each with how it ended (see :func:`_labelled`).

        The provider's word that an instance ended (a spot interruption, the agent's exit, a
        terminate) is taken at once. Its word that one is gone or unknown (``HOST_LOST``: missing
        from a ``describe_instances`` answer, or a host found dead) is not, since one answer can
        miss an instance that runs, and a relaunch then makes two: that loss counts once
        LOSS_CONFIRM_POLLS polls in a row have reported it over ``loss_confirm_s`` and the node's
        agent has been silent as long. Until then the attempt runs on, and an instance seen again
        is forgotten. (A poll that fails outright never reaches here: see ``cycle_many``.)
        """
        now = self.clock()
        window_s = self.settings.loss_confirm_s
        gone = {}
        for node, (row, status) in nodes.items():
            if status.end_reason is not EndReason.HOST_LOST:
                unseen = self._unseen.pop(row.instance_id, None)
                if unseen is not None and status.state is not InstanceState.TERMINATED:
                    self.store.event(
                        job.name,
                        "provider",
                        f"attempt {attempt.number}: {_node_label(job, node)}instance {row.instance_id} is "
                        f"{status.state.value} after all ({unseen.polls} polls without it)",
                        attempt=attempt.number,
                    )
                if status.state is InstanceState.TERMINATED:
                    gone[node] = _labelled(status, job.stop_requested)
                continue
            unseen = self._unseen.setdefault(row.instance_id, _Unseen(since=now))
            unseen.polls += 1
            heard = self._last_heard(job, attempt, node, heartbeat)
            if unseen.polls >= LOSS_CONFIRM_POLLS and now - unseen.since >= window_s and (heard is None or now - heard >= window_s):
                del self._unseen[row.instance_id]
                gone[node] = replace(status, ended_at=min(status.ended_at or now, unseen.since))
            elif unseen.polls == 1:
                self.store.event(
                    job.name,
                    "provider",
                    f"attempt {attempt.number}: {_node_label(job, node)}the provider reports instance "
                    f"{row.instance_id} {status.end_reason.value}; it counts as lost once that holds for {format_duration(window_s)} "
                    "with its agent silent",
                    attempt=attempt.number,
                )
        return gone

    def _last_heard(self, job: Job, attempt: Attempt, node: int, heartbeat: Heartbeat | None) -> float | None:
        """When the node's agent last reported for ``attempt`` (rank 0's heartbeat is the one ``_watch`` read), if ever."""
        if node != 0:
            try:
                heartbeat = _channel(job).read_heartbeat(node)
            except ProtocolError:  # a forged heartbeat says nothing of this agent
                heartbeat = None
            if heartbeat is not None and heartbeat.attempt != attempt.number:
                heartbeat = None
        return heartbeat.time if heartbeat else None

    def _fill_gang(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], intervals: list[Interval]) -> None:
        """Launch the nodes a partial gang still lacks, or, past ``gang_timeout``, release what it holds."""
        timeout = job.spec.resources.gang_timeout_s
        if self.clock() - attempt.requested_at <= timeout:
            shortfalls = [event for _, event in self.store.events(job.name) if event.kind == "capacity" and event.attempt == attempt.number]
            if shortfalls and self.clock() - shortfalls[-1].time < min(GANG_RETRY_MAX_S, 2.0 ** len(shortfalls)):
                return  # backing off: 2, 4, 8 ... s between tries, at most a minute
            self._finish_launch(job, attempt, intervals)
            return
        self.store.event(
            job.name,
            "gang",
            f"attempt {attempt.number}: only {len(nodes)} of {job.spec.resources.nodes} nodes after {format_duration(timeout)}; releasing them to try another offer",
            attempt=attempt.number,
        )
        self.provider.terminate([row.instance_id for row, _ in nodes.values()])

    def _stop_the_rest(
        self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]], ended: dict[int, InstanceStatus]
    ) -> None:
        lost = any(status.end_reason in _LOST for status in ended.values())
        first_end = min((status.ended_at or self.clock()) for status in ended.values())
        if lost or len(nodes) < job.spec.resources.nodes or self.clock() - first_end > self.settings.stop_grace_s:
            running = [row.instance_id for node, (row, _) in nodes.items() if node not in ended]
            self.store.event(
                job.name,
                "gang",
                f"attempt {attempt.number}: node {min(ended)} ended; stopping the rest of the gang",
                attempt=attempt.number,
            )
            self.provider.terminate(running)

    def _heartbeat(self, job: Job, attempt: Attempt) -> Heartbeat | None:
        """Rank 0's heartbeat of this attempt; one another job forged (or a damaged one) is ignored, with an event once."""
        try:
            heartbeat = _channel(job).read_heartbeat(0)
        except ProtocolError as error:
            self._event_once(job, "forged", f"attempt {attempt.number}: {error}", attempt.number)
            return None
        if heartbeat is None or heartbeat.attempt != attempt.number:
            return None
        return heartbeat

    def _event_once(self, job: Job, kind: str, message: str, attempt: int) -> None:
        """An event, unless the job's newest event of that kind already says the same."""
        same_kind = [event for _, event in self.store.events(job.name) if event.kind == kind]
        if not same_kind or same_kind[-1].message != message:
            self.store.event(job.name, kind, message, attempt=attempt)

    def _note_heartbeat(self, job: Job, attempt: Attempt, heartbeat: Heartbeat) -> Job:
        """Record what a new heartbeat tells; returns the job with it as its progress, as its row now reads (not read again)."""
        previous = job.progress if job.progress is not None and job.progress.attempt == attempt.number else None  # this attempt's
        if heartbeat.interruption_at and not (previous is not None and previous.interruption_at):
            self.store.event(
                job.name,
                "notice",
                f"attempt {attempt.number}: spot interruption notice; emergency checkpoint requested",
                attempt=attempt.number,
            )
        training = TrainingStatus.TRAINING
        if heartbeat.training_status is training and not (previous is not None and previous.training_status is training):
            self.store.set_productive(job.name, attempt.number, heartbeat.time or self.clock())
        if heartbeat == job.progress:
            return job
        self.store.set_progress(job.name, heartbeat)
        return replace(job, progress=heartbeat)

    def _close_interval(
        self, job: Job, attempt: Attempt, row: Interval, status: InstanceStatus, outcome: Outcome, heartbeat: Heartbeat | None
    ) -> None:
        """Price one node's ended interval by the provider's billing rules over the price series it ran under.

        Its on-demand figure is its share of the job's on-demand equivalent (``runner.cost.ledger``): the
        work it did and kept, after what the job's earlier intervals did on the node. The training
        since the last checkpoint is lost when the instance is taken away or stopped (a node stopped
        with its preempted gang loses it as well), so it is not counted.
        """
        ended_at = status.ended_at if status.ended_at is not None else self.clock()
        offer = _offer_of(attempt)
        prices = self.provider.price_history(offer, row.start, ended_at)
        interval = BilledInterval(offer.market, row.start, ended_at, prices, status.end_reason)
        rows = self.store.intervals(job.name)
        row = next(
            stored for stored in rows if (stored.attempt, stored.node) == (row.attempt, row.node)
        )  # training may have begun this cycle
        training_from = row.productive_at if row.productive_at is not None else row.start
        lost_s, lost_steps = (
            _work_lost(heartbeat, training_from, ended_at) if outcome in (Outcome.PREEMPTED, Outcome.STOPPED) else (None, None)
        )
        self.store.close_interval(
            job.name,
            attempt.number,
            node=row.node,
            end=ended_at,
            end_reason=status.end_reason.value if status.end_reason else "unknown",
            outcome=outcome,
            cost_usd=interval_cost_usd(interval),
            on_demand_usd=ledger.share_at_close_usd(rows, row, ended_at, lost_s),
            prices=tuple((point.time, point.usd_per_hour) for point in prices),
            work_lost_s=lost_s,
            steps_lost=lost_steps,
        )

    def _refresh_running_prices(self, job: Job, attempt: Attempt, intervals: list[Interval]) -> list[Interval]:
        """Store in the attempt's running rows their price series so far; returns the job's rows as they now stand.

        Every reader of a running row (this cycle's budget check, status, the forecast, cost
        reports) prices it alone from that series, the way a closed one is priced, so a price that
        rises after the launch is counted as it rises. The provider is asked at most once per
        polling interval per (provider, instance type, zone, market), for all the jobs this
        controller drives; a row is written only when what it holds changes. It also holds the work
        its node did in the job's earlier intervals, where its share of the on-demand equivalent begins.
        """
        now = self.clock()
        running = [row for row in intervals if row.attempt == attempt.number and row.end is None]
        if not running:
            return intervals
        try:
            history = self._price_history(job.name, _offer_of(attempt), min(row.start for row in running), now)
        except ProviderError as error:  # an outage of the price API: the rows keep the series they hold, the next cycle asks again
            self._event_once(
                job,
                "provider",
                f"attempt {attempt.number}: no price history now ({error}); spend counted at the prices last seen",
                attempt.number,
            )
            return intervals
        current: dict[int, Interval] = {}
        for row in running:
            prices = _series_for(row, history)
            earlier_usd = ledger.open_row_on_demand_usd(row, ledger.worked_before_s(intervals, row, now))
            if prices != row.prices or earlier_usd != row.on_demand_usd:
                self.store.refresh_open_interval(job.name, row.attempt, row.node, prices=prices, on_demand_usd=earlier_usd)
            current[row.node] = replace(row, prices=prices, on_demand_usd=earlier_usd)
        return [current.get(row.node, row) if row.attempt == attempt.number else row for row in intervals]

    def _price_history(self, job: str, offer: Offer, since: float, now: float) -> tuple[PricePoint, ...]:
        """The offer's price history from ``since`` for ``job``, fetched again once per cycle, and a polling interval apart at most.

        A job asking again after it was served the last fetch starts a new cycle; the jobs after
        it in the same cycle share what it fetched, however long the cycle takes. A fetch reaches
        back to the earliest start asked for since the previous one, so one call covers the open
        intervals of every job on the offer.
        """
        key = (offer.provider, offer.instance_type, offer.zone, offer.market.value)
        fetched = self._fetched_prices.get(key)
        if fetched is None or (job in fetched.served and now - fetched.fetched_at >= self.settings.poll_interval_s):
            window = since if fetched is None else min(since, fetched.asked_since)
            fetched = _FetchedPrices(now, tuple(self.provider.price_history(offer, window, now)), asked_since=since, served=frozenset())
        fetched = replace(fetched, asked_since=min(fetched.asked_since, since), served=fetched.served | {job})
        self._fetched_prices[key] = fetched
        return fetched.points

    def _decide_after(self, job: Job, attempt: Attempt, outcome: Outcome, message: str) -> None:
        if job.stop_requested:
            self.store.clear_stop(job.name)
        if outcome is Outcome.FINISHED:
            self.store.set_state(job.name, JobState.SUCCEEDED, message, attempt=attempt.number)
        elif outcome is Outcome.STOPPED and job.stop_requested == STOP_FOR_BUDGET:
            spent = ledger.summarize(self.store.intervals(job.name), self.clock()).spent_usd
            max_usd = job.spec.budget.max_usd
            budget = "its" if max_usd is None else f"the {format_usd(max_usd)}"  # only a budget asks for this stop
            self.store.set_state(
                job.name,
                JobState.BUDGET_EXHAUSTED,
                f"spent ${spent:.4f} of {budget} budget ({message}); "
                f"`spotrun resume {job.name} --budget USD` continues from the checkpoint",
                attempt=attempt.number,
            )
        elif outcome is Outcome.STOPPED:
            self.store.set_state(
                job.name, JobState.RECOVERING, f"attempt {attempt.number} stopped ({message}); relaunching", attempt=attempt.number
            )
        elif outcome is Outcome.RELEASED:
            self.store.set_state(
                job.name,
                JobState.RECOVERING,
                f"attempt {attempt.number}: the gang never filled; trying another offer",
                attempt=attempt.number,
            )
        elif outcome is Outcome.PREEMPTED:
            self.store.set_state(
                job.name, JobState.RECOVERING, f"attempt {attempt.number} preempted ({message}); relaunching", attempt=attempt.number
            )
        else:
            allowed = job.spec.resources.max_restarts_on_errors
            if job.restarts_on_errors < allowed:
                self.store.count_restart_on_error(job.name)
                self.store.set_state(
                    job.name,
                    JobState.RECOVERING,
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

        Spend is priced as if the instance were stopped now (no refund assumed), over the price
        history its rows hold (refreshed this cycle), and what comes next at the price in effect now,
        so the cap holds whatever the cloud does next. The stop is asked for while the budget still pays for the
        grace period; if the instance has not stopped when one more interval would cross the
        cap, it is terminated: the job never overspends by more than one polling interval.
        """
        max_usd = job.spec.budget.max_usd
        if max_usd is None:
            return False
        now = self.clock()
        spent = ledger.summarize(intervals, now).spent_usd
        self._announce_budget(job, spent, max_usd)
        per_s = _running_usd_per_s(attempt, intervals, now)
        next_interval = spent + per_s * self.settings.poll_interval_s
        if job.stop_requested == STOP_FOR_BUDGET:
            if next_interval >= max_usd:
                self.store.event(
                    job.name, "stop", f"attempt {attempt.number}: budget reached before the checkpoint; terminating", attempt=attempt.number
                )
                self.provider.terminate([row.instance_id for row, _ in nodes.values()])
            return True
        if spent + per_s * self.settings.stop_reserve_s >= max_usd:
            self._request_stop(job, attempt, STOP_FOR_BUDGET, f"budget: ${spent:.4f} of {format_usd(max_usd)} spent")
            return True
        return False

    def _grant_horizon(self, job: Job, attempt: Attempt, intervals: list[Interval]) -> None:
        """Renew a budgeted attempt's spending horizon: how long its instances may run if this controller goes silent.

        The grant is the spec's ``budget.horizon``, cut to what the budget still pays for at the
        attempt's price less the time to checkpoint and stop, so that a job left without any
        controller stops within its budget. It is written when it would move by a tenth of a
        horizon or more (a write per cycle would be one PUT every few seconds per job).
        """
        budget = job.spec.budget
        if budget.max_usd is None or "horizon_s" not in budget.model_fields_set:  # specs recorded before horizons run without one
            return
        now = self.clock()
        usd_per_s = _running_usd_per_s(attempt, intervals, now) or job.spec.resources.nodes * attempt.price_usd_per_hour / 3600.0
        left_s = (budget.max_usd - ledger.summarize(intervals, now).spent_usd) / usd_per_s if usd_per_s > 0 else float("inf")
        duration_s = max(0.0, min(budget.horizon_s, left_s - self.settings.stop_grace_s))
        until = now + duration_s
        granted = self._horizons.get(job.name)
        if granted is not None and granted.attempt == attempt.number and abs(until - granted.until) < budget.horizon_s / 10:
            return
        horizon = SpendingHorizon(
            attempt=attempt.number,
            until=until,
            duration_s=duration_s,
            granted_at=now,
            stop_grace_s=self.settings.stop_grace_s,
            reason=f"granted for {format_duration(duration_s)} by controller {self.owner}",
        )
        _channel(job).write_horizon(horizon)
        self._horizons[job.name] = horizon

    def _announce_budget(self, job: Job, spent: float, max_usd: float) -> None:
        crossed = [pct for pct in BUDGET_ALERTS_PCT if spent >= max_usd * pct / 100 and pct > job.budget_alerted_pct]
        if crossed:
            pct = crossed[-1]
            self.store.alert_budget(
                job.name,
                pct,
                f"budget: {pct}% used (${spent:.4f} of {format_usd(max_usd)})",
                {"pct": pct, "spent_usd": spent, "max_usd": max_usd},
            )

    def _budget_cannot_start(self, job: Job, offer: Offer, intervals: list[Interval]) -> bool:
        """End the job BUDGET_EXHAUSTED when what is left would not pay for a restart and one interval on ``offer``."""
        max_usd = job.spec.budget.max_usd
        if max_usd is None:
            return False
        admission = admit(
            job.spec,
            job.training_progress,
            intervals,
            offer,
            priors=self.provider.priors,
            max_usd=max_usd,
            reserve_s=self.settings.stop_reserve_s,
            now=self.clock(),
        )
        if admission.pays_for_start:
            return False
        self.store.set_state(
            job.name,
            JobState.BUDGET_EXHAUSTED,
            f"spent ${admission.spent_usd:.4f} of the {format_usd(max_usd)} budget; another instance needs about ${admission.start_usd:.4f} "
            f"before it makes progress. `spotrun resume {job.name} --budget USD` continues from the newest checkpoint",
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
        _channel(job).write_stop(StopRequest(attempt=attempt.number, kind=kind, reason=reason, time=self.clock()))
        self.store.request_stop(
            job.name, kind, f"attempt {attempt.number}: checkpoint and stop requested ({reason})", attempt=attempt.number
        )

    def _terminate_after_grace(self, job: Job, attempt: Attempt, nodes: dict[int, tuple[Interval, InstanceStatus]]) -> None:
        if job.stop_requested_at is not None and self.clock() - job.stop_requested_at > self.settings.stop_grace_s:
            self.store.event(
                job.name,
                "stop",
                f"attempt {attempt.number}: no checkpoint within {self.settings.stop_grace_s:.0f}s of the stop request; terminating",
                attempt=attempt.number,
            )
            self.provider.terminate([row.instance_id for row, _ in nodes.values()])

    # ---------------------------------------------------------------- cancel

    def _cancel(self, job: Job, attempt: Attempt | None, nodes: list[Interval]) -> None:
        if attempt is not None and nodes:
            self.provider.terminate([row.instance_id for row in nodes])
            statuses = self.provider.poll([row.instance_id for row in nodes])
            for row in nodes:
                status = statuses[row.instance_id]
                if status.end_reason is None:
                    status = InstanceStatus(
                        status.instance_id,
                        status.state,
                        status.launched_at,
                        status.ended_at or self.clock(),
                        EndReason.TERMINATED_BY_USER,
                        status.exit_code,
                    )
                if row.node == 0:
                    assert status.end_reason is not None
                    self.store.end_attempt(
                        job.name,
                        attempt.number,
                        ended_at=status.ended_at or self.clock(),
                        end_reason=status.end_reason.value,
                        outcome=Outcome.CANCELLED,
                        exit_code=status.exit_code,
                    )
                self._close_interval(job, attempt, row, status, Outcome.CANCELLED, None)
        elif attempt is not None:
            self.store.end_attempt(
                job.name, attempt.number, ended_at=self.clock(), end_reason="never-launched", outcome=Outcome.CANCELLED, exit_code=None
            )
        self.store.set_state(job.name, JobState.CANCELLED, "cancelled by request")


def _running_usd_per_s(attempt: Attempt, intervals: list[Interval], now: float) -> float:
    """What the attempt's running instances cost per second now, by the price series their rows hold (0 before any runs)."""
    return sum(ledger.usd_per_hour_at(row, now) for row in intervals if row.attempt == attempt.number and row.end is None) / 3600.0


def _channel(job: Job) -> JobChannel:
    """The job's signed mailbox in its checkpoint prefix."""
    return JobChannel(Mailbox.at(job.checkpoint_url), job.name, job.key_bytes)


@dataclass(frozen=True)
class _FetchedPrices:
    """A price history as the controller last fetched it, shared by every open interval on the same offer."""

    fetched_at: float
    points: tuple[PricePoint, ...]
    asked_since: float  # the earliest start asked for since this fetch: the next one reaches back to it
    served: frozenset[str]  # the jobs given this fetch: one of them asking again is the next cycle


def _series_for(row: Interval, history: Sequence[PricePoint]) -> tuple[tuple[float, float], ...]:
    """``row``'s price series out of a fetched history: the price in effect at its start, then every change.

    A history that begins after the row's start (fetched for later rows) keeps the points the row
    already held before it; the next fetch reaches back to the row's start.
    """
    if history[0].time <= row.start:
        later = tuple((point.time, point.usd_per_hour) for point in history if point.time > row.start)
        return ((row.start, price_at(history, row.start)), *later)
    held = tuple((time, price) for time, price in row.prices if time < history[0].time)
    return (*held, *((point.time, point.usd_per_hour) for point in history))


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


def _work_lost(heartbeat: Heartbeat | None, started: float, ended_at: float) -> tuple[float, int]:
    """Training done after the last committed checkpoint: lost when the instance went.

    The clock stops when training stopped: at the agent's last report if it reported an end
    (after an emergency checkpoint that is right after the checkpoint), else at the end of the
    instance. It starts at the checkpoint if this attempt committed one, else when training
    started (``started``: the time before that is restart overhead, counted apart).
    """
    if heartbeat is None:
        return max(0.0, ended_at - started), 0
    progress = heartbeat.progress
    checkpoint = progress.checkpoint if progress is not None else None
    stopped_at = (heartbeat.time or ended_at) if heartbeat.status in _REPORTED_ENDS else ended_at
    since = max(checkpoint.time if checkpoint is not None else 0.0, started)
    steps = max(0, progress.step - progress.resumes_at) if progress is not None else 0
    return max(0.0, stopped_at - since), steps


def _launch_tags(job: Job) -> dict[str, str]:
    """The spec's team and free-form tags (for cost allocation), and where the agent finds its job (the provider adds the rest)."""
    tags = dict(job.spec.tags)
    if job.spec.team:
        tags["team"] = job.spec.team
    return {**tags, TAG_URL: job.checkpoint_url}


def _credential_tags(credentials: LaunchCredentials) -> dict[str, str]:
    """The launch credentials as EC2 instance tags, which only the instance itself reads (through its metadata)."""
    return {TAG_SPEC: credentials.spec_sha256, **({TAG_KEY: credentials.key} if credentials.key else {})}


_LOST = (EndReason.SPOT_INTERRUPTION, EndReason.HOST_LOST)


def _host_lost(status: InstanceStatus) -> bool:
    """Whether a node went with its host: taken back, vanished, or its agent killed (a node's own verdict is rank 0's to give)."""
    return status.end_reason in _LOST or _killed(status)


def _node_label(job: Job, node: int) -> str:
    return f"node {node}: " if job.spec.resources.nodes > 1 else ""


def _ledger_address(instance: Instance, hosted: Rendezvous | None) -> str:
    """What a node's row holds in the ledger's address column: on rank 0's row the gang's rendezvous, else the private address."""
    return str(hosted) if hosted is not None else instance.private_address


def _rendezvous_in_ledger(rank0: Interval) -> Rendezvous:
    """The gang's rendezvous, from rank 0's row (see :func:`_ledger_address`): what a relaunch of its other nodes joins."""
    return Rendezvous.parse(rank0.address)


def _gang_outcome(statuses: dict[int, InstanceStatus], heartbeat: Heartbeat | None, *, stop_requested: str | None) -> tuple[Outcome, str]:
    """How a gang's attempt ended: rank 0's word on finishing, then any node lost, then any node's failure."""
    outcome, message = classify(statuses[0], heartbeat, stop_requested=stop_requested)
    if len(statuses) == 1 or outcome is Outcome.FINISHED:
        return outcome, message
    lost = sorted(node for node, status in statuses.items() if _host_lost(status))
    if lost:
        reason = statuses[lost[0]].end_reason
        assert reason is not None
        return Outcome.PREEMPTED, f"node {lost[0]}: {_agent_death(statuses[lost[0]]) if _killed(statuses[lost[0]]) else reason.value}"
    failed = sorted(
        node
        for node, status in statuses.items()
        if status.end_reason is EndReason.AGENT_EXITED and status.exit_code not in (0, PREEMPTED_EXIT_CODE)
    )
    if failed and outcome is not Outcome.STOPPED:
        return Outcome.FAILED, f"node {failed[0]}: the agent exited with code {statuses[failed[0]].exit_code}"
    return outcome, message


def _node_outcomes(outcome: Outcome, statuses: dict[int, InstanceStatus]) -> dict[int, Outcome]:
    """Each node's ledger outcome: a preempted gang's nodes actually lost are preempted (the gang is one preemption), the rest stopped with it."""
    if outcome is not Outcome.PREEMPTED or len(statuses) == 1:
        return dict.fromkeys(statuses, outcome)
    lost = [node for node, status in statuses.items() if _host_lost(status)] or [0]
    return {node: Outcome.PREEMPTED if node in lost else Outcome.STOPPED for node in statuses}
