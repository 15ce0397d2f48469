"""The messages between a job's controller and its agents, carried by the job's prefix in object storage.

Object storage is the only channel (instances need no inbound port), and every instance's role
can write the whole bucket, so nothing read from a prefix is trusted for what it says alone:

- the spec an agent runs is the one its launch names by digest (``LaunchCredentials``: the
  instance's own tags on EC2, the agent's environment locally), never whatever ``job.json``
  holds when the agent reads it;
- every other message carries a MAC under the job's own key (``checkpoints.signing``), which only
  the controller and that job's instances hold; a message without a valid one is ignored as
  forged (``ForgedMessageError``), so one job cannot stop, extend, or finish another.

Every message has a ``version``; a reader refuses versions it does not know rather than guess.
Jobs recorded before keys existed have none (``key=None``): their messages are read unsigned,
as before.

The contract, object by object (names under the prefix's ``_spotrun/``, kept by ``Mailbox``):

``job.json``: the spec, ``JobSpec``'s stored form. Written by the controller when it records the
job and before each launch (``write_spec``); read by the agent (``read_spec``), which runs it
only if its sha256 is the one its launch names. No envelope: the digest is what is checked.

``heartbeat.json`` (rank 0's), ``heartbeat-node-N.json``: ``Heartbeat``. Written by each node's
agent every ``heartbeat_interval_s`` and at once on every change (training started, a notice, a
stop, the verdict); read by the controller every cycle (how the attempt ended, when it became
productive, the work an interruption lost; the newest is kept as the job's ``progress``), by the
other nodes of a gang (rank 0's ``training_started_at``) and by ``spotrun status``. Its keys:

- ``status``: ``AgentStatus``: ``running``, then one verdict as the agent leaves;
- ``job``: the job's name (an older agent's refusal has none; the envelope's is what is checked);
- ``attempt``; ``node``: the rank in the gang; ``instance_id``: null where none was given;
- ``time``: when the agent wrote it (unix s, the instance's clock);
- ``training_started_at``: when this attempt's training first made progress, null until then;
- ``interruption_at``: when the spot interruption notice says the instance goes, null without one;
- ``stop_reason``: why the agent asked training to stop (the controller's request, a lapsed
  horizon), null when it did not;
- ``exit_code``, ``message``: training's exit code and the verdict in words, null while running;
- ``training_status``: the training's own progress report's status (``checkpoints.progress``),
  null before its first report; that report's other keys (``step``, ``epoch``, ``total_steps``,
  ``loss``, ``steps_per_s``, ``metrics``, ``checkpoint``, ``resumed_from_step``, ``emergency``,
  ``resume_exact``, ``resume_inexact_reason``) sit flat beside the agent's, as agents have always
  written them, and its ``time`` is the heartbeat's. In memory the report is ``Heartbeat.progress``
  (None when ``training_status`` is null), and ``progress.time`` is the heartbeat's time.

``stop.json``: ``StopRequest``, "checkpoint and stop" for one attempt. Written by the controller
(``kind`` budget or market) or by a node of a gang to the others (``kind`` gang, after its
interruption notice); read by every agent of the attempt.

``horizon.json``: ``SpendingHorizon``. Written by the controller on every cycle of a budgeted
job's attempt; read by its agents, which stop training when it lapses unrenewed.

The envelope, beside each message's own keys (not ``job.json``'s): ``spotrun_protocol`` (the
class's ``VERSION``, ``PROTOCOL_VERSION``), ``spotrun_message`` (the class's ``KIND``, also the
purpose its MAC is for), ``spotrun_job`` (the job's name) and, with a key, ``mac``. A message is
parsed, and written, in one place: its class's ``from_json``/``to_json`` (``typed_json`` checks
each field against its annotation); a field that does not fit is a ``ProtocolError``.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from checkpoints import signing, typed_json
from checkpoints.progress import Progress, TrainingStatus
from runner.instance.mailbox import Mailbox
from runner.spec.job_spec import JobSpec, from_stored, stored_form

PROTOCOL_VERSION = 1

JOB_NAME = "job.json"  # the spec, as the controller recorded it
HEARTBEAT_NAME = "heartbeat.json"  # rank 0's; carries the training progress
STOP_REQUEST_NAME = "stop.json"  # "checkpoint and stop" for one attempt: from the controller, or from a node to its gang
HORIZON_NAME = "horizon.json"  # how long the controller lets the attempt run without hearing from it again

# The envelope every message carries next to its own fields (and the MAC over all of them).
_VERSION, _KIND, _JOB = "spotrun_protocol", "spotrun_message", "spotrun_job"
_ENVELOPE = (_VERSION, _KIND, _JOB, signing.MAC_FIELD)

CREDENTIALS_ENV = "SPOTRUN_LAUNCH"  # a local agent's LaunchCredentials, as JSON (EC2 instances read theirs from their tags)

if TYPE_CHECKING:
    from typing import Self

    from _typeshed import DataclassInstance

_Parsed = TypeVar("_Parsed", bound="DataclassInstance")


class ProtocolError(Exception):
    """A message that cannot be acted on."""


class ForgedMessageError(ProtocolError):
    """A message under the job's prefix that the job's key did not sign: written by someone else."""


class SpecTamperedError(ProtocolError):
    """The spec in the prefix is not the one the launch names: the agent must not run it."""


def heartbeat_name(node: int) -> str:
    """Each node's heartbeat; rank 0's, which carries the training progress, is ``heartbeat.json``."""
    return HEARTBEAT_NAME if node == 0 else f"heartbeat-node-{node}.json"


def spec_digest(spec: JobSpec) -> str:
    """The sha256 of a spec's stored form as canonical JSON (the form MACs cover too): what a launch carries to name the spec it runs."""
    return _digest(stored_form(spec))


def _digest(stored: dict[str, Any]) -> str:
    return hashlib.sha256(signing.canonical(stored)).hexdigest()


@dataclass(frozen=True)
class LaunchCredentials:
    """What the controller hands one instance with its launch, out of reach of other jobs' instances."""

    job: str
    spec_sha256: str
    key: str | None  # hex; None for a job recorded before keys existed

    @property
    def key_bytes(self) -> bytes | None:
        """The key as bytes."""
        return bytes.fromhex(self.key) if self.key else None

    def to_env(self) -> dict[str, str]:
        """The agent's environment entry that carries these credentials (local instances)."""
        return {CREDENTIALS_ENV: json.dumps(asdict(self))}

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> LaunchCredentials | None:
        """The credentials a local launch put in the agent's environment, or None."""
        raw = environ.get(CREDENTIALS_ENV)
        if not raw:
            return None
        try:
            data = json.loads(raw)
            return cls(job=str(data["job"]), spec_sha256=str(data["spec_sha256"]), key=str(data["key"]) if data.get("key") else None)
        except (ValueError, TypeError, KeyError) as error:
            raise ProtocolError(f"{CREDENTIALS_ENV} is not valid launch credentials ({error})") from None


class Message:
    """What every message between controller and agents has: where its envelope's version and kind come from, one parse, one form.

    ``VERSION`` is the envelope's ``spotrun_protocol``: a reader refuses a message of another
    version. ``KIND`` is its ``spotrun_message`` and the purpose its MAC is for, so one kind of
    message signed by the job's key is never taken for another.
    """

    KIND: ClassVar[str]
    VERSION: ClassVar[int] = PROTOCOL_VERSION
    if TYPE_CHECKING:
        __dataclass_fields__: ClassVar[dict[str, Any]]  # every message is a dataclass

    def to_json(self) -> dict[str, Any]:
        """The message's own keys, as it travels (the channel adds the envelope)."""
        return typed_json.to_json(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, where: str) -> Self:
        """The message read back from its keys (envelope removed); ProtocolError naming ``where`` and the field that does not fit."""
        return _parse(cls, body, where)


class AgentStatus(str, enum.Enum):
    """What an agent says of its attempt: ``running`` while training runs, then one verdict as it leaves."""

    RUNNING = "running"
    FINISHED = "finished"  # the callback reported that training reached its end
    STOPPED = "stopped"  # checkpointed and stopped as asked (the controller's stop request, a lapsed spending horizon)
    PREEMPTED = "preempted"  # left on a spot interruption notice, after the emergency checkpoint if training made one
    FAILED = "failed"  # training failed (the user's code), or exited 0 without reaching its end
    EXITED = "exited"  # a gang node other than rank 0 whose training exited 0: rank 0 reports how training ended
    REFUSED = "refused"  # the spec in the prefix is not the one the launch names: nothing ran


@dataclass(frozen=True, kw_only=True)
class Heartbeat(Message):
    """One node's agent's report on its attempt; the module docstring describes each field, in this order on the wire."""

    KIND: ClassVar[str] = "heartbeat"

    status: AgentStatus
    job: str | None = None
    attempt: int
    node: int = 0
    instance_id: str | None = None
    time: float
    training_started_at: float | None = None
    interruption_at: float | None = None
    stop_reason: str | None = None
    exit_code: int | None = None
    message: str | None = None
    progress: Progress | None = None  # the training's newest report (rank 0's), None before its first

    @property
    def training_status(self) -> TrainingStatus | None:
        """How training stands by its own newest report, None before the first."""
        return self.progress.status if self.progress else None

    def to_json(self) -> dict[str, Any]:
        """The keys agents have always written: the progress report's flat, its status as ``training_status``, then the agent's.

        The agent's ``status`` and ``time`` take the report's keys of those names (so the report's
        own time does not travel: read back, it is the heartbeat's).
        """
        own = typed_json.to_json(self)
        report = own.pop("progress") or {}
        training_status = self.training_status.value if self.training_status else None
        return {**report, "training_status": training_status, **own}

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, where: str) -> Self:
        """A heartbeat read back from the keys ``to_json`` writes; ProtocolError naming ``where`` and the field that does not fit."""
        training_status = body.get("training_status")
        progress = None if training_status is None else _parse(Progress, {**body, "status": training_status}, where)
        own = {key: value for key, value in body.items() if key != "progress"}  # the report is the flat keys, never a nested object
        heartbeat = _parse(cls, own, where)
        return replace(heartbeat, progress=progress)


@dataclass(frozen=True)
class StopRequest(Message):
    """Checkpoint and stop one attempt: the controller's (budget, market, horizon), or a node's to its gang (``kind`` "gang")."""

    KIND: ClassVar[str] = "stop"

    attempt: int
    kind: str
    reason: str
    time: float


@dataclass(frozen=True)
class SpendingHorizon(Message):
    """The controller's leave for one attempt to run until ``until`` (unix s) without a renewal.

    Renewed by a live controller on every cycle; when it lapses the agent checkpoints and stops
    and the instance shuts down, so a budgeted job cannot run on while no controller watches it.
    ``duration_s`` also bounds it by the agent's own clock (from when it first saw this grant),
    in case the instance's clock is behind the controller's.
    """

    KIND: ClassVar[str] = "horizon"

    attempt: int
    until: float
    duration_s: float
    granted_at: float
    stop_grace_s: float  # after a lapse, how long training gets to checkpoint and stop before it is ended
    reason: str

    def lapsed(self, now: float, first_seen: float) -> bool:
        """Whether the grant ran out, by the controller's deadline or by the time since it was first seen."""
        return now >= self.until or now - first_seen >= self.duration_s


def write_spec(mailbox: Mailbox, spec: JobSpec) -> str:
    """Record the spec a job runs next to its checkpoints; returns the digest its launches carry."""
    stored = stored_form(spec)
    mailbox.write(JOB_NAME, stored)
    return _digest(stored)


def read_spec(mailbox: Mailbox, credentials: LaunchCredentials | None) -> JobSpec:
    """The spec the launch named; SpecTamperedError when what the prefix holds is another (or another job's).

    ``credentials`` None (a launch by a spotrun before digests) takes the prefix's word.
    """
    stored = mailbox.read(JOB_NAME)
    where = mailbox.url_of(JOB_NAME)
    if stored is None:
        raise FileNotFoundError(f"no job description at {where}")
    if credentials is None:
        return from_stored(stored, where=where)
    found = _digest(stored)
    if found != credentials.spec_sha256 or stored.get("name") != credentials.job:
        raise SpecTamperedError(
            f"{where} is not the spec job {credentials.job!r} launched this instance with "
            f"(sha256 {found[:12]}, the launch says {credentials.spec_sha256[:12]}); refusing to run it"
        )
    return from_stored(stored, where=where)


_Message = TypeVar("_Message", bound=Message)


class JobChannel:
    """One job's messages in its mailbox (``_spotrun/`` under its checkpoint prefix): writes sign, reads verify."""

    def __init__(self, mailbox: Mailbox, job: str, key: bytes | None) -> None:
        self.mailbox = mailbox
        self.job = job
        self.key = key

    # ------------------------------------------------------------ envelope

    def _write(self, name: str, message: Message) -> None:
        kind = message.KIND
        enveloped = {**message.to_json(), _VERSION: message.VERSION, _KIND: kind, _JOB: self.job}
        self.mailbox.write(name, signing.signed(self.key, kind, enveloped) if self.key else enveloped)

    def _read(self, kind: type[_Message], name: str) -> _Message | None:
        """The message at ``name``, None when absent; ForgedMessageError when it is not this job's, ProtocolError when unusable."""
        message = self.mailbox.read(name)
        if message is None:
            return None
        where = self.mailbox.url_of(name)
        if self.key is not None and not signing.is_authentic(self.key, kind.KIND, message):
            raise ForgedMessageError(f"{where} is not signed with job {self.job!r}'s key; ignoring it")
        if message.get(_JOB, self.job) != self.job or message.get(_KIND, kind.KIND) != kind.KIND:
            raise ForgedMessageError(f"{where} is a {message.get(_KIND)!r} message of job {message.get(_JOB)!r}; ignoring it")
        version = message.get(_VERSION, kind.VERSION)
        if version != kind.VERSION:
            raise ProtocolError(f"{where} has protocol version {version!r}; this spotrun reads {kind.VERSION}")
        return kind.from_json({key: value for key, value in message.items() if key not in _ENVELOPE}, where=f"_spotrun/{name}")

    # ----------------------------------------------------------- heartbeat

    def write_heartbeat(self, heartbeat: Heartbeat) -> None:
        """A node's heartbeat, under its node's name (rank 0's carries the training progress)."""
        self._write(heartbeat_name(heartbeat.node), heartbeat)

    def read_heartbeat(self, node: int = 0) -> Heartbeat | None:
        """A node's newest heartbeat, or None; ForgedMessageError when someone else wrote it, ProtocolError when unusable."""
        return self._read(Heartbeat, heartbeat_name(node))

    # ---------------------------------------------------------------- stop

    def write_stop(self, request: StopRequest) -> None:
        """Ask the attempt's agents to checkpoint and stop."""
        self._write(STOP_REQUEST_NAME, request)

    def read_stop(self) -> StopRequest | None:
        """The newest stop request, or None."""
        return self._read(StopRequest, STOP_REQUEST_NAME)

    # ------------------------------------------------------------- horizon

    def write_horizon(self, horizon: SpendingHorizon) -> None:
        """Grant (or renew) the attempt's spending horizon."""
        self._write(HORIZON_NAME, horizon)

    def read_horizon(self) -> SpendingHorizon | None:
        """The newest spending horizon granted, or None."""
        return self._read(SpendingHorizon, HORIZON_NAME)


def _parse(kind: type[_Parsed], body: Mapping[str, Any], where: str) -> _Parsed:
    """``body`` as a ``kind``, each field of the type its annotation names; ProtocolError naming ``where`` and the field otherwise."""
    try:
        return typed_json.from_json(kind, dict(body))
    except typed_json.FieldError as error:
        raise ProtocolError(f"{where}: {error}") from None
