"""`spotrun_checkpoint()` takes its settings from the agent's environment."""

from __future__ import annotations

import pytest

from checkpoints import environment, spotrun_checkpoint
from checkpoints.errors import CheckpointError


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(environment.CHECKPOINT_URL, f"file://{tmp_path}/ckpts")
    monkeypatch.setenv(environment.CHECKPOINT_EVERY_STEPS, "25")
    monkeypatch.setenv(environment.CHECKPOINT_KEEP, "4")
    monkeypatch.setenv(environment.CHECKPOINT_KEEP_EVERY, "1000")
    callback = spotrun_checkpoint()
    assert (callback.every_steps, callback.every_s, callback.keep, callback.keep_every) == (25, None, 4, 1000)
    assert callback.store.url == f"file://{tmp_path}/ckpts"


def test_without_spotrun_the_url_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(environment.CHECKPOINT_URL, raising=False)
    with pytest.raises(CheckpointError, match="SPOTRUN_CHECKPOINT_URL"):
        spotrun_checkpoint()


def test_a_malformed_variable_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv(environment.CHECKPOINT_URL, f"file://{tmp_path}/ckpts")
    monkeypatch.setenv(environment.CHECKPOINT_KEEP, "three")
    with pytest.raises(CheckpointError, match="SPOTRUN_CHECKPOINT_KEEP must be an integer"):
        spotrun_checkpoint()
