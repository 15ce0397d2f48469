"""The terraform wrapper against a real terraform binary, with modules of built-in resources only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloud.errors import TerraformError
from cloud.terraform import REQUIRED_OUTPUTS, VARIABLES_FILE, TerraformModule

from .conftest import needs_terraform, write_module


def _module(tmp_path: Path, source: Path, **kwargs: object) -> TerraformModule:
    return TerraformModule(tmp_path / "home" / "infra" / "terraform", tmp_path / "home" / "infra" / "outputs.json", source=source, **kwargs)


@needs_terraform
def test_init_apply_outputs_destroy_round_trip(tmp_path: Path, terraform_config: Path, stand_in_module: Path) -> None:
    terraform = _module(tmp_path, stand_in_module, required_outputs=REQUIRED_OUTPUTS)
    messages: list[str] = []

    terraform.init(messages.append)
    outputs = terraform.apply({"greeting": "hi", "region": "eu-west-1"}, messages.append)

    assert any("Initializing" in message for message in messages)
    assert any(message.startswith("terraform_data.infra: Creation complete") for message in messages)
    assert any(message.startswith("Apply complete! Resources: 1 added") for message in messages)
    assert outputs["bucket_name"] == "spotrun-checkpoints-hi"
    assert outputs["region"] == "eu-west-1"
    assert outputs["subnet_ids"] == ["subnet-0a", "subnet-0b"]
    assert json.loads(terraform.outputs_file.read_text()) == outputs == terraform.outputs()
    assert (terraform.workdir / "main.tf").exists() and (terraform.workdir / "terraform.tfstate").exists()

    # Variables given once stay: a later apply without them changes nothing.
    messages.clear()
    assert terraform.apply(progress=messages.append) == outputs
    assert terraform.variables() == {"greeting": "hi", "region": "eu-west-1"}
    assert any(message.startswith("Apply complete! Resources: 0 added, 0 changed") for message in messages)

    messages.clear()
    terraform.destroy(messages.append)
    assert any(message.startswith("terraform_data.infra: Destruction complete") for message in messages)
    assert not terraform.outputs_file.exists()
    assert terraform.outputs() == {}


@needs_terraform
def test_a_failing_apply_carries_terraforms_message(tmp_path: Path, terraform_config: Path) -> None:
    source = write_module(
        tmp_path / "refusing",
        """
variable "allowed" {
  type    = bool
  default = false
}

resource "terraform_data" "guarded" {
  lifecycle {
    precondition {
      condition     = var.allowed
      error_message = "The guarded resource needs allowed = true."
    }
  }
}
""",
    )
    terraform = _module(tmp_path, source)
    terraform.init()

    with pytest.raises(
        TerraformError,
        match=r"terraform apply failed in .*: Resource precondition failed: The guarded resource needs allowed = true\. \(main\.tf:\d+\)",
    ):
        terraform.apply()
    assert not terraform.outputs_file.exists()


@needs_terraform
def test_a_variable_terraform_refuses_is_not_kept(tmp_path: Path, terraform_config: Path, stand_in_module: Path) -> None:
    terraform = _module(tmp_path, stand_in_module)
    terraform.init()

    with pytest.raises(TerraformError, match="Value for undeclared variable"):
        terraform.apply({"no_such_variable": "1"})
    assert not (terraform.workdir / VARIABLES_FILE).exists()


@needs_terraform
def test_a_module_that_does_not_parse_fails_init_with_the_reason(tmp_path: Path, terraform_config: Path) -> None:
    terraform = _module(tmp_path, write_module(tmp_path / "broken", 'resource "terraform_data" "x" {\n'))

    with pytest.raises(TerraformError, match=r"terraform init failed in .*main\.tf"):
        terraform.init()


@needs_terraform
def test_missing_outputs_are_named(tmp_path: Path, terraform_config: Path) -> None:
    source = write_module(tmp_path / "partial", 'output "region" {\n  value = "us-east-1"\n}\n')
    terraform = _module(tmp_path, source, required_outputs=REQUIRED_OUTPUTS)
    terraform.init()

    with pytest.raises(TerraformError, match="has no output bucket_name, checkpoint_url_prefix, .*subnet_ids"):
        terraform.apply()
    assert not terraform.outputs_file.exists()


@needs_terraform
def test_init_replaces_the_old_copy_of_the_module_and_keeps_the_state(
    tmp_path: Path,
    terraform_config: Path,
    stand_in_module: Path,
) -> None:
    (stand_in_module / "extra.tf").write_text('output "extra" {\n  value = 1\n}\n')
    _module(tmp_path, stand_in_module).init()
    first = _module(tmp_path, stand_in_module)
    first.apply()
    assert first.outputs()["extra"] == 1

    (stand_in_module / "extra.tf").unlink()
    second = _module(tmp_path, stand_in_module)
    second.init()

    assert not (second.workdir / "extra.tf").exists()
    assert "extra" not in second.apply()
    assert second.outputs()["greeting"] == "hello"


def test_missing_terraform_binary_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stand_in_module: Path) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    terraform = _module(tmp_path, stand_in_module)

    with pytest.raises(TerraformError, match=r"terraform not found on PATH; install Terraform >= 1\.5"):
        terraform.init()
    with pytest.raises(TerraformError, match="terraform not found on PATH"):
        terraform.outputs()


@needs_terraform
def test_an_interrupt_lets_terraform_finish_writing_its_state(tmp_path: Path, terraform_config: Path, stand_in_module: Path) -> None:
    """Ctrl-C reaches terraform too, which stops cleanly; the wrapper must wait for that, not leave it mid-write."""
    terraform = _module(tmp_path, stand_in_module)
    terraform.init()

    def interrupt(message: str) -> None:
        if message.endswith("Creating..."):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        terraform.apply({"greeting": "hi"}, progress=interrupt)
    assert terraform.outputs()["greeting"] == "hi"  # this terraform got no signal, so it finished the apply
    assert terraform.variables() == {"greeting": "hi"}  # kept: what was created with them is destroyed with them
