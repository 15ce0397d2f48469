"""The numerics settings a run keeps across attempts: what is applied, and what only warns."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from checkpoints.numerics import Numerics

FIRST = Numerics(intra_op_threads=1, deterministic_algorithms=False, torch_version="2.13.0+cpu", device="cpu", precision="32-true")


def test_round_trips_through_the_checkpoints_plain_types() -> None:
    assert Numerics.from_json(FIRST.to_json()) == FIRST
    assert all(isinstance(value, (int, bool, str)) for value in FIRST.to_json().values())  # torch.load(weights_only=True) takes them


def test_applying_sets_the_first_attempts_thread_count() -> None:
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        FIRST.apply_to_this_process(logging.getLogger("test"))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_what_cannot_be_applied_is_named_in_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    later = dataclasses.replace(FIRST, torch_version="2.14.1+cu130", device="NVIDIA H200")
    with caplog.at_level(logging.WARNING):
        FIRST.warn_about_differences(later, logging.getLogger("test"))
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "will not be bit-exact" in message and "'2.13.0+cpu' -> '2.14.1+cu130'" in message and "'cpu' -> 'NVIDIA H200'" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        FIRST.warn_about_differences(FIRST, logging.getLogger("test"))
    assert not caplog.records
