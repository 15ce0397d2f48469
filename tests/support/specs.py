"""Complete job specs from the few sections a test cares about: what `spotrun run` would have recorded."""

from __future__ import annotations

from typing import Any

from runner.spec.job_spec import CheckpointSpec, JobSpec, TrainSpec


def job_spec(sections: dict[str, Any] | None = None, *, name: str = "job", workdir: str = "/tmp") -> JobSpec:
    """A validated spec: ``sections`` over a command job named ``name`` (an aws job gets an s3:// checkpoint URL)."""
    data: dict[str, Any] = {"train": {"command": "true"}, "workdir": workdir, **(sections or {}), "name": name}
    if (data.get("resources") or {}).get("provider") == "aws":
        data.setdefault("checkpoint", {}).setdefault("url", f"s3://spotrun-tests/{data['name']}")
    return JobSpec.model_validate(data)


def unchecked_spec(name: str) -> JobSpec:
    """A spec under a name `spotrun run` would refuse (``<script>``, markup): what reports must still escape if a store holds one."""
    return JobSpec.model_construct(
        name=name, train=TrainSpec(command="true"), workdir="/tmp", checkpoint=CheckpointSpec(url=f"file:///tmp/{name}")
    )
