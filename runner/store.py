"""The state store: jobs, their attempts (each a billed instance interval) and every event.

SQLite under ``SPOTRUN_HOME`` by default; SQLAlchemy Core so a shared database is a URL away.
Every launch, notice, exit and relaunch is an event row, so a job's history can be replayed.
"""

from __future__ import annotations

import enum
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from runner.errors import JobNotFoundError, JobStateError


class JobState(str, enum.Enum):
    """A job's lifecycle; the last three are final."""

    PENDING = "PENDING"
    PROVISIONING = "PROVISIONING"
    RUNNING = "RUNNING"
    RECOVERING = "RECOVERING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        """True once nothing will run for this job again."""
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Outcome(str, enum.Enum):
    """How one attempt ended, as the controller classified it."""

    FINISHED = "finished"
    PREEMPTED = "preempted"  # notice + kill, or the instance vanished: relaunch without limit
    FAILED = "failed"  # the training exited with an error: counted against max_restarts_on_errors
    CANCELLED = "cancelled"


_metadata = sa.MetaData()

jobs_table = sa.Table(
    "jobs",
    _metadata,
    sa.Column("name", sa.String(63), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("spec_json", sa.Text, nullable=False),
    sa.Column("spec_path", sa.Text, nullable=False),
    sa.Column("checkpoint_url", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("preemptions", sa.Integer, nullable=False, default=0),
    sa.Column("restarts_on_errors", sa.Integer, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("progress_json", sa.Text, nullable=True),  # the newest heartbeat
    sa.Column("message", sa.Text, nullable=True),
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
    preemptions: int
    restarts_on_errors: int
    cancel_requested: bool
    progress: dict[str, Any]
    message: str | None

    @property
    def spec(self) -> dict[str, Any]:
        """The resolved spec the job was submitted with."""
        return json.loads(self.spec_json)


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

    @property
    def is_open(self) -> bool:
        """The controller still has to watch this attempt."""
        return self.outcome is None


@dataclass(frozen=True)
class Event:
    """One line of a job's history."""

    job: str
    time: float
    kind: str
    attempt: int | None
    message: str
    data: dict[str, Any]


def default_database_url(home: Path) -> str:
    """SQLite file under ``SPOTRUN_HOME``."""
    return f"sqlite:///{home / 'state.db'}"


class StateStore:
    """Reads and writes jobs, attempts and events; every method is one short transaction."""

    def __init__(self, url: str, *, clock: Any = time.time) -> None:
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine = sa.create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
        self.clock = clock
        _metadata.create_all(self.engine)

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    # -------------------------------------------------------------- jobs

    def create_job(self, name: str, *, spec_json: str, spec_path: str, checkpoint_url: str) -> Job:
        """Record a new PENDING job; a name already in the store is an error."""
        now = self.clock()
        with self._transaction() as db:
            existing = db.execute(sa.select(jobs_table.c.state).where(jobs_table.c.name == name)).first()
            if existing is not None:
                raise JobStateError(
                    f"a job named {name!r} already exists ({existing.state}); "
                    f"see `spotrun status {name}`, resume it with `spotrun resume {name}`, or give the new job another name"
                )
            db.execute(
                jobs_table.insert().values(
                    name=name,
                    state=JobState.PENDING.value,
                    spec_json=spec_json,
                    spec_path=spec_path,
                    checkpoint_url=checkpoint_url,
                    created_at=now,
                    updated_at=now,
                    preemptions=0,
                    restarts_on_errors=0,
                    cancel_requested=False,
                )
            )
            self._event(db, name, "submitted", f"job submitted from {spec_path}")
        return self.job(name)

    def job(self, name: str) -> Job:
        """The job named ``name``; JobNotFoundError lists what exists."""
        with self._transaction() as db:
            row = db.execute(sa.select(jobs_table).where(jobs_table.c.name == name)).first()
            if row is None:
                names = [r.name for r in db.execute(sa.select(jobs_table.c.name).order_by(jobs_table.c.name))]
                known = ", ".join(names[:10]) or "none"
                raise JobNotFoundError(f"no job named {name!r} in this state store (jobs: {known})")
        return _job_from_row(row)

    def jobs(self) -> list[Job]:
        """All jobs, newest first."""
        with self._transaction() as db:
            rows = db.execute(sa.select(jobs_table).order_by(jobs_table.c.created_at.desc())).all()
        return [_job_from_row(row) for row in rows]

    def set_state(self, name: str, state: JobState, message: str | None = None, *, attempt: int | None = None) -> None:
        """Move a job to ``state`` and record the transition as an event."""
        with self._transaction() as db:
            values: dict[str, Any] = {"state": state.value, "updated_at": self.clock()}
            if message is not None:
                values["message"] = message
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(**values))
            self._event(db, name, "state", f"{state.value}" + (f": {message}" if message else ""), attempt=attempt)

    def set_progress(self, name: str, progress: dict[str, Any]) -> None:
        """Keep the newest heartbeat for status displays."""
        with self._transaction() as db:
            db.execute(
                jobs_table.update()
                .where(jobs_table.c.name == name)
                .values(progress_json=json.dumps(progress), updated_at=self.clock())
            )

    def count(self, name: str, column: str) -> None:
        """Increment ``preemptions`` or ``restarts_on_errors``."""
        counter = jobs_table.c[column]
        with self._transaction() as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values({counter: counter + 1}))

    def request_cancel(self, name: str) -> None:
        """Ask the controller driving ``name`` to cancel it."""
        with self._transaction() as db:
            db.execute(jobs_table.update().where(jobs_table.c.name == name).values(cancel_requested=True))
            self._event(db, name, "cancel", "cancellation requested")

    # ---------------------------------------------------------- attempts

    def start_attempt(self, attempt: Attempt) -> None:
        """Record an attempt before its launch, so a controller restarted mid-launch reuses its token."""
        with self._transaction() as db:
            db.execute(attempts_table.insert().values(**_attempt_values(attempt)))

    def retarget_attempt(self, attempt: Attempt) -> None:
        """Point a not yet launched attempt at another offer (and token), after its offer ran out of capacity."""
        values = _attempt_values(attempt)
        changed = {key: values[key] for key in ("token", "provider", "instance_type", "zone", "market", "price_usd_per_hour", "on_demand_price_usd_per_hour")}
        with self._transaction() as db:
            db.execute(
                attempts_table.update()
                .where(attempts_table.c.job == attempt.job, attempts_table.c.number == attempt.number, attempts_table.c.instance_id.is_(None))
                .values(**changed)
            )

    def set_launched(self, name: str, number: int, instance_id: str, launched_at: float) -> None:
        """The provider answered the launch."""
        with self._transaction() as db:
            db.execute(
                attempts_table.update()
                .where(attempts_table.c.job == name, attempts_table.c.number == number)
                .values(instance_id=instance_id, launched_at=launched_at)
            )

    def end_attempt(
        self, name: str, number: int, *, ended_at: float, end_reason: str, outcome: Outcome, exit_code: int | None
    ) -> None:
        """Close an attempt: its billed interval ends at ``ended_at``."""
        with self._transaction() as db:
            db.execute(
                attempts_table.update()
                .where(attempts_table.c.job == name, attempts_table.c.number == number)
                .values(ended_at=ended_at, end_reason=end_reason, outcome=outcome.value, exit_code=exit_code)
            )

    def attempts(self, name: str) -> list[Attempt]:
        """A job's attempts, first to last."""
        with self._transaction() as db:
            rows = db.execute(
                sa.select(attempts_table).where(attempts_table.c.job == name).order_by(attempts_table.c.number)
            ).all()
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
        with self._transaction() as db:
            self._event(db, name, kind, message, attempt=attempt, data=data)

    def _event(
        self, db: Connection, name: str, kind: str, message: str, *, attempt: int | None = None, data: dict[str, Any] | None = None
    ) -> None:
        db.execute(
            events_table.insert().values(
                job=name, time=self.clock(), kind=kind, attempt=attempt, message=message, data_json=json.dumps(data or {})
            )
        )

    def events(self, name: str, *, after_id: int = 0) -> list[tuple[int, Event]]:
        """A job's events in order, with their ids so a follower can ask for newer ones."""
        with self._transaction() as db:
            rows = db.execute(
                sa.select(events_table)
                .where(events_table.c.job == name, events_table.c.id > after_id)
                .order_by(events_table.c.id)
            ).all()
        return [
            (row.id, Event(row.job, row.time, row.kind, row.attempt, row.message, json.loads(row.data_json or "{}")))
            for row in rows
        ]


def _job_from_row(row: Any) -> Job:
    return Job(
        name=row.name,
        state=JobState(row.state),
        spec_json=row.spec_json,
        spec_path=row.spec_path,
        checkpoint_url=row.checkpoint_url,
        created_at=row.created_at,
        updated_at=row.updated_at,
        preemptions=row.preemptions,
        restarts_on_errors=row.restarts_on_errors,
        cancel_requested=bool(row.cancel_requested),
        progress=json.loads(row.progress_json) if row.progress_json else {},
        message=row.message,
    )


def _attempt_values(attempt: Attempt) -> dict[str, Any]:
    values = {column.name: getattr(attempt, column.name) for column in attempts_table.columns}
    values["outcome"] = attempt.outcome.value if attempt.outcome else None
    return values


def _attempt_from_row(row: Any) -> Attempt:
    values = {column.name: getattr(row, column.name) for column in attempts_table.columns}
    values["outcome"] = Outcome(row.outcome) if row.outcome else None
    return Attempt(**values)
