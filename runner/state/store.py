"""The state store: jobs, their attempts, the ledger of billed instance intervals, and every event.

SQLite under ``SPOTRUN_HOME`` by default, or a shared database (``runner.state.database``); SQLAlchemy
Core, with the schema versioned by migrations (``runner.state.schema``). Every launch, notice, exit and
relaunch is an event row naming who wrote it, so a job's history can be replayed.

Many controllers may share one store. Each live job is driven by at most one of them: the
holder of its lease (owner, expiry), renewed every cycle. A store opened ``for_controller``
writes a job's rows only while its controller holds that job's lease; the check and the write
are one transaction, so a controller that stalled past its lease and lost the job to another
cannot launch, bill or decide anything for it afterwards.
"""

from __future__ import annotations

import copy
import enum
import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from checkpoints.progress import Progress
from runner.errors import JobNotFoundError, JobStateError, LeaseLostError
from runner.instance.protocol import Heartbeat
from runner.money import format_usd
from runner.spec.job_spec import JobSpec, from_stored, stored_form
from runner.state import schema
from runner.state.database import DatabaseLocation, connect, database_location


class JobState(str, enum.Enum):
    """A job's lifecycle; the last four are final (BUDGET_EXHAUSTED until `spotrun resume --budget`)."""

    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"

    @property
    def is_final(self) -> bool:
        """True once no controller drives the job: nothing runs for it unless it is resumed with more budget."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.BUDGET_EXHAUSTED)


class Outcome(str, enum.Enum):
    """How one attempt ended, as the controller classified it."""

    FINISHED = "finished"
    PREEMPTED = "preempted"  # notice + kill, or the instance vanished: relaunch without limit
    FAILED = "failed"  # the training exited with an error: counted against max_restarts_on_errors
    CANCELLED = "cancelled"
    STOPPED = "stopped"  # spotrun asked for a checkpoint and a stop: the budget ran out, or the market changed
    RELEASED = "released"  # a gang that never filled within gang_timeout: its instances were given back


_metadata = sa.MetaData()

jobs_table = sa.Table(
    "jobs",
    _metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("spec_path", sa.Text, nullable=False),
    sa.Column("checkpoint_url", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Left 0 and read by no one: preemptions are counted from the ledger (runner.cost.figures); kept for older spotruns sharing the store.
    sa.Column("preemptions", sa.Integer, nullable=False, default=0),
    sa.Column("restarts_on_errors", sa.Integer, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("progress_json", sa.Text, nullable=True),  # the newest heartbeat
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("launched_by", sa.String(64), nullable=False, default="", index=True),
    sa.Column("stop_requested", sa.String(16), nullable=True),  # why the controller asked the instance to stop: budget, market
    sa.Column("stop_requested_at", sa.Float, nullable=True),
    sa.Column("budget_alerted_pct", sa.Integer, nullable=False, default=0),  # the highest budget threshold announced
    sa.Column("lease_owner", sa.String(128), nullable=True),  # the controller driving the job
    sa.Column("lease_expires_at", sa.Float, nullable=True),  # by the database's clock where it has one (PostgreSQL)
    sa.Column("secret", sa.String(64), nullable=True),  # hex key signing the job's messages (runner.instance.protocol); never shown
)

attempts_table = sa.Table(
    "attempts",
    _metadata,
    sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("token", sa.String(128), nullable=False, unique=True),
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("instance_type", sa.String(64), nullable=False),
    sa.Column("zone", sa.String(64), nullable=False),
    sa.Column("market", sa.String(16), nullable=False),
    sa.Column("price_usd_per_hour", sa.Float, nullable=False),
    sa.Column("on_demand_price_usd_per_hour", sa.Float, nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False, default=0),
    sa.Column("instance_id", sa.String(64), nullable=True),
    sa.Column("requested_at", sa.Float, nullable=False),
    sa.Column("launched_at", sa.Float, nullable=True),
    sa.Column("ended_at", sa.Float, nullable=True),
    sa.Column("end_reason", sa.String(32), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("exit_code", sa.Integer, nullable=True),
)

settings_table = sa.Table(
    "settings",
    _metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

# The ledger: one row per billed instance interval, opened at launch and priced when it closes.
# Team and tags are copied from the spec so reports group by them without reading specs.
intervals_table = sa.Table(
    "ledger",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("node", sa.Integer, nullable=False, default=0),
    sa.Column("instance_id", sa.String(64), nullable=False),
    sa.Column("address", sa.String(64), nullable=False, default=""),  # private address: rank 0's is the gang's rendezvous
    sa.Column("provider", sa.String(32), nullable=False),
    sa.Column("instance_type", sa.String(64), nullable=False),
    sa.Column("zone", sa.String(64), nullable=False),
    sa.Column("market", sa.String(16), nullable=False),
    sa.Column("gpus", sa.Integer, nullable=False),
    sa.Column("price_usd_per_hour", sa.Float, nullable=False),
    sa.Column("on_demand_price_usd_per_hour", sa.Float, nullable=False),
    sa.Column("requested_at", sa.Float, nullable=False),  # requested_at..start is provisioning time
    sa.Column("start", sa.Float, nullable=False, index=True),
    sa.Column("end", sa.Float, nullable=True),
    sa.Column("end_reason", sa.String(32), nullable=True),
    sa.Column("outcome", sa.String(16), nullable=True),
    sa.Column("cost_usd", sa.Float, nullable=True),
    sa.Column("on_demand_usd", sa.Float, nullable=True),
    sa.Column("prices_json", sa.Text, nullable=True),  # the price series the cost integrates: [[time, usd_per_hour], ...]
    sa.Column("productive_at", sa.Float, nullable=True),  # when training first made progress: start..this is restart time
    sa.Column("work_lost_s", sa.Float, nullable=True),  # training done after the last committed checkpoint, lost at the end
    sa.Column("steps_lost", sa.Integer, nullable=True),
    sa.Column("team", sa.String(64), nullable=True),
    sa.Column("tags_json", sa.Text, nullable=False, default="{}"),
    sa.Column("launched_by", sa.String(64), nullable=False, default=""),
    sa.UniqueConstraint("job", "attempt", "node"),
)

events_table = sa.Table(
    "events",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job", sa.String(63), sa.ForeignKey("jobs.name"), nullable=False, index=True),
    sa.Column("time", sa.Float, nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=True),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("data_json", sa.Text, nullable=True),
    sa.Column("actor", sa.String(128), nullable=False, default=""),  # the controller (or user) that wrote it
)


@dataclass(frozen=True)
class Job:
    """A job row."""

    name: str
    state: JobState
    spec_json: str
    spec_path: str
    checkpoint_url: str
    created_at: float
    updated_at: float
    restarts_on_errors: int
    cancel_requested: bool
    progress: Heartbeat | None  # the newest heartbeat the controller read (rank 0's), None before the first
    message: str | None
    launched_by: str = ""
    stop_requested: str | None = None
    stop_requested_at: float | None = None
    budget_alerted_pct: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    key: str | None = field(default=None, repr=False)  # hex; signs the job's messages; None for jobs recorded before keys

    @property
    def key_bytes(self) -> bytes | None:
        """The job's key as bytes, for signing and verifying its messages."""
        return bytes.fromhex(self.key) if self.key else None

    @property
    def training_progress(self) -> Progress | None:
        """The training's newest report (step, throughput, newest checkpoint) as the newest heartbeat carried it, if any."""
        return self.progress.progress if self.progress else None

    @cached_property
    def spec(self) -> JobSpec:
        """The resolved spec the job was submitted with (parsed once per row read)."""
        return from_stored(json.loads(self.spec_json), where=f"job {self.name!r}")


@dataclass(frozen=True)
class Attempt:
    """One instance launched for a job: also the billed interval."""

    job: str
    number: int
    token: str
    provider: str
    instance_type: str
    zone: str
    market: str
    price_usd_per_hour: float
    on_demand_price_usd_per_hour: float
    instance_id: str | None
    requested_at: float
    launched_at: float | None
    ended_at: float | None
    end_reason: str | None
    outcome: Outcome | None
    exit_code: int | None
    gpus: int = 0

    @property
    def is_open(self) -> bool:
        """The controller still has to watch this attempt."""
        return self.outcome is None


@dataclass(frozen=True)
class Interval:
    """One ledger row: a billed instance interval. ``end`` None: still running, priced up to now."""

    job: str
    attempt: int
    node: int
    instance_id: str
    provider: str
    instance_type: str
    zone: str
    market: str
    gpus: int
    price_usd_per_hour: float
    on_demand_price_usd_per_hour: float
    requested_at: float
    start: float
    end: float | None
    end_reason: str | None
    outcome: str | None
    cost_usd: float | None
    on_demand_usd: float | None
    prices: tuple[tuple[float, float], ...]
    productive_at: float | None
    work_lost_s: float | None
    steps_lost: int | None
    team: str | None
    tags: dict[str, str]
    launched_by: str
    address: str = ""


@dataclass(frozen=True)
class Event:
    """One line of a job's history."""

    job: str
    time: float
    kind: str
    attempt: int | None
    message: str
    data: dict[str, Any]
    actor: str = ""


@dataclass(frozen=True)
class Lease:
    """Who drives a job, and for how much longer unless renewed."""

    owner: str
    expires_in_s: float


@dataclass(frozen=True)
class JobRows:
    """One job's rows as a controller cycle reads them at its start (``StateStore.live_snapshot``), passed down instead of read again."""

    job: Job
    attempts: tuple[Attempt, ...]  # first to last
    intervals: tuple[Interval, ...]  # the job's ledger rows, oldest first

    @property
    def open_attempt(self) -> Attempt | None:
        """The newest attempt while it has no outcome: the one the controller launches or watches."""
        return self.attempts[-1] if self.attempts and self.attempts[-1].is_open else None

    @property
    def open_intervals(self) -> list[Interval]:
        """The open attempt's ledger rows, one per node launched for it; none without an open attempt."""
        attempt = self.open_attempt
        return [row for row in self.intervals if attempt is not None and row.attempt == attempt.number]


def open_store(home: Path, *, actor: str = "") -> StateStore:
    """The store this spotrun is configured for (``SPOTRUN_DB``, the config's ``db``, else SQLite in ``home``)."""
    return StateStore(database_location(home), actor=actor)


class StateStore:
    """Reads and writes jobs, attempts, the ledger and events; every method is one short transaction.

    Opening checks the schema version first (and upgrades a SQLite file in place), so nothing is
    written to a database this spotrun does not understand. ``actor`` is recorded on every event.
    """

    def __init__(self, location: DatabaseLocation | str, *, clock: Any = time.time, actor: str = "") -> None:
        if isinstance(location, str):
            location = DatabaseLocation(location, "the state store URL")
        self.engine = connect(location)
        schema.check(self.engine, upgrade_in_place=location.is_sqlite)
        self.clock = clock
        self.actor = actor
        self.lease_owner: str | None = None

    def for_controller(self, owner: str) -> StateStore:
        """This store as controller ``owner`` uses it: same database, events signed ``owner``, writes fenced by the lease."""
        fenced = copy.copy(self)
        fenced.actor = owner
        fenced.lease_owner = owner
        return fenced

    @contextmanager
    def _transaction(self, job: str | None = None) -> Iterator[Connection]:
        """One transaction; for a controller's store and a ``job``, only while the controller holds the job's lease.

        The fence is an UPDATE of the job's row, so it takes the row's lock (PostgreSQL) or the
        write lock (SQLite) first: a takeover waits for this transaction, and this one fails
        after a takeover.
        """
        with self.engine.begin() as connection:
            if job is not None and self.lease_owner is not None:
                held = connection.execute(
                    jobs_table.update()
                    .where(jobs_table.c.name == job, jobs_table.c.lease_owner == self.lease_owner)
                    .values(lease_owner=self.lease_owner)
                ).rowcount
                if not held:
                    raise LeaseLostError(
                        f"job {job!r}: controller {self.lease_owner} no longer holds its lease; another controller drives it"
                    )
            yield connection

    # -------------------------------------------------------------- jobs

    def create_job(
        self, spec: JobSpec, *, spec_path: str, checkpoint_url: str | None = None, launched_by: str = "", key: str | None = None
    ) -> Job:
        """Record a new PENDING job (who submitted it, and its key); a name already in the store is an error.

        ``checkpoint_url`` is the spec's own unless given (tests keep a job's prefix in memory).

        The name's primary key decides, not a look first: of two submissions of one name at the same
        instant (on one SQLite file or one PostgreSQL server) both would look and find nothing, so
        the insert itself is the check. Exactly one records the job, whole with its first event,
        and the other gets the "already exists" error.
        """
        now = self.clock()
        name = spec.name
        spec_json = json.dumps(stored_form(spec))
        url = checkpoint_url or spec.checkpoint.url
        assert url is not None  # JobSpec resolves it
        try:
            self._insert_job(name, now, spec_json=spec_json, spec_path=spec_path, checkpoint_url=url, launched_by=launched_by, key=key)
        except sa.exc.IntegrityError:
            raise JobStateError(
                f"a job named {name!r} already exists ({self.job(name).state.value}); "
                f"see `spotrun status {name}`, resume it with `spotrun resume {name}`, or give the new job another name"
            ) from None
        return self.job(name)

    def _insert_job(
        self, name: str, now: float, *, spec_json: str, spec_path: str, checkpoint_url: str, launched_by: str, key: str | None
    ) -> None:
        """The job's row and its "submitted" event, in one transaction: IntegrityError when the name is taken."""
        with self._transaction() as db:
            db.execute(
                jobs_table.insert().values(
                    name=name,
                    state=JobState.PENDING.value,
                    spec_json=spec_json,
                    spec_path=spec_path,
                    checkpoint_url=checkpoint_url,
                    created_at=now,
                    updated_at=now,
                    restarts_on_errors=0,
                    cancel_requested=False,
                    budget_alerted_pct=0,
                    launched_by=launched_by,
                    secret=key,
                )
            )
            self._event(db, name, "submitted", f"job submitted from {spec_path}")

    def job(self, name: str) -> Job:
        """The job named ``name``; JobNotFoundError lists what exists."""
        with self._transaction() as db:
            row = db.execute(sa.select(jobs_table).where(jobs_table.c.name == name)).first()
            if row is None:
                names = [r.name for r in db.execute(sa.select(jobs_table.c.name).order_by(jobs_table.c.name))]
                known = ", ".join(names[:10]) or "none"
                raise JobNotFoundError(f"no job named {name!r} in this state store (jobs: {known})")
        return _job_from_row(row)

    def jobs(self, *, launched_by: str | None = None) -> list[Job]:
        """All jobs (or those ``launched_by`` one user), newest first."""
        query = sa.select(jobs_table).order_by(jobs_table.c.created_at.desc())
        if launched_by is not None:
            query = query.where(jobs_table.c.launched_by == launched_by)
        with self._transaction() as db:
            rows = db.execute(query).all()
        return [_job_from_row(row) for row in rows]

    def live_jobs(self) -> list[Job]:
        """Jobs not in a final state, oldest first: what a controller service drives."""
        final = [state.value for state in JobState if state.is_final]
        with self._transaction() as db:
            rows = db.execute(sa.select(jobs_table).where(jobs_table.c.state.not_in(final)).order_by(jobs_table.c.created_at)).all()
        return [_job_from_row(row) for row in rows]

    def jobs_named(self, names: Sequence[str]) -> dict[str, Job]:
        """The jobs among ``names`` that exist, by name: one SELECT however many they are (one per ``_NAMES_PER_STATEMENT``)."""
        with self._transaction() as db:
            return {job.name: job for job in _jobs_named(db, names)}

    def live_snapshot(self, names: Sequence[str]) -> dict[str, JobRows]:
        """Each named job's row, attempts and ledger rows, in three SELECTs whatever the number of jobs (per ``_NAMES_PER_STATEMENT``).

        What one controller cycle reads at its start, where reading each job alone took three
        queries a job. Jobs that do not exist are left out.
        """
        attempts: dict[str, list[Attempt]] = {}
        intervals: dict[str, list[Interval]] = {}
        with self._transaction() as db:
            jobs = _jobs_named(db, names)
            for chunk in _chunks(names):
                query = (
                    sa.select(attempts_table).where(attempts_table.c.job.in_(chunk)).order_by(attempts_table.c.job, attempts_table.c.number)
                )
                for row in db.execute(query):
                    attempts.setdefault(row.job, []).append(_attempt_from_row(row))
                query = (
                    sa.select(*_INTERVAL_COLUMNS)
                    .where(intervals_table.c.job.in_(chunk))
                    .order_by(intervals_table.c.job, intervals_table.c.start, intervals_table.c.id)
                )
                for interval in _intervals_from_rows(db.execute(query)):
                    intervals.setdefault(interval.job, []).append(interval)
        return {job.name: JobRows(job, tuple(attempts.get(job.name, ())), tuple(intervals.get(job.name, ()))) for job in jobs}

    # ------------------------------------------------------------ leases

    def acquire_leases(self, names: Sequence[str], ttl_s: float, *, vacated: Callable[[str], bool] = lambda owner: False) -> set[str]:
        """Renew this controller's leases among ``names`` for ``ttl_s`` and take those free or expired; returns the jobs it now holds.

        A takeover is a compare-and-set on the lease as it was read, so when two controllers try
        at the same instant exactly one wins each job. The leases this controller holds are
        renewed together, in a constant number of statements however many jobs it drives. On
        PostgreSQL every row to be written is locked first, in name order, so two controllers
        never wait on each other's rows in a cycle (no deadlock). Final jobs are never leased.
        Taking a job records who held it before. ``vacated(owner)`` says a current lease's owner
        is known to be gone (a dead process on this machine).
        """
        owner = self._require_owner()
        final = [state.value for state in JobState if state.is_final]
        with self._transaction() as db:
            seen = [
                row
                for chunk in _chunks(sorted(names))
                for row in db.execute(
                    sa.select(jobs_table.c.name, jobs_table.c.lease_owner, jobs_table.c.lease_expires_at)
                    .where(jobs_table.c.name.in_(chunk), jobs_table.c.state.not_in(final))
                    .order_by(jobs_table.c.name)
                )
            ]
        with self._transaction() as db:
            now = self._now(db)
            mine = [row.name for row in seen if row.lease_owner == owner]
            free = [  # unleased, lapsed, or left by a controller that is gone
                row
                for row in seen
                if row.lease_owner != owner
                and (row.lease_owner is None or (row.lease_expires_at or 0.0) <= now or vacated(row.lease_owner))
            ]
            if db.dialect.name == "postgresql":
                for chunk in _chunks(sorted([*mine, *(row.name for row in free)])):
                    db.execute(
                        sa.select(jobs_table.c.name).where(jobs_table.c.name.in_(chunk)).order_by(jobs_table.c.name).with_for_update()
                    )
            held = self._renew_leases(db, mine, owner, now + ttl_s)
            for row in free:
                taken = db.execute(
                    jobs_table.update()
                    .where(
                        jobs_table.c.name == row.name,
                        jobs_table.c.lease_owner.is_not_distinct_from(row.lease_owner),
                        jobs_table.c.lease_expires_at.is_not_distinct_from(row.lease_expires_at),
                    )
                    .values(lease_owner=owner, lease_expires_at=now + ttl_s)
                ).rowcount
                if not taken:
                    continue
                held.add(row.name)
                if row.lease_owner is None:
                    self._event(db, row.name, "lease", f"controller {owner} drives the job")
                else:
                    expired_s = now - (row.lease_expires_at or now)
                    why = f"whose lease expired {expired_s:.1f}s ago" if expired_s >= 0 else "whose process is gone"
                    self._event(
                        db,
                        row.name,
                        "lease",
                        f"controller {owner} adopted the job from {row.lease_owner}, {why}",
                        data={"from": row.lease_owner, "expired_s": expired_s},
                    )
        return held

    def _renew_leases(self, db: Connection, names: Sequence[str], owner: str, until: float) -> set[str]:
        """Extend ``owner``'s leases among ``names`` to ``until``; returns those it still held.

        One UPDATE, and one SELECT of what it changed: a lease that lapsed since it was read may
        have been taken by another controller, and it stays that one's. In the same transaction the
        rows are this one's to read (SQLite's write lock, PostgreSQL's row locks), and no other
        controller ever writes this owner's name.
        """
        for chunk in _chunks(names):
            db.execute(
                jobs_table.update().where(jobs_table.c.name.in_(chunk), jobs_table.c.lease_owner == owner).values(lease_expires_at=until)
            )
        return {
            row.name
            for chunk in _chunks(names)
            for row in db.execute(sa.select(jobs_table.c.name).where(jobs_table.c.name.in_(chunk), jobs_table.c.lease_owner == owner))
        }

    def release_leases(self, names: Sequence[str]) -> None:
        """Give up this controller's leases on ``names`` at once, so another controller may drive them without waiting."""
        owner = self._require_owner()
        with self._transaction() as db:
            db.execute(
                jobs_table.update()
                .where(jobs_table.c.name.in_(list(names)), jobs_table.c.lease_owner == owner)
                .values(lease_owner=None, lease_expires_at=None)
            )

    def lease(self, name: str) -> Lease | None:
        """Who drives ``name`` now; None when no controller holds a current lease on it."""
        with self._transaction() as db:
            now = self._now(db)
            row = db.execute(sa.select(jobs_table.c.lease_owner, jobs_table.c.lease_expires_at).where(jobs_table.c.name == name)).first()
        if row is None or row.lease_owner is None or (row.lease_expires_at or 0.0) <= now:
            return None
        return Lease(row.lease_owner, row.lease_expires_at - now)

    def _require_owner(self) -> str:
        if self.lease_owner is None:
            raise TypeError("leases are taken by a controller's store: use store.for_controller(owner)")
        return self.lease_owner

    def _now(self, db: Connection) -> float:
        """Lease time: the database server's clock where it has one, so controllers on machines whose clocks differ agree."""
        if db.dialect.name == "postgresql":
            return float(db.execute(sa.select(sa.func.extract("epoch", sa.func.clock_timestamp()))).scalar_one())
        return float(self.clock())

    def set_state(self, name: str, state: JobState, message: str | None = None, *, attempt: int | None = None) -> None:
        """Move a job to ``state`` and record the transition as an event."""
        with self._transaction(name) as db:
            values: dict[str, Any] = {"state": state.value, "updated_at": self.clock()}
            if message is not None:
                values["message"] = message
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(**values))
            self._event(db, name, "state", f"{state.value}" + (f": {message}" if message else ""), attempt=attempt)

    def set_progress(self, name: str, heartbeat: Heartbeat) -> None:
        """Keep the newest heartbeat for status displays."""
        with self._transaction(name) as db:
            db.execute(
                jobs_table.update()
                .where(jobs_table.c.name == name)
                .values(progress_json=json.dumps(heartbeat.to_json()), updated_at=self.clock())
            )

    def count_restart_on_error(self, name: str) -> None:
        """One more relaunch after a failure of the job's code: what ``max_restarts_on_errors`` limits."""
        counter = jobs_table.c.restarts_on_errors
        with self._transaction(name) as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values({counter: counter + 1}))

    def request_stop(self, name: str, kind: str, message: str, *, attempt: int) -> None:
        """Record that the controller asked the running instance to checkpoint and stop, and why."""
        with self._transaction(name) as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(stop_requested=kind, stop_requested_at=self.clock()))
            self._event(db, name, "stop", message, attempt=attempt, data={"kind": kind})

    def clear_stop(self, name: str) -> None:
        """The stop is done with: the next instance runs normally."""
        with self._transaction(name) as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(stop_requested=None, stop_requested_at=None))

    def alert_budget(self, name: str, pct: int, message: str, data: dict[str, Any]) -> None:
        """Announce that spend crossed ``pct`` % of the budget (once per threshold)."""
        with self._transaction(name) as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(budget_alerted_pct=pct))
            self._event(db, name, "budget", message, data=data)

    def request_cancel(self, name: str) -> None:
        """Ask the controller driving ``name`` to cancel it."""
        with self._transaction(name) as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(cancel_requested=True))
            self._event(db, name, "cancel", "cancellation requested")

    # ---------------------------------------------------------- attempts

    def start_attempt(self, attempt: Attempt) -> None:
        """Record an attempt before its launch, so a controller restarted mid-launch reuses its token."""
        with self._transaction(attempt.job) as db:
            db.execute(attempts_table.insert().values(**_attempt_values(attempt)))

    def retarget_attempt(self, attempt: Attempt) -> None:
        """Point a not yet launched attempt at another offer (and token), after its offer ran out of capacity."""
        values = _attempt_values(attempt)
        changed = {
            key: values[key]
            for key in ("token", "provider", "instance_type", "zone", "market", "price_usd_per_hour", "on_demand_price_usd_per_hour")
        }
        with self._transaction(attempt.job) as db:
            db.execute(
                attempts_table.update()
                .where(
                    attempts_table.c.job == attempt.job, attempts_table.c.number == attempt.number, attempts_table.c.instance_id.is_(None)
                )
                .values(**changed)
            )

    def set_launched(self, interval: Interval) -> None:
        """The provider answered the launch: the attempt has its instance and the ledger its open interval.

        One transaction, and idempotent: a controller restarted after it re-launches with the same
        token, gets the same instance, and must not open a second interval for it.
        """
        with self._transaction(interval.job) as db:
            if interval.node == 0:  # the attempt names its rank 0; every node has its own ledger row
                db.execute(
                    attempts_table.update()
                    .where(attempts_table.c.job == interval.job, attempts_table.c.number == interval.attempt)
                    .values(instance_id=interval.instance_id, launched_at=interval.start)
                )
            exists = db.execute(
                sa.select(intervals_table.c.id).where(
                    intervals_table.c.job == interval.job,
                    intervals_table.c.attempt == interval.attempt,
                    intervals_table.c.node == interval.node,
                )
            ).first()
            if exists is None:
                db.execute(intervals_table.insert().values(**_interval_values(interval)))

    def refresh_open_interval(
        self, name: str, attempt: int, node: int, *, prices: tuple[tuple[float, float], ...], on_demand_usd: float | None
    ) -> None:
        """Bring a running interval's row up to date, so that every reader prices it alone (``runner.cost.ledger.priced``).

        ``prices`` is its price series so far. Until the interval closes, ``on_demand_usd`` holds the
        work its node did in the job's earlier intervals (``runner.cost.ledger.open_row_on_demand_usd``),
        where its share of the on-demand equivalent begins. A closed row is left as it was billed.
        """
        with self._transaction(name) as db:
            db.execute(
                intervals_table.update()
                .where(*_interval_key(name, attempt, node), intervals_table.c.end.is_(None))
                .values(prices_json=json.dumps(prices), on_demand_usd=on_demand_usd)
            )

    def end_attempt(self, name: str, number: int, *, ended_at: float, end_reason: str, outcome: Outcome, exit_code: int | None) -> None:
        """Close an attempt: its billed interval ends at ``ended_at``."""
        with self._transaction(name) as db:
            db.execute(
                attempts_table.update()
                .where(attempts_table.c.job == name, attempts_table.c.number == number)
                .values(ended_at=ended_at, end_reason=end_reason, outcome=outcome.value, exit_code=exit_code)
            )

    def set_budget(self, name: str, max_usd: float) -> None:
        """Give a job a new spending cap (``budget.max_usd`` of its stored spec)."""
        with self._transaction(name) as db:
            row = db.execute(sa.select(jobs_table.c.spec_json).where(jobs_table.c.name == name)).one()
            spec = from_stored(json.loads(row.spec_json), where=f"job {name!r}")
            previous = spec.budget.max_usd
            spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={"max_usd": max_usd})})
            db.execute(
                jobs_table.update()
                .where(jobs_table.c.name == name)
                .values(spec_json=json.dumps(stored_form(spec)), updated_at=self.clock(), budget_alerted_pct=0)
            )
            self._event(
                db, name, "budget", f"budget set to {format_usd(max_usd)} (was {'none' if previous is None else format_usd(previous)})"
            )

    # ------------------------------------------------------------ ledger

    def set_productive(self, name: str, attempt: int, at: float) -> None:
        """Training made its first progress at ``at`` on every node of the attempt (a gang trains together): before it was restart overhead."""
        with self._transaction(name) as db:
            db.execute(
                intervals_table.update()
                .where(intervals_table.c.job == name, intervals_table.c.attempt == attempt, intervals_table.c.productive_at.is_(None))
                .values(productive_at=at)
            )

    def close_interval(
        self,
        name: str,
        attempt: int,
        *,
        end: float,
        end_reason: str,
        outcome: Outcome,
        cost_usd: float,
        on_demand_usd: float,
        prices: tuple[tuple[float, float], ...],
        work_lost_s: float | None,
        steps_lost: int | None,
        node: int = 0,
    ) -> None:
        """Price an interval that ended, by the cloud's billing rules (the caller applied them)."""
        with self._transaction(name) as db:
            db.execute(
                intervals_table.update()
                .where(*_interval_key(name, attempt, node))
                .values(
                    end=end,
                    end_reason=end_reason,
                    outcome=outcome.value,
                    cost_usd=cost_usd,
                    on_demand_usd=on_demand_usd,
                    prices_json=json.dumps(prices),
                    work_lost_s=work_lost_s,
                    steps_lost=steps_lost,
                )
            )

    def intervals(self, name: str | None = None, *, since: float | None = None, priced: bool | None = None) -> list[Interval]:
        """Ledger rows, oldest first: one job's, or every job's; ``since`` keeps those still running after it.

        ``priced=False`` keeps only the rows not yet carrying their final price (running, or closed
        and not priced): what a report adds to the database's sums of the rest.
        """
        query = sa.select(*_INTERVAL_COLUMNS).order_by(intervals_table.c.start, intervals_table.c.id)
        if name is not None:
            query = query.where(intervals_table.c.job == name)
        if since is not None:
            query = query.where(sa.or_(intervals_table.c.end.is_(None), intervals_table.c.end >= since))
        if priced is not None:
            query = query.where(is_priced() if priced else sa.not_(is_priced()))
        return _intervals_from_rows(self.read(query))

    def read(self, query: sa.Select[Any]) -> list[sa.Row[Any]]:
        """The rows of one read-only query (aggregates built elsewhere, such as the ledger's sums)."""
        with self._transaction() as db:
            return list(db.execute(query).all())

    def attempts(self, name: str | None) -> list[Attempt]:
        """A job's attempts first to last (or every job's, for listings that would otherwise ask once per job)."""
        query = sa.select(attempts_table).order_by(attempts_table.c.job, attempts_table.c.number)
        if name is not None:
            query = query.where(attempts_table.c.job == name)
        with self._transaction() as db:
            rows = db.execute(query).all()
        return [_attempt_from_row(row) for row in rows]

    # ---------------------------------------------------------- identity

    def store_id(self) -> str:
        """This store's identity, made once: providers tag instances with it, so gc knows whose they are."""
        with self._transaction() as db:
            row = db.execute(sa.select(settings_table.c.value).where(settings_table.c.key == "store_id")).first()
            if row is not None:
                return str(row.value)
        made = uuid.uuid4().hex[:16]
        try:
            with self._transaction() as db:
                db.execute(settings_table.insert().values(key="store_id", value=made))
        except sa.exc.IntegrityError:  # another process made it first: theirs stands
            return self.store_id()
        return made

    # ------------------------------------------------------------ events

    def event(self, name: str, kind: str, message: str, *, attempt: int | None = None, data: dict[str, Any] | None = None) -> None:
        """Append one event to a job's history."""
        with self._transaction(name) as db:
            self._event(db, name, kind, message, attempt=attempt, data=data)

    def _event(
        self, db: Connection, name: str, kind: str, message: str, *, attempt: int | None = None, data: dict[str, Any] | None = None
    ) -> None:
        db.execute(
            events_table.insert().values(
                job=name, time=self.clock(), kind=kind, attempt=attempt, message=message, data_json=json.dumps(data or {}), actor=self.actor
            )
        )

    def events(self, name: str | None, *, after_id: int = 0) -> list[tuple[int, Event]]:
        """A job's events (or every job's) in order, with their ids so a follower can ask for newer ones."""
        query = sa.select(events_table).where(events_table.c.id > after_id).order_by(events_table.c.id)
        if name is not None:
            query = query.where(events_table.c.job == name)
        with self._transaction() as db:
            rows = db.execute(query).all()
        return [
            (row.id, Event(row.job, row.time, row.kind, row.attempt, row.message, json.loads(row.data_json or "{}"), row.actor))
            for row in rows
        ]

    def last_event_id(self) -> int:
        """The newest event's id (0 when there is none): where a follower of every job's events starts."""
        with self._transaction() as db:
            return int(db.execute(sa.select(sa.func.max(events_table.c.id))).scalar() or 0)


def _job_from_row(row: Any) -> Job:
    return Job(
        name=row.name,
        state=JobState(row.state),
        spec_json=row.spec_json,
        spec_path=row.spec_path,
        checkpoint_url=row.checkpoint_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        restarts_on_errors=row.restarts_on_errors,
        cancel_requested=bool(row.cancel_requested),
        progress=Heartbeat.from_json(json.loads(row.progress_json), where=f"job {row.name!r}'s newest heartbeat")
        if row.progress_json
        else None,
        message=row.message,
        launched_by=row.launched_by or "",
        stop_requested=row.stop_requested,
        stop_requested_at=row.stop_requested_at,
        budget_alerted_pct=row.budget_alerted_pct or 0,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        key=row.secret,
    )


# Names bound in one IN list: SQLite allows 32,766 parameters in a statement since 3.32 (999 before), PostgreSQL
# 65,535, so the jobs of any controller are read in one statement a table.
_NAMES_PER_STATEMENT = 30_000 if sqlite3.sqlite_version_info >= (3, 32) else 900


def _chunks(names: Sequence[str]) -> Iterator[list[str]]:
    """``names`` in lists short enough to bind in one IN list (none when there are no names)."""
    for first in range(0, len(names), _NAMES_PER_STATEMENT):
        yield list(names[first : first + _NAMES_PER_STATEMENT])


def _jobs_named(db: Connection, names: Sequence[str]) -> list[Job]:
    """The jobs among ``names`` that exist, one SELECT per list of names."""
    return [_job_from_row(row) for chunk in _chunks(names) for row in db.execute(sa.select(jobs_table).where(jobs_table.c.name.in_(chunk)))]


def _interval_key(name: str, attempt: int, node: int) -> tuple[Any, ...]:
    return (intervals_table.c.job == name, intervals_table.c.attempt == attempt, intervals_table.c.node == node)


def _interval_values(interval: Interval) -> dict[str, Any]:
    values = {name: getattr(interval, name) for name in Interval.__dataclass_fields__ if name not in ("prices", "tags")}
    values["prices_json"] = json.dumps(interval.prices)
    values["tags_json"] = json.dumps(interval.tags)
    return values


# The ledger's columns in Interval's field order (prices and tags are stored as JSON), so a row converts by position.
_INTERVAL_FIELDS = tuple(Interval.__dataclass_fields__)
_INTERVAL_COLUMNS = tuple(intervals_table.c[{"prices": "prices_json", "tags": "tags_json"}.get(field, field)] for field in _INTERVAL_FIELDS)
_PRICES, _TAGS = map(_INTERVAL_FIELDS.index, ("prices", "tags"))


def _intervals_from_rows(rows: Iterable[Sequence[Any]]) -> list[Interval]:
    """Rows of ``_INTERVAL_COLUMNS`` as Intervals: a job's ledger, or a report's running intervals.

    Each distinct tags text is parsed once (a job's rows share theirs), and every interval gets a
    dict of its own.
    """
    tags_by_text: dict[str, dict[str, str]] = {}
    intervals = []
    for row in rows:
        values = list(row)
        values[_PRICES] = tuple((float(time), float(price)) for time, price in json.loads(values[_PRICES] or "[]"))
        tags_text = values[_TAGS] or "{}"
        if tags_text not in tags_by_text:
            tags_by_text[tags_text] = json.loads(tags_text)
        values[_TAGS] = dict(tags_by_text[tags_text])
        intervals.append(Interval(*values))
    return intervals


def is_priced() -> sa.ColumnElement[bool]:
    """Ledger rows that carry their final price: closed, with their cost and on-demand equivalent."""
    return sa.and_(
        intervals_table.c.end.is_not(None), intervals_table.c.cost_usd.is_not(None), intervals_table.c.on_demand_usd.is_not(None)
    )


def _attempt_values(attempt: Attempt) -> dict[str, Any]:
    values = {column.name: getattr(attempt, column.name) for column in attempts_table.columns}
    values["outcome"] = attempt.outcome.value if attempt.outcome else None
    return values


def _attempt_from_row(row: Any) -> Attempt:
    values = {column.name: getattr(row, column.name) for column in attempts_table.columns}
    values["outcome"] = Outcome(row.outcome) if row.outcome else None
    return Attempt(**values)
