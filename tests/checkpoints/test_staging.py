"""The training process leaves nothing in the temp folder, however it ends, and signs its manifests with the job's key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from checkpoints.environment import PREEMPTED_EXIT_CODE
from checkpoints.signing import KEY_ENV
from checkpoints.store import CheckpointStore

WORKER = Path(__file__).with_name("staging_worker.py")
KEY = bytes(range(32))

pytestmark = pytest.mark.slow  # training runs in real processes, one per way of ending


def test_no_staging_folder_survives_an_exception_a_normal_end_or_an_emergency_exit(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    url, report = f"file://{tmp_path}/ckpts", tmp_path / "report.json"
    environment = {**os.environ, "TMPDIR": str(temp), KEY_ENV: KEY.hex()}
    result = subprocess.run(
        [sys.executable, str(WORKER), url, str(tmp_path / "control.json"), str(report)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == PREEMPTED_EXIT_CODE, result.stderr[-3000:]
    assert json.loads(report.read_text()) == {
        "after_exception": [],
        "resumed_from": 3,
        "staging_at_start": [],
        "after_normal_end": [],
    }  # the resume file went as soon as it was loaded; the folders at the end of each fit
    assert sorted(path.name for path in temp.iterdir() if path.name.startswith("spotrun-")) == []
    # The callback's store had the job's key: what it committed is signed with it, and nothing else reads as this job's.
    final = CheckpointStore(url, key=KEY).latest(check_sha256=True)
    assert final is not None and final.step == 6 and final.final
    assert CheckpointStore(url, key=bytes(32)).latest() is None
