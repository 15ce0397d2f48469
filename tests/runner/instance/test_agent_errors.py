"""A failed training process is reported with the exception it ended with, not just its exit code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runner.instance.agent import last_error_line


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (
            "raise RuntimeError('my configure_optimizers is broken on purpose')",
            "RuntimeError: my configure_optimizers is broken on purpose",
        ),
        pytest.param(
            "from lightning.fabric.utilities.exceptions import MisconfigurationException\n"
            "raise MisconfigurationException('val_check_interval must be 1.0 or an int')",
            "lightning.fabric.utilities.exceptions.MisconfigurationException: val_check_interval must be 1.0 or an int",
            marks=pytest.mark.slow,  # the process imports lightning: seconds
        ),
        ("import sys; print('ValueError is fine to mention'); sys.exit(3)", None),
    ],
)
def test_the_last_exception_of_a_real_process_is_found_in_its_log(tmp_path: Path, code: str, expected: str | None) -> None:
    log = tmp_path / "train.log"
    with open(log, "wb") as output:
        process = subprocess.run([sys.executable, "-c", code], stdout=output, stderr=subprocess.STDOUT, timeout=120)
    assert process.returncode != 0
    assert last_error_line(log) == expected


def test_no_log_is_no_error(tmp_path: Path) -> None:
    assert last_error_line(tmp_path / "missing.log") is None
