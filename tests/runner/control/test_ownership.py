"""A job owns its checkpoint prefix: a second job on the same checkpoint.url is refused before anything is recorded."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from runner.cli.app import app
from runner.control.ownership import PrefixClaim, claim_prefix, read_claim
from runner.errors import SpecError
from runner.instance.mailbox import Mailbox
from runner.state.store import JobState, open_store


def _spec(tmp_path: Path, name: str, url: str, command: str = "true") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "train": {"command": command},
                "checkpoint": {"url": url, "every": "60s"},
                "resources": {"provider": "local", "instance_types": ["g5.xlarge"]},
            }
        )
    )
    return path


def _submit(spec: Path, home: Path, monkeypatch: pytest.MonkeyPatch):  # click's Result
    monkeypatch.setenv("SPOTRUN_HOME", str(home))
    return CliRunner().invoke(app, ["submit", str(spec)])


def test_a_second_job_on_a_prefix_is_refused_naming_the_owner_and_records_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"file://{tmp_path}/shared-prefix"
    home, other_home = tmp_path / "home", tmp_path / "other-home"
    assert _submit(_spec(tmp_path, "first", url), home, monkeypatch).exit_code == 0
    spec_before = Mailbox.at(url).read("job.json")

    second = _submit(_spec(tmp_path, "second", url + "/", command="echo second"), home, monkeypatch)
    elsewhere = _submit(_spec(tmp_path, "third", url, command="echo third"), other_home, monkeypatch)

    assert second.exit_code == 2 and "belongs to job 'first'" in second.output and "Traceback" not in second.output, second.output
    assert elsewhere.exit_code == 2 and "job 'first' of another state store" in elsewhere.output, elsewhere.output
    assert Mailbox.at(url).read("job.json") == spec_before  # the first job's command stands
    assert [job.name for job in open_store(home).jobs()] == ["first"]
    assert open_store(other_home).jobs() == []


def test_the_prefix_of_an_ended_job_passes_to_a_new_job_of_the_same_store_with_its_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"file://{tmp_path}/prefix"
    home = tmp_path / "home"
    assert _submit(_spec(tmp_path, "old", url), home, monkeypatch).exit_code == 0
    store = open_store(home)
    store.set_state("old", JobState.SUCCEEDED, "done")

    again = _submit(_spec(tmp_path, "new", url), home, monkeypatch)

    assert again.exit_code == 0, again.output
    claim = read_claim(Mailbox.at(url))
    assert claim is not None and claim.job == "new"
    assert store.job("new").key == store.job("old").key is not None  # so it verifies the old job's checkpoints


def test_jobs_claiming_one_s3_prefix_at_once_leave_exactly_one_owner(s3_bucket: str) -> None:
    mailbox = Mailbox.at(f"{s3_bucket}/contested")
    won: list[str] = []
    refused: list[str] = []
    barrier = threading.Barrier(6)

    def claim(name: str) -> None:
        barrier.wait()
        try:
            claim_prefix(mailbox, PrefixClaim(job=name, store_id=f"store-{name}", claimed_at=1.0), ended_here=lambda _: False)
            won.append(name)
        except SpecError as error:
            refused.append(str(error))

    threads = [threading.Thread(target=claim, args=(f"job{index}",)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1 and len(refused) == 5, (won, refused)
    assert all(f"belongs to job {won[0]!r}" in message for message in refused)
    assert read_claim(mailbox) == PrefixClaim(job=won[0], store_id=f"store-{won[0]}", claimed_at=1.0)
