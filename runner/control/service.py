"""`spotrun controller`: one long-lived process that drives every live job in the state store.

What a team runs on a small always-on machine, pointed at the shared database. Every cycle it
lists the live jobs and groups them by provider configuration: every AWS job is one group, local
jobs with the same ``local:`` settings are one. One Controller per group steps all of that
group's jobs with one batched provider poll, at the group's own interval (1 s local, 10 s on a
cloud). Jobs another controller holds a current lease on are left to it; a job whose controller
died is adopted once its lease expires. Several services may run against one store: leases
split the jobs between them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from checkpoints.errors import CheckpointError
from cloud.errors import ProviderError
from runner.control.controller import Controller, controller_id
from runner.control.providers import agent_command, controller_settings, provider_for
from runner.errors import SpotrunError
from runner.state.store import Job, StateStore

log = logging.getLogger(__name__)
_EXPECTED = (SpotrunError, ProviderError, CheckpointError)


@dataclass
class _Group:
    """The controller for one provider configuration, and when it is next due."""

    controller: Controller
    due: float = 0.0  # time.monotonic()


class ControllerService:
    """Drives every live job of a store, a cycle at a time; ``run`` loops until ``stop``."""

    def __init__(self, store: StateStore, home: Path, *, owner: str | None = None, report: Callable[[str], None] = print) -> None:
        self.store = store
        self.home = home
        self.owner = owner or controller_id()
        self.report = report
        self._groups: dict[str, _Group] = {}
        self._failures: dict[str, str] = {}  # group -> the last error reported, so a lasting one is said once
        self._stopping = False
        self._seen_event = store.last_event_id()

    def cycle(self) -> float:
        """One step for every group that is due; returns the seconds until the next one is."""
        now = time.monotonic()
        for key, jobs in _by_provider(self.store.live_jobs()).items():
            group = self._groups.get(key) or self._group(key, jobs[0])
            if group is None or group.due > now:
                continue
            group.due = now + group.controller.settings.poll_interval_s
            self._step(key, group, [job.name for job in jobs])
        self._report_events()
        return max(0.0, min((group.due for group in self._groups.values()), default=now + 1.0) - time.monotonic())

    def run(self, *, once: bool = False) -> None:
        """Cycle until ``stop`` (or once), then give up every lease held so other controllers take over at once."""
        try:
            while not self._stopping:
                wait_s = self.cycle()
                if once:
                    return
                time.sleep(min(wait_s, 1.0))
        finally:
            self.release()

    def stop(self) -> None:
        """Finish the current cycle and return from ``run`` (from a signal handler)."""
        self._stopping = True

    def release(self) -> None:
        """Give up this service's leases on every job it drives: every group's controller acts under the service's one owner id."""
        self.store.for_controller(self.owner).release_leases([job.name for job in self.store.live_jobs()])

    def _report_events(self) -> None:
        """Print what this service did (its own events), one line each, as `spotrun run` does for one job."""
        for event_id, event in self.store.events(None, after_id=self._seen_event):
            self._seen_event = event_id
            if event.actor == self.owner:
                self.report(f"{time.strftime('%H:%M:%S', time.localtime(event.time))}  {event.job}: {event.message}")

    def _group(self, key: str, job: Job) -> _Group | None:
        try:
            provider = provider_for(job.spec, self.home, self.store)
        except _EXPECTED as error:
            self._failed(key, f"cannot drive {key} jobs such as {job.name!r}: {error}")
            return None
        group = _Group(
            Controller(self.store, provider, agent_command=agent_command, settings=controller_settings(job.spec), owner=self.owner)
        )
        self._groups[key] = group
        return group

    def _step(self, key: str, group: _Group, names: list[str]) -> None:
        try:
            group.controller.cycle_many(names)
        except _EXPECTED as error:
            self._failed(key, f"{key} jobs: {error}")
            return
        except Exception:  # a long-lived service outlives one group's bug: it is logged in full and retried next cycle
            log.exception("cycle of the %s jobs failed", key)
            return
        self._failures.pop(key, None)

    def _failed(self, key: str, message: str) -> None:
        if self._failures.get(key) != message:
            self._failures[key] = message
            self.report(f"error: {message}")


def _by_provider(jobs: list[Job]) -> dict[str, list[Job]]:
    """Jobs grouped by the provider configuration they launch with; a group shares one provider and one poll."""
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        local = job.spec.local
        key = job.spec.resources.provider if local is None else f"local {local.model_dump_json()}"
        groups.setdefault(key, []).append(job)
    return groups
