"""The local provider with real processes, real signals and a real metadata endpoint on 127.0.0.1.

Every wait is on a condition with a deadline; no test passes because a sleep happened to be long enough.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cloud.errors import InstanceNotFoundError, ProviderError
from cloud.local import LAUNCH_TIMEOUT_S, LocalProvider, SpotAvailability, instance_id_for
from cloud.local_files import HostState, InstanceFiles, InstanceSpec, read_spec, read_state, write_json_atomic
from cloud.local_host import TERM_GRACE_S
from cloud.processes import is_alive, wait_for_exit
from cloud.provider import (
    EndReason,
    InstanceState,
    InstanceStatus,
    LaunchRequest,
    Market,
    Offer,
    OfferRequest,
    Provider,
)

MakeProvider = Callable[..., LocalProvider]


def offer(provider: LocalProvider, market: Market = Market.SPOT) -> Offer:
    return provider.offers(OfferRequest(instance_types=("g5.xlarge",), market=market))[0]


def launch_request(token: str, command: tuple[str, ...], *, job: str | None = None, attempt: int = 1, **fields: Any) -> LaunchRequest:
    """A launch of attempt ``attempt`` of a job named after ``token`` unless ``job`` is given."""
    return LaunchRequest(job=job or token, attempt=attempt, token=token, agent_command=command, **fields)


def spec_of(home: Path, instance_id: str) -> InstanceSpec:
    spec = read_spec(InstanceFiles.of(home, instance_id))
    assert spec is not None
    return spec


def state_of(home: Path, instance_id: str) -> HostState:
    state = read_state(InstanceFiles.of(home, instance_id))
    assert state is not None
    return state


def ended(provider: LocalProvider, instance_id: str) -> InstanceStatus | None:
    status = provider.poll([instance_id])[instance_id]
    return status if status.state is InstanceState.TERMINATED else None


def processes_mentioning(text: str) -> list[int]:
    """Living processes whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def test_is_a_provider_with_one_offer_per_type(make_provider: MakeProvider) -> None:
    provider = make_provider(spot_price_usd_per_hour=0.3, on_demand_price_usd_per_hour=1.0)
    assert isinstance(provider, Provider)
    spot = provider.offers(OfferRequest(instance_types=("a", "b"), market=Market.SPOT))
    assert [(o.instance_type, o.zone, o.market, o.price_usd_per_hour, o.on_demand_price_usd_per_hour) for o in spot] == [
        ("a", "local", Market.SPOT, 0.3, 1.0),
        ("b", "local", Market.SPOT, 0.3, 1.0),
    ]
    on_demand = provider.offers(OfferRequest(instance_types=("a",), market=Market.ON_DEMAND))
    assert on_demand[0].market is Market.ON_DEMAND and on_demand[0].price_usd_per_hour == 1.0
    unnamed = provider.offers(OfferRequest(instance_types=(), market=Market.SPOT))
    assert [offer.instance_type for offer in unnamed] == ["local"]


def test_exit_code_environment_and_workdir_of_an_agent_that_ends_by_itself(
    make_provider: MakeProvider, fake_agent: Callable, tmp_path: Path, wait_until: Callable
) -> None:
    provider = make_provider(cpus=3)
    agent = fake_agent("agent")
    workdir = tmp_path / "work"
    workdir.mkdir()
    instance = provider.launch(
        offer(provider),
        launch_request(
            "exits", agent.command("--exit-after-s", "0", "--exit-code", "3"), env={"FAKE_AGENT_MARKER": "m"}, workdir=str(workdir)
        ),
    )
    assert instance.instance_id == instance_id_for("exits")
    status = wait_until(lambda: ended(provider, instance.instance_id), what="the instance to end")
    assert (status.end_reason, status.exit_code) == (EndReason.AGENT_EXITED, 3)
    assert status.launched_at == instance.launched_at <= status.ended_at <= time.time()
    started = agent.event("started")
    assert started is not None
    assert started["instance_id"] == started["metadata_instance_id"] == instance.instance_id
    assert (started["cwd"], started["marker"]) == (str(workdir), "m")
    assert started["omp_threads"] == "3"  # the instance's CPUs: its torch starts that many intra-op threads
    assert started["pgid"] == started["pid"]  # the agent leads its own process group
    assert provider.agent_log_path(instance.instance_id).exists()


def test_an_agent_that_cannot_start_ends_the_instance_with_127(make_provider: MakeProvider) -> None:
    provider = make_provider()
    instance = provider.launch(offer(provider), launch_request("missing", ("/nonexistent/agent",)))
    status = provider.poll([instance.instance_id])[instance.instance_id]
    assert (status.state, status.end_reason, status.exit_code) == (InstanceState.TERMINATED, EndReason.AGENT_EXITED, 127)
    assert "/nonexistent/agent" in provider.agent_log_path(instance.instance_id).read_text()


def test_launching_a_token_twice_gives_one_instance_and_one_process(make_provider: MakeProvider, fake_agent: Callable, home: Path) -> None:
    agent = fake_agent("agent")
    provider = make_provider()
    first = provider.launch(offer(provider), launch_request("once", agent.command()))
    # A restarted controller: a new provider object, repeating the launch it may not have seen finish.
    again = make_provider().launch(offer(provider, Market.ON_DEMAND), launch_request("once", agent.command()))
    assert again == first  # the original offer, spot, not the repeat's
    assert len(processes_mentioning(f"cloud.local_host {InstanceFiles.of(home, first.instance_id).root}")) == 1
    assert len(processes_mentioning(str(agent.out))) == 1
    assert [path.name for path in (home / "local" / "instances").iterdir()] == [first.instance_id]


@pytest.mark.slow
def test_scheduled_interruption_rebalance_notice_then_kill_of_the_whole_group(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    # seed 4, job "preempted", attempt 1 draw 1.09 s from an exponential with mean 2 s.
    provider = make_provider(preempt_every_s=2.0, seed=4, notice_s=1.0, rebalance_lead_s=0.5)
    agent = fake_agent("agent")
    instance = provider.launch(
        offer(provider), launch_request("preempted", agent.command("--grandchild", "--training-starts-after-s", "0"))
    )
    grandchild = agent.wait_for("grandchild")
    status = wait_until(lambda: ended(provider, instance.instance_id), timeout_s=15, what="the interruption")
    assert (status.end_reason, status.exit_code) == (EndReason.SPOT_INTERRUPTION, None)

    spec, state = spec_of(home, instance.instance_id), state_of(home, instance.instance_id)
    assert spec.interrupt_after_s == pytest.approx(1.090, abs=1e-3)
    assert state.started_at is not None and state.notice_at is not None and state.terminate_at is not None
    assert state.training_started_at is not None
    due = state.training_started_at + spec.interrupt_after_s
    assert due <= state.notice_at < due + 1.0
    assert state.rebalance_at is not None and due - 0.5 <= state.rebalance_at < state.notice_at
    assert state.terminate_at == pytest.approx(state.notice_at + 1.0)

    rebalance, notice = agent.event("rebalance"), agent.event("notice")
    assert rebalance is not None and notice is not None
    assert state.rebalance_at <= rebalance["seen_at"] < state.notice_at <= notice["seen_at"] < state.terminate_at
    assert notice["time"] == int(state.terminate_at)  # EC2's form has whole seconds
    assert status.ended_at is not None and status.ended_at >= state.terminate_at

    started = agent.event("started")
    assert started is not None
    wait_until(lambda: not is_alive(started["pid"], started["start_ticks"]), what="the agent to be dead")
    wait_until(lambda: not is_alive(grandchild["pid"], grandchild["start_ticks"]), what="the grandchild to be dead")


@pytest.mark.slow
def test_the_injected_lifetime_counts_from_the_first_training_step_not_the_launch(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    # The same 1.09 s lifetime as above, but the agent's start-up takes 3 s before its first step:
    # counted from the launch, the notice would come in the middle of the start-up.
    provider = make_provider(preempt_every_s=2.0, seed=4, notice_s=1.0, rebalance_lead_s=0.5)
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("preempted", agent.command("--training-starts-after-s", "3")))
    status = wait_until(lambda: ended(provider, instance.instance_id), timeout_s=20, what="the interruption")
    assert status.end_reason is EndReason.SPOT_INTERRUPTION

    spec, state = spec_of(home, instance.instance_id), state_of(home, instance.instance_id)
    training = agent.event("training-started")
    rebalance, notice = agent.event("rebalance"), agent.event("notice")
    assert spec.interrupt_after_s == pytest.approx(1.090, abs=1e-3)
    assert training is not None and rebalance is not None and notice is not None
    assert state.started_at is not None and state.notice_at is not None and state.rebalance_at is not None
    assert state.training_started_at == training["time"] >= state.started_at + 3.0  # the host took the agent's time
    # Nothing of the interruption reached the agent before its first step; it came the lifetime after it.
    assert training["seen_at"] <= rebalance["seen_at"] <= notice["seen_at"]
    assert state.training_started_at + 1.090 - 0.5 <= state.rebalance_at < state.notice_at
    assert state.training_started_at + 1.090 <= state.notice_at < state.training_started_at + 1.090 + 1.0


@pytest.mark.slow
def test_no_injected_interruption_before_training_starts_but_interrupt_still_comes(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    # A lifetime of about 0.003 s (mean 0.01 s): any start-up at all is longer. The agent never reports a step.
    provider = make_provider(preempt_every_s=0.01, seed=4, notice_s=1.0)
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("never-trains", agent.command("--exit-after-s", "2", "--exit-code", "0")))
    status = wait_until(lambda: ended(provider, instance.instance_id), timeout_s=15, what="the agent to exit by itself")
    assert (status.end_reason, status.exit_code) == (EndReason.AGENT_EXITED, 0)
    state = state_of(home, instance.instance_id)
    assert (state.training_started_at, state.rebalance_at, state.notice_at) == (None, None, None)
    assert agent.event("notice") is None and agent.event("rebalance") is None

    # `spotrun interrupt` does not wait for training.
    waiting = fake_agent("waiting")
    instance = provider.launch(offer(provider), launch_request("interrupted-early", waiting.command("--exit-on-notice", "75")))
    waiting.wait_for("started")
    provider.interrupt(instance.instance_id)
    status = wait_until(lambda: ended(provider, instance.instance_id), what="the end of the notice window")
    assert (status.end_reason, status.exit_code) == (EndReason.SPOT_INTERRUPTION, 75)
    assert state_of(home, instance.instance_id).training_started_at is None


def test_interruption_schedule_comes_from_seed_job_and_attempt_and_spares_on_demand(
    make_provider: MakeProvider, home: Path, tmp_path: Path
) -> None:
    provider = make_provider(preempt_every_s=30.0, seed=7)
    spot = provider.launch(offer(provider), launch_request("a", ("true",)))
    on_demand = provider.launch(offer(provider, Market.ON_DEMAND), launch_request("b", ("true",)))
    drawn = spec_of(home, spot.instance_id).interrupt_after_s
    assert drawn is not None and drawn > 0
    assert spec_of(home, on_demand.instance_id).interrupt_after_s is None

    def draw(seed: int, job: str, attempt: int = 1) -> float | None:
        other = tmp_path / f"other-{seed}-{job}-{attempt}"
        replay = LocalProvider(
            other, preempt_every_s=30.0, notice_s=1.0, seed=seed, spot_price_usd_per_hour=0, on_demand_price_usd_per_hour=0
        )
        request = launch_request(f"another token {seed}", ("true",), job=job, attempt=attempt)
        return spec_of(other, replay.launch(offer(replay), request).instance_id).interrupt_after_s

    assert draw(7, "a") == drawn  # the same spec draws the same schedule, whatever the token
    assert draw(8, "a") != drawn
    assert draw(7, "c") != drawn
    assert draw(7, "a", attempt=2) != drawn


def test_interrupt_now_keeps_the_instance_for_the_whole_notice_even_if_the_agent_leaves(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    provider = make_provider(notice_s=30.0)
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("now", agent.command("--exit-on-notice", "75")))
    agent.wait_for("started")
    provider.interrupt(instance.instance_id, notice_s=1.0)
    state = state_of(home, instance.instance_id)
    assert state.notice_at is not None and state.terminate_at == pytest.approx(state.notice_at + 1.0)
    assert state.rebalance_at == state.notice_at  # EC2 may send both at once

    notice = agent.wait_for("notice")
    assert notice["seen_at"] < state.terminate_at
    status = wait_until(lambda: ended(provider, instance.instance_id), what="the end of the notice window")
    assert (status.end_reason, status.exit_code) == (EndReason.SPOT_INTERRUPTION, 75)
    assert status.ended_at is not None and status.ended_at >= state.terminate_at

    with pytest.raises(ProviderError, match="not running"):
        provider.interrupt(instance.instance_id)
    with pytest.raises(InstanceNotFoundError):
        provider.interrupt(instance_id_for("never launched"))


def test_kill_without_notice_is_reported_host_lost(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    provider = make_provider()
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("crash", agent.command("--grandchild")))
    started, grandchild = agent.wait_for("started"), agent.wait_for("grandchild")
    provider.kill_without_notice(instance.instance_id)
    assert state_of(home, instance.instance_id).state is InstanceState.RUNNING  # nothing recorded the crash ...

    status = provider.poll([instance.instance_id])[instance.instance_id]  # ... the poll finds it
    assert (status.state, status.end_reason, status.exit_code) == (InstanceState.TERMINATED, EndReason.HOST_LOST, None)
    assert status.ended_at is not None and instance.launched_at <= status.ended_at <= time.time()
    assert provider.poll([instance.instance_id])[instance.instance_id] == status  # recorded once, stable
    wait_until(lambda: not is_alive(started["pid"], started["start_ticks"]), what="the agent to be dead")
    wait_until(lambda: not is_alive(grandchild["pid"], grandchild["start_ticks"]), what="the grandchild to be dead")


def launch_then_kill_the_host(provider: LocalProvider, agent: Any, home: Path, token: str) -> tuple[Any, dict]:
    """An instance whose host process was SIGKILLed alone, its agent left running."""
    instance = provider.launch(offer(provider), launch_request(token, agent.command()))
    started = agent.wait_for("started")
    state = state_of(home, instance.instance_id)
    assert state.host_pid is not None and state.host_start_ticks is not None
    os.kill(state.host_pid, signal.SIGKILL)
    assert wait_for_exit(state.host_pid, state.host_start_ticks, timeout_s=10)
    return instance, started


def test_a_host_that_dies_alone_takes_its_orphaned_agent_with_it_at_the_next_poll(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    provider = make_provider()
    instance, started = launch_then_kill_the_host(provider, fake_agent("agent"), home, "orphan")
    killed_at = time.time()
    assert is_alive(started["pid"], started["start_ticks"])  # the agent outlived its host ...

    status = provider.poll([instance.instance_id])[instance.instance_id]
    assert status.end_reason is EndReason.HOST_LOST
    assert status.ended_at is not None and status.ended_at <= killed_at  # the host's last sign of life
    wait_until(lambda: not is_alive(started["pid"], started["start_ticks"]), what="the orphaned agent to be killed")


def test_terminate_stops_the_agent_group_and_is_idempotent(make_provider: MakeProvider, fake_agent: Callable, wait_until: Callable) -> None:
    provider = make_provider()
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("stop", agent.command("--grandchild")))
    grandchild = agent.wait_for("grandchild")
    provider.terminate([instance.instance_id])
    status = provider.poll([instance.instance_id])[instance.instance_id]
    assert (status.state, status.end_reason) == (InstanceState.TERMINATED, EndReason.TERMINATED_BY_USER)
    assert status.exit_code == 128 + signal.SIGTERM
    wait_until(lambda: not is_alive(grandchild["pid"], grandchild["start_ticks"]), what="the grandchild to be dead")
    provider.terminate([instance.instance_id, instance_id_for("never launched"), "../not-an-id"])
    assert provider.poll([instance.instance_id])[instance.instance_id] == status


@pytest.mark.slow
def test_terminate_kills_an_agent_that_ignores_sigterm_after_the_grace_period(make_provider: MakeProvider, fake_agent: Callable) -> None:
    provider = make_provider()
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("stubborn", agent.command("--ignore-term")))
    started = agent.wait_for("started")
    began = time.monotonic()
    provider.terminate([instance.instance_id])
    assert TERM_GRACE_S <= time.monotonic() - began < TERM_GRACE_S + 3
    status = provider.poll([instance.instance_id])[instance.instance_id]
    assert (status.end_reason, status.exit_code) == (EndReason.TERMINATED_BY_USER, None)
    assert not is_alive(started["pid"], started["start_ticks"])


def test_terminate_when_the_host_is_already_dead_kills_the_agent_and_records_the_end(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    provider = make_provider()
    instance, started = launch_then_kill_the_host(provider, fake_agent("agent"), home, "dead host")

    provider.terminate([instance.instance_id])
    assert state_of(home, instance.instance_id).end_reason is EndReason.HOST_LOST
    wait_until(lambda: not is_alive(started["pid"], started["start_ticks"]), what="the agent to be killed")


def test_unknown_ids_are_reported_lost(make_provider: MakeProvider) -> None:
    provider = make_provider()
    statuses = provider.poll([instance_id_for("nothing"), "../../etc"])
    assert {status.end_reason for status in statuses.values()} == {EndReason.HOST_LOST}
    with pytest.raises(InstanceNotFoundError):
        provider.agent_log_path(instance_id_for("nothing"))


def test_a_launch_whose_host_never_started_is_pending_then_lost(make_provider: MakeProvider, home: Path) -> None:
    """The controller died between claiming the instance and starting its host."""
    now = [time.time()]
    provider = make_provider(clock=lambda: now[0])
    instance_id = instance_id_for("half-launched")
    files = InstanceFiles.of(home, instance_id)
    files.root.mkdir(parents=True)
    spec = InstanceSpec(
        instance_id=instance_id,
        token="half-launched",
        job="job",
        attempt=1,
        offer=offer(provider),
        agent_command=("true",),
        env={},
        workdir="/",
        tags={},
        launched_at=now[0],
        interrupt_after_s=None,
        notice_s=1.0,
        rebalance_lead_s=1.0,
    )
    write_json_atomic(files.spec, spec.to_json())

    assert provider.poll([instance_id])[instance_id].state is InstanceState.PENDING
    again = provider.launch(offer(provider), launch_request("half-launched", ("true",)))
    assert again.instance_id == instance_id and read_state(files) is None  # a repeat starts nothing
    now[0] += LAUNCH_TIMEOUT_S + 1
    status = provider.poll([instance_id])[instance_id]
    assert (status.state, status.end_reason) == (InstanceState.TERMINATED, EndReason.HOST_LOST)


def test_a_host_that_cannot_start_fails_the_launch_with_its_log(
    make_provider: MakeProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken_python = tmp_path / "broken-python"
    broken_python.write_text("#!/bin/sh\necho 'host cannot start: boom' >&2\nexit 3\n")
    broken_python.chmod(0o755)
    provider = make_provider()
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", str(broken_python))
        with pytest.raises(ProviderError, match="(?s)did not start.*boom"):
            provider.launch(offer(provider), launch_request("broken", ("true",)))
    instance_id = instance_id_for("broken")
    assert provider.poll([instance_id])[instance_id].end_reason is EndReason.HOST_LOST
    assert provider.launch(offer(provider), launch_request("broken", ("true",))).instance_id == instance_id


def test_launch_checks_its_arguments(make_provider: MakeProvider) -> None:
    provider = make_provider()
    foreign = Offer("aws", "g5.xlarge", "us-east-1a", Market.SPOT, 0.4, 1.0)
    with pytest.raises(ProviderError, match="'aws'"):
        provider.launch(foreign, launch_request("x", ("true",)))
    with pytest.raises(ProviderError, match="empty"):
        provider.launch(offer(provider), launch_request("x", ()))
    with pytest.raises(ValueError, match="notice_s"):
        make_provider(notice_s=-1)


LAUNCHER = """
import sys
from pathlib import Path
from cloud.local import LocalProvider
from cloud.provider import LaunchRequest, Market, OfferRequest

provider = LocalProvider(Path(sys.argv[1]), preempt_every_s=0, notice_s=1, seed=0, spot_price_usd_per_hour=0.3, on_demand_price_usd_per_hour=1)
offer = provider.offers(OfferRequest(instance_types=("g5.xlarge",), market=Market.SPOT))[0]
print(provider.launch(offer, LaunchRequest(job="job", attempt=1, token="survivor", agent_command=tuple(sys.argv[2:]))).instance_id)
"""


def test_the_instance_outlives_the_process_that_launched_it(make_provider: MakeProvider, fake_agent: Callable, home: Path) -> None:
    agent = fake_agent("agent")
    launcher = subprocess.run([sys.executable, "-c", LAUNCHER, str(home), *agent.command()], capture_output=True, text=True, timeout=60)
    assert launcher.returncode == 0, launcher.stderr
    instance_id = launcher.stdout.strip()

    provider = make_provider()
    assert provider.poll([instance_id])[instance_id].state is InstanceState.RUNNING
    state = state_of(home, instance_id)
    assert state.host_pid is not None and state.host_start_ticks is not None
    assert is_alive(state.host_pid, state.host_start_ticks)
    assert agent.wait_for("started")["metadata_instance_id"] == instance_id  # its metadata service still answers

    provider.terminate([instance_id])  # from a process that is not the host's parent
    status = provider.poll([instance_id])[instance_id]
    assert (status.end_reason, status.exit_code) == (EndReason.TERMINATED_BY_USER, 128 + signal.SIGTERM)
    assert not is_alive(state.host_pid, state.host_start_ticks)


@pytest.mark.slow
def test_a_spot_availability_trace_withholds_offers_and_interrupts_before_capacity_goes(
    make_provider: MakeProvider, fake_agent: Callable, home: Path, wait_until: Callable
) -> None:
    origin = time.time()
    # ticks of 3 s: capacity for [0, 6), none for [6, 9), then it repeats
    availability = SpotAvailability(gap_s=3.0, available=(True, True, False), origin=origin)
    provider = make_provider(notice_s=1.0, spot_availability=availability)
    assert provider.offers(OfferRequest(instance_types=(), market=Market.SPOT))
    agent = fake_agent("agent")
    instance = provider.launch(offer(provider), launch_request("traced", agent.command()))
    spec = spec_of(home, instance.instance_id)
    assert spec.interrupt_after_s is None  # no preempt_every: only the trace takes capacity away
    assert spec.capacity_notice_at == pytest.approx(origin + 6.0 - 1.0)  # at its wall-clock time, training or not

    status = wait_until(lambda: ended(provider, instance.instance_id), timeout_s=20, what="the interruption at the loss of capacity")
    assert status.end_reason is EndReason.SPOT_INTERRUPTION
    notice = agent.event("notice")
    assert notice is not None and notice["seen_at"] < status.ended_at
    assert origin + 6.0 <= status.ended_at < origin + 8.0  # killed when the 0 tick begins (plus the host's reaction)
    assert provider.offers(OfferRequest(instance_types=(), market=Market.SPOT)) == []  # still inside the 0 tick
    assert provider.offers(OfferRequest(instance_types=(), market=Market.ON_DEMAND))  # on-demand is never withheld
    assert availability.available_at(origin + 9.5) and not availability.available_at(origin + 6.0 + 9.0)  # it repeats
    assert availability.next_loss_after(origin + 9.5) == pytest.approx(origin + 15.0)
