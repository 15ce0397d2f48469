"""`spotrun infra`: help, the one-line errors, and up/show/down on a stand-in module."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import typer
from click.testing import Result
from typer.testing import CliRunner

import runner.cli.infra
from cloud.running_wheel import sha256_of
from cloud.terraform import REQUIRED_OUTPUTS, VARIABLES_FILE, WHEEL_DIR, WHEEL_VARIABLE
from runner.cli.infra import infra_app
from runner.control.providers import aws_settings

from .conftest import needs_terraform


def _spotrun(*args: str) -> Result:
    """Run `spotrun infra ...` as cli.py will mount it: app.add_typer(infra_app, name="infra")."""
    app = typer.Typer()
    app.add_typer(infra_app, name="infra")
    return CliRunner().invoke(app, ["infra", *args])


def test_up_has_help() -> None:
    result = _spotrun("up", "--help")

    assert result.exit_code == 0, result.output
    assert "--var" in result.stdout and "--json" in result.stdout


def test_show_without_outputs_is_one_line_error(spotrun_home: Path) -> None:
    result = _spotrun("show", "--json")

    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"error: no infrastructure outputs at {spotrun_home / 'infra' / 'outputs.json'}; run `spotrun infra up` first"
    ]


def test_a_malformed_var_is_bad_input(spotrun_home: Path) -> None:
    result = _spotrun("up", "--var", "region")

    assert result.exit_code == 2
    assert result.stderr.strip() == "error: --var 'region': expected KEY=VALUE, e.g. --var region=eu-west-1"


def test_down_with_nothing_applied_says_so(spotrun_home: Path) -> None:
    result = _spotrun("down", "--yes")

    assert result.exit_code == 2
    assert "nothing to destroy" in result.stderr


@needs_terraform
def test_up_show_down_on_a_stand_in_module(spotrun_home: Path, terraform_config: Path, stand_in_module: Path) -> None:
    up = _spotrun("up", "--module", str(stand_in_module), "--var", "greeting=team", "--json")

    assert up.exit_code == 0, up.output
    outputs = json.loads(up.stdout)
    assert set(REQUIRED_OUTPUTS) <= outputs.keys()
    assert outputs["bucket_name"] == "spotrun-checkpoints-team"
    assert outputs["region"] == "us-east-1"  # pinned from AWS_DEFAULT_REGION
    assert re.search(r"terraform_data\.infra: Creation complete after \d+s \[id=", up.stderr)  # brackets are not taken for markup
    assert json.loads((spotrun_home / "infra" / "outputs.json").read_text()) == outputs
    settings = aws_settings(spotrun_home, store_id="store-1")  # what `spotrun run` launches from
    assert (settings.region, settings.launch_template_id, settings.subnet_ids) == (
        "us-east-1",
        "lt-0123456789abcdef0",
        ("subnet-0a", "subnet-0b"),
    )
    # The module was given a wheel of the spotrun running this test, built for the instances to install.
    [wheel] = (spotrun_home / "infra" / "terraform" / WHEEL_DIR).glob("*.whl")
    assert outputs["spotrun_wheel_sha256"] == sha256_of(wheel)
    assert json.loads((wheel.parent.parent / VARIABLES_FILE).read_text())[WHEEL_VARIABLE] == str(wheel)  # kept for `down`
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("runner/cli/infra.py") == Path(runner.cli.infra.__file__).read_bytes()

    again = _spotrun("up", "--module", str(stand_in_module))
    assert again.exit_code == 0, again.output
    assert "Apply complete! Resources: 0 added, 0 changed, 0 destroyed." in again.stderr
    assert "checkpoint.url s3://spotrun-checkpoints-team/JOB-NAME" in again.stdout

    show = _spotrun("show", "--json")
    assert show.exit_code == 0 and json.loads(show.stdout) == outputs
    table = _spotrun("show")
    assert "spotrun-checkpoints-team" in table.stdout and "region=us-east-1" in table.stdout

    moved = _spotrun("up", "--module", str(stand_in_module), "--var", "region=eu-west-1")
    assert moved.exit_code == 2
    assert "the infrastructure is in us-east-1; `spotrun infra down` before moving it" in moved.stderr

    wheel.unlink()  # the module needs its wheel even to be destroyed: `down` builds it again
    down = _spotrun("down", "--yes")
    assert down.exit_code == 0, down.output
    assert "terraform_data.infra: Destruction complete" in down.stderr
    assert not (spotrun_home / "infra" / "outputs.json").exists()
    assert _spotrun("show", "--json").exit_code == 2
