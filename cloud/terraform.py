"""The ``terraform`` CLI, driven for ``spotrun infra``: init, apply, outputs, destroy.

The module ships inside spotrun (read-only, replaced on upgrade) but its state belongs to the
user, so every command runs in a working directory of the user's (``SPOTRUN_HOME/infra/terraform``)
that holds a copy of the module, the state, the providers and the variables given so far. The
variables are kept because ``destroy`` must see the region and names that ``apply`` used.

``apply`` and ``destroy`` run with ``-json`` so progress can be shown as it happens and a failure
carries Terraform's own diagnostics, not a wall of text. After an apply the outputs are stored as
plain JSON where the aws provider reads them, so launching a job never needs Terraform.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cloud.errors import TerraformError

# What the aws provider and `spotrun infra` read from the module's outputs.
REQUIRED_OUTPUTS = (
    "bucket_name",
    "checkpoint_url_prefix",
    "region",
    "launch_template_id",
    "launch_template_name",
    "instance_profile_arn",
    "security_group_id",
    "subnet_ids",
)
# In a source checkout and in an installed wheel alike, terraform/ sits next to the cloud package.
MODULE_DIR = Path(__file__).resolve().parent.parent / "terraform"
MODULE_FILES = ("*.tf", "*.tftpl")
VARIABLES_FILE = "spotrun-variables.json"
# The module's variable naming the spotrun wheel instances install, and where `spotrun infra up` keeps
# the one it built (in the working directory, next to the state: `infra down` needs the file too).
WHEEL_VARIABLE = "spotrun_wheel"
WHEEL_DIR = "wheels"
MINIMUM_TERRAFORM = "1.5"
INSTALL_HINT = f"install Terraform >= {MINIMUM_TERRAFORM} (https://developer.hashicorp.com/terraform/install)"
# The `-json` UI messages worth showing a person while an apply or destroy runs.
_PROGRESS_TYPES = frozenset({"planned_change", "apply_start", "apply_progress", "apply_complete", "apply_errored", "change_summary"})
_BOX_DRAWING = " \t│╷╵"

Progress = Callable[[str], None]


def _ignore_progress(message: str) -> None:
    """The progress callback of callers that show none."""


def _one_line(text: str) -> str:
    """Terraform's multi-line (and box-drawn) text as one line, so the CLI can print it as one error."""
    return re.sub(r"\s+", " ", " ".join(line.strip(_BOX_DRAWING) for line in text.splitlines())).strip()


def _diagnostic_text(diagnostic: Mapping[str, Any]) -> str:
    """``summary: detail (file:line)`` from one ``-json`` diagnostic."""
    text = str(diagnostic.get("summary", "")).strip()
    detail = _one_line(str(diagnostic.get("detail") or ""))
    if detail:
        text = f"{text}: {detail}"
    where = diagnostic.get("range") or {}
    if where.get("filename"):
        text += f" ({where['filename']}:{where.get('start', {}).get('line', '?')})"
    return text


@dataclass
class _JsonRun:
    """What one ``-json`` command said: its errors, and whether it began changing resources."""

    progress: Progress
    errors: list[str] = field(default_factory=list)
    other_lines: list[str] = field(default_factory=list)
    changed: bool = False
    exit_code: int | None = None  # None while running, or when interrupted

    def read(self, line: str) -> None:
        """Take one stdout line: errors are kept for the exception, the rest goes to progress."""
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            if line.strip():
                self.other_lines.append(line)  # a crash or plugin output is not JSON
            return
        kind = message.get("type")
        if kind == "diagnostic":
            diagnostic = message.get("diagnostic") or {}
            if diagnostic.get("severity") == "error":
                self.errors.append(_diagnostic_text(diagnostic))
            else:
                self.progress(f"warning: {_diagnostic_text(diagnostic)}")
        elif kind in _PROGRESS_TYPES:
            self.changed = self.changed or kind == "apply_start"
            self.progress(str(message.get("@message", "")))


class TerraformModule:
    """One Terraform module applied from its own working directory, with its outputs stored as JSON.

    ``source`` is the module to copy in (spotrun's own by default); ``required_outputs`` are the
    outputs an apply must produce, or it fails saying which are missing.
    """

    def __init__(
        self,
        workdir: Path,
        outputs_file: Path,
        *,
        source: Path = MODULE_DIR,
        required_outputs: Collection[str] = (),
    ) -> None:
        self.workdir = workdir
        self.outputs_file = outputs_file
        self.source = source
        self.required_outputs = tuple(required_outputs)

    def init(self, progress: Progress = _ignore_progress) -> None:
        """Copy the module in (replacing an older copy; state and providers stay) and install its providers."""
        self._copy_module()
        lines: list[str] = []

        def read(line: str) -> None:
            lines.append(line)
            if line.strip():
                progress(line.strip())

        exit_code, stderr = self._run(["init", "-input=false", "-no-color"], read)
        if exit_code != 0:
            details = _one_line(stderr) or _one_line("\n".join(lines[-20:])) or f"exit code {exit_code}"
            raise TerraformError(f"terraform init failed in {self.workdir}: {details}")

    def apply(self, variables: Mapping[str, str] | None = None, progress: Progress = _ignore_progress) -> dict[str, Any]:
        """Create or update everything; ``variables`` (``-var`` values) are added to those given before.

        Returns the outputs, which are also written to ``outputs_file``.
        """
        merged = {**self.variables(), **(variables or {})}
        run = _JsonRun(progress)
        try:
            self._run_json(["apply", "-auto-approve", "-json", "-input=false", *_var_arguments(merged)], run)
        finally:
            if run.changed or run.exit_code == 0:
                # Once anything was created with these values, destroying it needs them too.
                _write_json(self.workdir / VARIABLES_FILE, merged)
        self._raise_for(run, "apply")
        outputs = self.outputs()
        missing = [name for name in self.required_outputs if name not in outputs]
        if missing:
            raise TerraformError(
                f"the module applied from {self.source} has no output {', '.join(missing)}, which spotrun launches from; "
                f"add them to its outputs and run again"
            )
        _write_json(self.outputs_file, outputs)
        return outputs

    def destroy(self, progress: Progress = _ignore_progress, variables: Mapping[str, str] | None = None) -> None:
        """Destroy everything the state holds, with the variables of the last apply (``variables`` replacing some); the outputs file goes too."""
        run = _JsonRun(progress)
        merged = {**self.variables(), **(variables or {})}
        try:
            self._run_json(["destroy", "-auto-approve", "-json", "-input=false", *_var_arguments(merged)], run)
        finally:
            if run.changed or run.exit_code == 0:
                # Part of it may be gone already: nothing should launch from these outputs any more.
                self.outputs_file.unlink(missing_ok=True)
        self._raise_for(run, "destroy")

    def outputs(self) -> dict[str, Any]:
        """The outputs in the current state, name to value (empty before the first apply)."""
        lines: list[str] = []
        exit_code, stderr = self._run(["output", "-json", "-no-color"], lines.append)
        if exit_code != 0:
            raise TerraformError(f"terraform output failed in {self.workdir}: {_one_line(stderr)}")
        try:
            return {name: entry["value"] for name, entry in json.loads("\n".join(lines) or "{}").items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise TerraformError(f"terraform output -json in {self.workdir} printed something unexpected ({error})") from error

    def has_state(self) -> bool:
        """Whether anything was ever applied from this working directory (Terraform's local state exists)."""
        return (self.workdir / "terraform.tfstate").exists()

    def variables(self) -> dict[str, str]:
        """The variables given to earlier applies, as passed with ``-var``."""
        path = self.workdir / VARIABLES_FILE
        if not path.exists():
            return {}
        try:
            return {str(key): str(value) for key, value in json.loads(path.read_text()).items()}
        except (json.JSONDecodeError, AttributeError) as error:
            raise TerraformError(f"{path} is not a JSON object of variables ({error}); fix or delete it") from error

    def _copy_module(self) -> None:
        if not any(self.source.glob("*.tf")):
            raise TerraformError(f"no Terraform module at {self.source} (no *.tf files there)")
        if self.workdir.resolve() == self.source.resolve():
            raise TerraformError(f"the working directory {self.workdir} must not be the module's own directory")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Old copies go first, so a file a newer module dropped does not linger.
        for pattern in MODULE_FILES:
            for old in self.workdir.glob(pattern):
                old.unlink()
        for pattern in MODULE_FILES:
            for new in self.source.glob(pattern):
                shutil.copyfile(new, self.workdir / new.name)

    def _run_json(self, arguments: Sequence[str], run: _JsonRun) -> None:
        run.exit_code, stderr = self._run(arguments, run.read)
        if run.exit_code != 0 and not run.errors:
            run.errors.append(_one_line(stderr) or _one_line("\n".join(run.other_lines[-20:])) or f"exit code {run.exit_code}")

    def _raise_for(self, run: _JsonRun, command: str) -> None:
        if run.errors:
            raise TerraformError(f"terraform {command} failed in {self.workdir}: {'; '.join(run.errors)}")

    def _run(self, arguments: Sequence[str], read_line: Callable[[str], None]) -> tuple[int, str]:
        """Run terraform in the working directory, each stdout line to ``read_line``; the exit code and stderr."""
        binary = shutil.which("terraform")
        if binary is None:
            raise TerraformError(f"terraform not found on PATH; {INSTALL_HINT}, or put it on PATH, and run again")
        self.workdir.mkdir(parents=True, exist_ok=True)
        # No update check on every command, no prompts, no "now run terraform X" advice meant for people.
        environment = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
        # stderr goes to a file: a full stderr pipe would stall terraform while stdout is being read.
        with tempfile.TemporaryFile() as stderr:
            process = subprocess.Popen(
                [binary, *arguments],
                cwd=self.workdir,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
            assert process.stdout is not None
            try:
                for line in process.stdout:
                    read_line(line.rstrip("\n"))
            except BaseException:
                # On Ctrl-C terraform got the same signal and is stopping cleanly, saving its state; a
                # second signal would make it quit mid-write. So let it finish, then pass the interrupt on.
                process.communicate()
                raise
            exit_code = process.wait()
            stderr.seek(0)
            return exit_code, stderr.read().decode("utf-8", "replace")


def _var_arguments(variables: Mapping[str, str]) -> list[str]:
    """``-var`` arguments: Terraform parses each value as it would one typed on its command line."""
    return [f"-var={name}={value}" for name, value in sorted(variables.items())]


def _write_json(path: Path, value: Any) -> None:
    """Replace ``path`` whole, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    partial.replace(path)
