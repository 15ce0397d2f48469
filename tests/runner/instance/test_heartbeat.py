"""The heartbeat: one typed message in memory, the same keys on the wire that agents have always written."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from specs import job_spec

from checkpoints import signing
from checkpoints.progress import CheckpointReport, Progress, TrainingStatus
from runner.instance.mailbox import Mailbox
from runner.instance.protocol import HEARTBEAT_NAME, AgentStatus, Heartbeat, JobChannel, ProtocolError, heartbeat_name
from runner.state.database import default_database_url
from runner.state.store import StateStore

_counts = st.integers(min_value=0, max_value=2**53)
_times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
_numbers = st.floats(allow_nan=False, allow_infinity=False)
_text = st.text(max_size=30)

_checkpoints = st.builds(
    CheckpointReport,
    step=_counts,
    epoch=_counts,
    time=_times,
    size_bytes=_counts,
    url=_text,
    reason=_text,
    final=st.booleans(),
    metrics=st.dictionaries(_text, _numbers, max_size=3),
)


@st.composite
def heartbeats(draw: st.DrawFn) -> Heartbeat:
    """Any heartbeat an agent can write; its progress (if any) is as of the heartbeat, as every heartbeat read back has it."""
    time = draw(_times)
    progress = draw(
        st.none()
        | st.builds(
            Progress,
            status=st.sampled_from(TrainingStatus),
            time=st.just(time),
            step=_counts,
            epoch=_counts,
            total_steps=st.none() | _counts,
            loss=st.none() | _numbers,
            steps_per_s=st.floats(min_value=0, max_value=1e6),
            metrics=st.dictionaries(_text, _numbers, max_size=3),
            checkpoint=st.none() | _checkpoints,
            resumed_from_step=st.none() | _counts,
            resume_exact=st.booleans(),
            resume_inexact_reason=st.none() | _text,
        )
    )
    optional_time = st.none() | _times
    return Heartbeat(
        status=draw(st.sampled_from(AgentStatus)),
        job=draw(st.none() | _text),
        attempt=draw(_counts),
        node=draw(st.integers(0, 64)),
        instance_id=draw(st.none() | _text),
        time=time,
        training_started_at=draw(optional_time),
        interruption_at=draw(optional_time),
        stop_reason=draw(st.none() | _text),
        exit_code=draw(st.none() | st.integers(-255, 255)),
        message=draw(st.none() | _text),
        progress=progress,
    )


_KEY = bytes.fromhex(signing.new_key())
_CHANNEL = JobChannel(Mailbox.at(f"memory://heartbeats-{uuid.uuid4().hex[:8]}/job"), "job", _KEY)


@settings(max_examples=150, deadline=None)
@given(heartbeats())
def test_any_heartbeat_reads_back_as_it_was_written_signed_and_as_json(heartbeat: Heartbeat) -> None:
    _CHANNEL.write_heartbeat(heartbeat)
    assert _CHANNEL.read_heartbeat(heartbeat.node) == heartbeat
    assert Heartbeat.from_json(json.loads(json.dumps(heartbeat.to_json())), where="test") == heartbeat


# What the previous spotrun's agent wrote (runner/agent.py's `_heartbeat`: the progress file merged
# in, its status renamed training_status), key for key and in order, envelope left out.
_CHECKPOINT = {
    "step": 100,
    "epoch": 2,
    "time": 1700000000.5,
    "size_bytes": 4096,
    "url": "file:///c/step-000000000100",
    "reason": "periodic",
    "final": False,
    "metrics": {"train_loss": 0.25},
}
_PREVIOUS_AGENTS = {
    "status": "running",
    "time": 1700000010.0,
    "step": 120,
    "epoch": 2,
    "total_steps": 500,
    "loss": 0.25,
    "steps_per_s": 4.5,
    "metrics": {"train_loss": 0.25},
    "checkpoint": _CHECKPOINT,
    "resumed_from_step": 40,
    "emergency": None,
    "resume_exact": True,
    "resume_inexact_reason": None,
    "training_status": "training",
    "job": "digits",
    "attempt": 3,
    "node": 0,
    "instance_id": "i-0abc",
    "training_started_at": 1699999990.0,
    "interruption_at": None,
    "stop_reason": None,
    "exit_code": None,
    "message": None,
}


def test_a_heartbeat_as_the_previous_agent_wrote_it_reads_typed_and_writes_back_byte_for_byte() -> None:
    heartbeat = Heartbeat.from_json(_PREVIOUS_AGENTS, where=HEARTBEAT_NAME)

    assert heartbeat.status is AgentStatus.RUNNING and heartbeat.attempt == 3 and heartbeat.time == 1700000010.0
    assert heartbeat.training_status is TrainingStatus.TRAINING and heartbeat.progress is not None
    assert heartbeat.progress.step == 120 and heartbeat.progress.time == heartbeat.time  # the report's time is the heartbeat's
    assert heartbeat.progress.checkpoint == CheckpointReport(**_CHECKPOINT) and heartbeat.progress.resumes_at == 100
    assert json.dumps(heartbeat.to_json()) == json.dumps(_PREVIOUS_AGENTS)

    before_training = {
        "training_status": None,
        "status": "running",
        "job": "digits",
        "attempt": 4,
        "node": 0,
        "instance_id": "i-0def",
        "time": 5.0,
        "training_started_at": None,
        "interruption_at": None,
        "stop_reason": None,
        "exit_code": None,
        "message": None,
    }
    assert Heartbeat.from_json(before_training, where=HEARTBEAT_NAME).progress is None
    assert json.dumps(Heartbeat.from_json(before_training, where=HEARTBEAT_NAME).to_json()) == json.dumps(before_training)
    # The previous agent's refusal carried five keys only.
    refusal = Heartbeat.from_json(
        {"status": "refused", "attempt": 1, "node": 2, "time": 5.0, "message": "not the spec"}, where=HEARTBEAT_NAME
    )
    assert refusal == Heartbeat(status=AgentStatus.REFUSED, attempt=1, node=2, time=5.0, message="not the spec")


def test_the_reports_own_time_does_not_travel_the_heartbeats_does() -> None:
    progress = Progress(status=TrainingStatus.TRAINING, time=10.0, step=1, epoch=0)
    written = Heartbeat(status=AgentStatus.RUNNING, attempt=1, time=12.0, progress=progress)
    assert Heartbeat.from_json(written.to_json(), where=HEARTBEAT_NAME) == replace(written, progress=replace(progress, time=12.0))


_WRONG = [
    ("status", "training", "status"),  # the training's word, not the agent's
    ("status", None, "status"),
    ("attempt", "3", "attempt"),
    ("attempt", 3.0, "attempt"),
    ("node", True, "node"),
    ("time", None, "time"),
    ("time", float("inf"), "time"),
    ("instance_id", 42, "instance_id"),
    ("interruption_at", "soon", "interruption_at"),
    ("exit_code", 1.5, "exit_code"),
    ("message", ["failed"], "message"),
    ("training_status", "resting", "status"),
    ("step", "120", "step"),
    ("checkpoint", {"step": "100"}, "checkpoint.step"),
    ("metrics", {"train_loss": None}, "metrics['train_loss']"),
]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(_WRONG))
def test_a_field_of_the_wrong_type_is_a_protocol_error_naming_it(wrong: tuple[str, Any, str]) -> None:
    field, value, named = wrong
    with pytest.raises(ProtocolError, match=rf"^_spotrun/heartbeat.json: {_escaped(named)} is "):
        Heartbeat.from_json({**_PREVIOUS_AGENTS, field: value}, where=f"_spotrun/{HEARTBEAT_NAME}")


def _escaped(text: str) -> str:
    return text.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")


def test_a_wrongly_typed_heartbeat_in_the_mailbox_is_refused_by_the_channel(tmp_path: Path) -> None:
    channel = JobChannel(Mailbox.at(f"file://{tmp_path}/job"), "job", None)
    channel.mailbox.write(
        heartbeat_name(1), {**_PREVIOUS_AGENTS, "node": 1, "attempt": "3", "spotrun_protocol": 1, "spotrun_message": "heartbeat"}
    )
    with pytest.raises(ProtocolError, match="heartbeat-node-1.json: attempt is '3', expected int"):
        channel.read_heartbeat(1)
    channel.mailbox.write(heartbeat_name(1), {"spotrun_protocol": 1})  # not a heartbeat at all
    with pytest.raises(ProtocolError, match="status is None"):
        channel.read_heartbeat(1)


def test_the_state_store_keeps_the_newest_heartbeat_typed(tmp_path: Path) -> None:
    store = StateStore(default_database_url(tmp_path))
    store.create_job(job_spec(name="digits"), spec_path="-", checkpoint_url=f"file://{tmp_path}/ckpt")
    assert store.job("digits").progress is None and store.job("digits").training_progress is None

    heartbeat = Heartbeat.from_json({**_PREVIOUS_AGENTS, "loss": float("nan")}, where=HEARTBEAT_NAME)  # a diverged loss too
    store.set_progress("digits", heartbeat)

    kept = store.job("digits").progress
    assert kept is not None and json.dumps(kept.to_json()) == json.dumps(heartbeat.to_json())
    assert store.job("digits").training_progress == kept.progress
