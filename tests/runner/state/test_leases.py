"""Controller leases in the state store, on SQLite and on a real PostgreSQL server: one driver per job, always."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from specs import job_spec

from runner.errors import LeaseLostError
from runner.state.store import JobState, StateStore

JOBS = [f"job-{index:02d}" for index in range(50)]


def _store_with_jobs(url: str, names: list[str]) -> StateStore:
    store = StateStore(url)
    for name in names:
        store.create_job(job_spec(name=name), spec_path="-", checkpoint_url=f"file:///tmp/{name}", launched_by="ana")
    return store


def _wait_for_expiry(store: StateStore, name: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.lease(name) is not None:
        assert time.monotonic() < deadline, f"the lease on {name} never expired"
        time.sleep(0.05)


def _race(controllers: list[StateStore]) -> list[set[str]]:
    """Every controller asks for all the jobs at the same instant (threads released by one barrier); what each got."""
    start = threading.Barrier(len(controllers))
    held: list[set[str]] = [set() for _ in controllers]
    errors: list[BaseException] = []

    def take(index: int) -> None:
        try:
            start.wait()
            held[index] = controllers[index].acquire_leases(JOBS, ttl_s=30)
        except BaseException as error:  # surfaced by the caller
            errors.append(error)

    threads = [threading.Thread(target=take, args=(index,)) for index in range(len(controllers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    return held


def test_two_controllers_taking_50_jobs_at_the_same_instant_split_them_without_overlap(database_url: str) -> None:
    _store_with_jobs(database_url, JOBS)
    controllers = [StateStore(database_url).for_controller(f"controller-{index}") for index in range(2)]
    for round_number in range(5):  # each round a fresh race: every lease released first
        held = _race(controllers)
        assert held[0].isdisjoint(held[1]), f"round {round_number}: both hold {sorted(held[0] & held[1])}"
        assert held[0] | held[1] == set(JOBS)
        observer = controllers[0]
        for index, names in enumerate(held):
            assert {observer.job(name).lease_owner for name in names} <= {f"controller-{index}"}
        for controller, names in zip(controllers, held, strict=True):
            controller.release_leases(sorted(names))


@pytest.mark.slow  # waits out a real 2 s lease
def test_a_lease_is_renewed_by_its_holder_and_adopted_only_after_it_expires(database_url: str) -> None:
    store = _store_with_jobs(database_url, ["train"])
    first, second = store.for_controller("first"), store.for_controller("second")
    assert first.acquire_leases(["train"], ttl_s=2.0) == {"train"}
    assert second.acquire_leases(["train"], ttl_s=2.0) == set()
    assert first.acquire_leases(["train"], ttl_s=2.0) == {"train"}  # a renewal
    lease = store.lease("train")
    assert lease is not None and lease.owner == "first" and 0 < lease.expires_in_s <= 2.0

    _wait_for_expiry(store, "train")
    assert second.acquire_leases(["train"], ttl_s=30.0) == {"train"}
    adoption = [event for _, event in store.events("train") if event.kind == "lease"][-1]
    assert adoption.actor == "second" and adoption.data["from"] == "first" and adoption.data["expired_s"] >= 0
    assert first.acquire_leases(["train"], ttl_s=2.0) == set()  # the old holder cannot take it back while it is current


def test_a_controller_that_lost_its_lease_writes_nothing_for_the_job(database_url: str) -> None:
    store = _store_with_jobs(database_url, ["train"])
    stale, current = store.for_controller("stale"), store.for_controller("current")
    stale.acquire_leases(["train"], ttl_s=1.0)
    stale.set_state("train", JobState.PROVISIONING, "attempt 1")
    _wait_for_expiry(store, "train")
    current.acquire_leases(["train"], ttl_s=30.0)
    events_before = store.events("train")

    with pytest.raises(LeaseLostError, match="stale no longer holds"):
        stale.set_state("train", JobState.RUNNING, "attempt 1 training")
    with pytest.raises(LeaseLostError):
        stale.event("train", "launch", "attempt 1: instance i-0 launched")

    assert store.job("train").state is JobState.PROVISIONING
    assert store.events("train") == events_before
    current.set_state("train", JobState.RUNNING, "attempt 1 training")  # the holder's writes go through
    assert store.events("train")[-1][1].actor == "current"


def test_a_released_lease_is_free_at_once_and_final_jobs_are_never_leased(database_url: str) -> None:
    store = _store_with_jobs(database_url, ["live", "done"])
    first, second = store.for_controller("first"), store.for_controller("second")
    assert first.acquire_leases(["live", "done"], ttl_s=30.0) == {"live", "done"}
    first.set_state("done", JobState.SUCCEEDED, "finished")
    first.release_leases(["live", "done"])
    assert store.lease("live") is None
    assert second.acquire_leases(["live", "done"], ttl_s=30.0) == {"live"}
    assert [job.name for job in store.live_jobs()] == ["live"]


def test_jobs_list_by_who_launched_them(database_url: str) -> None:
    store = _store_with_jobs(database_url, ["ana-1", "ana-2"])
    store.create_job(job_spec(name="ben-1"), spec_path="-", checkpoint_url="file:///tmp/ben-1", launched_by="ben")
    assert sorted(job.name for job in store.jobs(launched_by="ana")) == ["ana-1", "ana-2"]
    assert [job.name for job in store.jobs(launched_by="ben")] == ["ben-1"]
    assert len(store.jobs()) == 3


def test_the_lease_of_a_dead_controller_process_on_this_machine_is_taken_at_once(database_url: str) -> None:
    from runner.control.controller import _owner_is_gone

    store = _store_with_jobs(database_url, ["train", "elsewhere"])
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    dead = f"{socket.gethostname()}:{ended.stdout.strip()}:abc123"
    alive = f"{socket.gethostname()}:{os.getpid()}:abc123"
    store.for_controller(dead).acquire_leases(["train"], ttl_s=300)
    store.for_controller("other-host:1:abc123").acquire_leases(["elsewhere"], ttl_s=300)
    assert (_owner_is_gone(dead), _owner_is_gone(alive), _owner_is_gone("other-host:1:abc123")) == (True, False, False)

    taken = store.for_controller(alive).acquire_leases(["train", "elsewhere"], ttl_s=30, vacated=_owner_is_gone)

    assert taken == {"train"}  # a controller on another machine is waited out
    adoption = [event for _, event in store.events("train") if event.kind == "lease"][-1]
    assert "whose process is gone" in adoption.message
