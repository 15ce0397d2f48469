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
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from checkpoints import signing
from checkpoints.store import CheckpointStore

PROTOCOL_VERSION = 1

JOB_NAME = "job.json"  # the spec, as the controller recorded it
HEARTBEAT_NAME = "heartbeat.json"  # rank 0's; carries the training progress
STOP_REQUEST_NAME = "stop.json"  # "checkpoint and stop" for one attempt: from the controller, or from a node to its gang
HORIZON_NAME = "horizon.json"  # how long the controller lets the attempt run without hearing from it again

# The envelope every message carries next to its own fields (and the MAC over all of them).
_VERSION, _KIND, _JOB = "spotrun_protocol", "spotrun_message", "spotrun_job"
_ENVELOPE = (_VERSION, _KIND, _JOB, signing.MAC_FIELD)

CREDENTIALS_ENV = "SPOTRUN_LAUNCH"  # a local agent's LaunchCredentials, as JSON (EC2 instances read theirs from their tags)


class ProtocolError(Exception):
    """A message that cannot be acted on."""


class ForgedMessageError(ProtocolError):
    """A message under the job's prefix that the job's key did not sign: written by someone else."""


class SpecTamperedError(ProtocolError):
    """The spec in the prefix is not the one the launch names: the agent must not run it."""


def heartbeat_name(node: int) -> str:
    """Each node's heartbeat; rank 0's, which carries the training progress, is ``heartbeat.json``."""
    return HEARTBEAT_NAME if node == 0 else f"heartbeat-node-{node}.json"


def spec_digest(spec: dict[str, Any]) -> str:
    """The sha256 of a spec's canonical JSON (the form MACs cover too): what a launch carries to name the spec it runs."""
    return hashlib.sha256(signing.canonical(spec)).hexdigest()


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


@dataclass(frozen=True)
class StopRequest:
    """Checkpoint and stop one attempt: the controller's (budget, market, horizon), or a node's to its gang (``kind`` "gang")."""

    attempt: int
    kind: str
    reason: str
    time: float


@dataclass(frozen=True)
class SpendingHorizon:
    """The controller's leave for one attempt to run until ``until`` (unix s) without a renewal.

    Renewed by a live controller on every cycle; when it lapses the agent checkpoints and stops
    and the instance shuts down, so a budgeted job cannot run on while no controller watches it.
    ``duration_s`` also bounds it by the agent's own clock (from when it first saw this grant),
    in case the instance's clock is behind the controller's.
    """

    attempt: int
    until: float
    duration_s: float
    granted_at: float
    stop_grace_s: float  # after a lapse, how long training gets to checkpoint and stop before it is ended
    reason: str

    def lapsed(self, now: float, first_seen: float) -> bool:
        """Whether the grant ran out, by the controller's deadline or by the time since it was first seen."""
        return now >= self.until or now - first_seen >= self.duration_s


def write_spec(store: CheckpointStore, spec: dict[str, Any]) -> str:
    """Record the spec a job runs next to its checkpoints; returns the digest its launches carry."""
    store.write_json(JOB_NAME, spec)
    return spec_digest(spec)


def read_spec(store: CheckpointStore, credentials: LaunchCredentials | None) -> dict[str, Any]:
    """The spec the launch named; SpecTamperedError when what the prefix holds is another (or another job's).

    ``credentials`` None (a launch by a spotrun before digests) takes the prefix's word.
    """
    spec = store.read_json(JOB_NAME)
    if spec is None:
        raise FileNotFoundError(f"no job description at {store.url}/_spotrun/{JOB_NAME}")
    if credentials is None:
        return spec
    found = spec_digest(spec)
    if found != credentials.spec_sha256 or spec.get("name") != credentials.job:
        raise SpecTamperedError(
            f"{store.url}/_spotrun/{JOB_NAME} is not the spec job {credentials.job!r} launched this instance with "
            f"(sha256 {found[:12]}, the launch says {credentials.spec_sha256[:12]}); refusing to run it"
        )
    return spec


class JobChannel:
    """One job's mailbox under its checkpoint prefix (``_spotrun/``): writes sign, reads verify."""

    def __init__(self, store: CheckpointStore, job: str, key: bytes | None) -> None:
        self.store = store
        self.job = job
        self.key = key

    # ------------------------------------------------------------ envelope

    def _write(self, kind: str, name: str, body: dict[str, Any]) -> None:
        message = {**body, _VERSION: PROTOCOL_VERSION, _KIND: kind, _JOB: self.job}
        self.store.write_json(name, signing.signed(self.key, kind, message) if self.key else message)

    def _read(self, kind: str, name: str) -> dict[str, Any] | None:
        """The message at ``name``, None when absent; ForgedMessageError when it is not this job's."""
        message = self.store.read_json(name)
        if message is None:
            return None
        if self.key is not None and not signing.is_authentic(self.key, kind, message):
            raise ForgedMessageError(f"{self.store.url}/_spotrun/{name} is not signed with job {self.job!r}'s key; ignoring it")
        if message.get(_JOB, self.job) != self.job or message.get(_KIND, kind) != kind:
            raise ForgedMessageError(
                f"{self.store.url}/_spotrun/{name} is a {message.get(_KIND)!r} message of job {message.get(_JOB)!r}; ignoring it"
            )
        version = message.get(_VERSION, PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise ProtocolError(f"{self.store.url}/_spotrun/{name} has protocol version {version!r}; this spotrun reads {PROTOCOL_VERSION}")
        return {key: value for key, value in message.items() if key not in _ENVELOPE}

    # ----------------------------------------------------------- heartbeat

    def write_heartbeat(self, node: int, heartbeat: dict[str, Any]) -> None:
        """A node's heartbeat (rank 0's carries the training progress)."""
        self._write("heartbeat", heartbeat_name(node), heartbeat)

    def read_heartbeat(self, node: int = 0) -> dict[str, Any] | None:
        """A node's newest heartbeat, or None; ForgedMessageError when someone else wrote it."""
        return self._read("heartbeat", heartbeat_name(node))

    # ---------------------------------------------------------------- stop

    def write_stop(self, request: StopRequest) -> None:
        """Ask the attempt's agents to checkpoint and stop."""
        self._write("stop", STOP_REQUEST_NAME, asdict(request))

    def read_stop(self) -> StopRequest | None:
        """The newest stop request, or None."""
        body = self._read("stop", STOP_REQUEST_NAME)
        return None if body is None else _typed(StopRequest, body, STOP_REQUEST_NAME)

    # ------------------------------------------------------------- horizon

    def write_horizon(self, horizon: SpendingHorizon) -> None:
        """Grant (or renew) the attempt's spending horizon."""
        self._write("horizon", HORIZON_NAME, asdict(horizon))

    def read_horizon(self) -> SpendingHorizon | None:
        """The newest spending horizon granted, or None."""
        body = self._read("horizon", HORIZON_NAME)
        return None if body is None else _typed(SpendingHorizon, body, HORIZON_NAME)


_CHECKS = {
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "float": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
    "str": lambda value: isinstance(value, str),
}


def _typed(kind: type[Any], body: dict[str, Any], name: str) -> Any:
    """``body`` as a ``kind``, each field of the type its annotation names; ProtocolError otherwise."""
    values = {}
    for field, spec in kind.__dataclass_fields__.items():
        value = body.get(field)
        if not _CHECKS[str(spec.type)](value):
            raise ProtocolError(f"_spotrun/{name}: {field} is {value!r}, expected {spec.type}")
        values[field] = value
    return kind(**values)
