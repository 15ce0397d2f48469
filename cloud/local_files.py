"""The files of one local instance: the only channel between the provider and that instance's host.

Files rather than a socket because either side may be gone: the controller that launched an
instance can die and a new one pick it up an hour later, and a crashed host must leave behind
enough to tell what happened. Every JSON file is replaced atomically, so a reader never sees
half of one, whoever dies while writing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cloud.provider import EndReason, InstanceState, InstanceStatus, Market, Offer


@dataclass(frozen=True)
class InstanceFiles:
    """Where each file of instance ``root.name`` lives; the one place that names them."""

    root: Path

    @classmethod
    def of(cls, home: Path, instance_id: str) -> InstanceFiles:
        """The files of ``instance_id`` under a spotrun home."""
        return cls(instances_dir(home) / instance_id)

    @property
    def spec(self) -> Path:
        """``instance.json``: what to run, written once by the provider before the host starts."""
        return self.root / "instance.json"

    @property
    def state(self) -> Path:
        """``state.json``: the lifecycle, written by the host (or by the provider when the host is dead)."""
        return self.root / "state.json"

    @property
    def control(self) -> Path:
        """``control.json``: a request to the running host, followed by SIGUSR1."""
        return self.root / "control.json"

    @property
    def heartbeat(self) -> Path:
        """Touched by the host every few seconds: its mtime is when a crashed host was last alive."""
        return self.root / "heartbeat"

    @property
    def training_started(self) -> Path:
        """``training-started.json``: written once by the agent at the attempt's first training step.

        Its path reaches the agent in ``SPOTRUN_TRAINING_STARTED_FILE``; the host watches for it,
        because the injected interruption's clock starts there (see ``InstanceSpec.interrupt_after_s``).
        """
        return self.root / "training-started.json"

    @property
    def host_log(self) -> Path:
        """One line per transition, plus anything the host process prints (a traceback included)."""
        return self.root / "host.log"

    @property
    def agent_log(self) -> Path:
        """The agent's stdout and stderr."""
        return self.root / "agent.log"


def instances_dir(home: Path) -> Path:
    """The folder holding one folder per local instance."""
    return home / "local" / "instances"


@dataclass(frozen=True)
class InstanceSpec:
    """What a local instance is (``instance.json``); never changes after launch."""

    instance_id: str
    token: str
    job: str
    attempt: int
    offer: Offer
    agent_command: tuple[str, ...]
    env: dict[str, str]
    workdir: str
    tags: dict[str, str]
    launched_at: float
    # The injected lifetime: seconds of *training* before the notice, counted from the attempt's first
    # training step as the agent reports it (not from the launch); None: no injected interruption.
    interrupt_after_s: float | None
    notice_s: float
    rebalance_lead_s: float
    # When the spot trace's next loss of capacity serves the notice (unix seconds, wall clock),
    # whatever the training does: capacity goes at its time. None: no trace, or it never lacks capacity.
    capacity_notice_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        data = asdict(self)
        data["offer"]["market"] = self.offer.market.value
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InstanceSpec:
        """The inverse of ``to_json``."""
        offer = dict(data["offer"], market=Market(data["offer"]["market"]))
        return cls(**dict(data, offer=Offer(**offer), agent_command=tuple(data["agent_command"])))


@dataclass(frozen=True)
class HostState:
    """Where a local instance is in its life (``state.json``), with what identifies its processes."""

    state: InstanceState
    host_pid: int | None = None
    host_start_ticks: int | None = None
    agent_pid: int | None = None  # also the agent's process group id: the host makes it a group leader
    agent_start_ticks: int | None = None
    metadata_url: str | None = None
    started_at: float | None = None  # when the agent process started
    training_started_at: float | None = None  # the attempt's first training step, as the agent reported it
    rebalance_at: float | None = None
    notice_at: float | None = None
    terminate_at: float | None = None  # the time the notice announced
    ended_at: float | None = None
    end_reason: EndReason | None = None
    exit_code: int | None = None

    def ended(self, reason: EndReason, ended_at: float, exit_code: int | None = None) -> HostState:
        """This state, terminated."""
        return replace(self, state=InstanceState.TERMINATED, end_reason=reason, ended_at=ended_at, exit_code=exit_code)

    def status(self, spec: InstanceSpec) -> InstanceStatus:
        """What the provider protocol reports for this state."""
        return InstanceStatus(
            instance_id=spec.instance_id,
            state=self.state,
            launched_at=spec.launched_at,
            ended_at=self.ended_at,
            end_reason=self.end_reason,
            exit_code=self.exit_code,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        data = asdict(self)
        data["state"] = self.state.value
        data["end_reason"] = self.end_reason.value if self.end_reason else None
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        """The inverse of ``to_json``."""
        reason = data.get("end_reason")
        return cls(**dict(data, state=InstanceState(data["state"]), end_reason=EndReason(reason) if reason else None))


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one, never a mix.

    No fsync: local instances guard against processes dying, not the machine losing power.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(temporary, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when there is no such file; ValueError when it holds something else."""
    try:
        value: object = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{path} holds a JSON {type(value).__name__}, not an object")
    return value


def read_spec(files: InstanceFiles) -> InstanceSpec | None:
    """The instance's spec, or None for an instance that does not exist."""
    data = read_json(files.spec)
    return None if data is None else InstanceSpec.from_json(data)


def read_state(files: InstanceFiles) -> HostState | None:
    """The instance's state, or None before its host wrote the first one."""
    data = read_json(files.state)
    return None if data is None else HostState.from_json(data)


def write_state(files: InstanceFiles, state: HostState) -> None:
    """Record ``state`` for every reader."""
    write_json_atomic(files.state, state.to_json())
