"""Fixtures for the Terraform module, its wrapper and `spotrun infra`: a real terraform binary, offline.

Modules here use only Terraform's built-in `terraform_data` resource, so `init` downloads nothing.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cloud.terraform import REQUIRED_OUTPUTS

needs_terraform = pytest.mark.skipif(
    shutil.which("terraform") is None, reason="no terraform binary on PATH; install Terraform >= 1.5 to run these"
)

# The interface of spotrun's module (a region variable, every required output) on built-in resources only.
_OUTPUTS = "\n".join(f'output "{name}" {{\n  value = terraform_data.infra.output["{name}"]\n}}\n' for name in REQUIRED_OUTPUTS)
STAND_IN_MODULE = f"""
variable "region" {{
  type    = string
  default = null
}}

variable "greeting" {{
  type    = string
  default = "hello"
}}

# What `spotrun infra up` passes: the wheel instances install (checked to exist, as spotrun's module
# does, even to destroy; this module only reports its digest).
variable "spotrun_wheel" {{
  type    = string
  default = null

  validation {{
    condition     = var.spotrun_wheel == null ? true : fileexists(var.spotrun_wheel)
    error_message = "spotrun_wheel names no file."
  }}
}}

resource "terraform_data" "infra" {{
  input = {{
    bucket_name           = "spotrun-checkpoints-${{var.greeting}}"
    checkpoint_url_prefix = "s3://spotrun-checkpoints-${{var.greeting}}"
    region                = var.region == null ? "us-east-1" : var.region
    launch_template_id    = "lt-0123456789abcdef0"
    launch_template_name  = "spotrun-agent"
    instance_profile_arn  = "arn:aws:iam::123456789012:instance-profile/spotrun-agent-1"
    security_group_id     = "sg-0123456789abcdef0"
    subnet_ids            = ["subnet-0a", "subnet-0b"]
  }}
}}

{_OUTPUTS}
output "greeting" {{
  value = var.greeting
}}

output "spotrun_wheel_sha256" {{
  value = var.spotrun_wheel == null ? null : filesha256(var.spotrun_wheel)
}}
"""


def write_module(directory: Path, text: str, name: str = "main.tf") -> Path:
    """A module directory holding ``text`` as one file."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


@pytest.fixture
def terraform_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty CLI config file for terraform, so nothing from this machine's ~/.terraformrc applies."""
    config = tmp_path / "terraformrc"
    config.write_text("")
    monkeypatch.setenv("TF_CLI_CONFIG_FILE", str(config))
    return config


@pytest.fixture
def stand_in_module(tmp_path: Path) -> Path:
    """A module with the interface of spotrun's own, made of built-in resources only."""
    return write_module(tmp_path / "stand-in-module", STAND_IN_MODULE)
