"""A budget changed in the store reaches the next attempt: its launch writes the store's spec to the bucket and names it by digest.

`StateStore.set_budget` changes only the store; the bucket's ``job.json`` keeps the old spec until
the next launch. Nothing reads it in between (a running agent read its spec when it started and
never again), and the bucket must not be rewritten then: an agent still booting checks
``job.json`` against its launch's digest and refuses any other.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from specs import job_spec

from cloud.local import LocalProvider
from cloud.local_files import InstanceFiles
from cloud.local_files import read_spec as read_instance_spec
from runner.control.controller import Controller, ControllerSettings
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import JOB_NAME, LaunchCredentials, read_spec, write_spec
from runner.state.database import default_database_url
from runner.state.store import JobState, StateStore


def test_a_budget_raised_before_a_launch_is_the_spec_that_launch_runs(
    home: Path, tmp_path: Path, make_provider: Callable[..., LocalProvider], fake_agent: Callable[[str], Any]
) -> None:
    store = StateStore(default_database_url(home))
    agent = fake_agent("agent")
    controller = Controller(
        store, make_provider(), agent_command=lambda job, attempt: agent.command(), settings=ControllerSettings(poll_interval_s=0.2)
    )
    url = f"file://{tmp_path}/ckpt"
    spec = job_spec(
        {"resources": {"provider": "local", "instance_types": []}, "local": {"preempt_every_s": 0.0}, "budget": {"max_usd": 50.0}}
    )
    store.create_job(spec, spec_path="-", checkpoint_url=url)
    mailbox = Mailbox.at(url)
    write_spec(mailbox, spec)  # what the submission wrote

    store.set_budget("job", 80.0)
    assert (mailbox.read(JOB_NAME) or {})["budget"]["max_usd"] == 50.0  # the bucket still holds the spec of the submission

    controller.cycle("job")

    [attempt] = store.attempts("job")
    assert attempt.instance_id is not None
    instance = read_instance_spec(InstanceFiles.of(home, attempt.instance_id))
    assert instance is not None
    credentials = LaunchCredentials.from_env(instance.env)
    assert read_spec(mailbox, credentials).budget.max_usd == 80.0  # the launch's own spec, digest checked, as its agent reads it
    store.request_cancel("job")
    assert controller.cycle("job").state is JobState.CANCELLED
