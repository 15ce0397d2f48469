"""``spotrun infra``: create, show and destroy the AWS infrastructure jobs launch into (the module in terraform/).

Terraform's progress goes to stderr as it happens; people get a table of the outputs, scripts get
them as JSON on stdout with ``--json``. Known errors become one line and an exit code, as in
``runner.cli.app``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any

import boto3
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from cloud.errors import TerraformError
from cloud.running_wheel import build_running_wheel, sha256_of
from cloud.terraform import MODULE_DIR, REQUIRED_OUTPUTS, WHEEL_DIR, WHEEL_VARIABLE, TerraformModule
from runner.cli.commands import command_for
from runner.errors import SpecError
from runner.state.infra_outputs import stored_infra_outputs
from runner.state.paths import infra_outputs_file, spotrun_home

infra_app = typer.Typer(
    help="The AWS infrastructure jobs launch into: checkpoint bucket, instance role, security group, launch template (Terraform).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the outputs as JSON for scripts instead of a table.")]
VarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--var",
        metavar="KEY=VALUE",
        help="A module variable, repeatable: --var region=eu-west-1. Lists and maps in Terraform syntax: --var 'subnet_ids=[\"subnet-1\"]'. "
        "Kept for later runs (and for `infra down`).",
    ),
]
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)=(.*)", re.DOTALL)


_command = command_for(
    infra_app, on_interrupt="interrupted: Terraform stopped cleanly and saved its state; run the same command again to finish"
)


def parse_variables(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` pairs as given with --var; values stay text, which Terraform parses by the variable's type."""
    variables: dict[str, str] = {}
    for pair in pairs:
        match = _VARIABLE.fullmatch(pair)
        if match is None:
            raise SpecError(f"--var {pair!r}: expected KEY=VALUE, e.g. --var region=eu-west-1")
        variables[match[1]] = match[2]
    return variables


def _terraform(source: Path = MODULE_DIR) -> TerraformModule:
    outputs_file = infra_outputs_file(spotrun_home())
    return TerraformModule(outputs_file.parent / "terraform", outputs_file, source=source, required_outputs=REQUIRED_OUTPUTS)


def _progress(message: str) -> None:
    # Terraform's messages hold brackets ("[id=...]") that rich would take for markup.
    err.print(f"  {message}", style="dim", markup=False, highlight=False, soft_wrap=True)


def _pin_region(terraform: TerraformModule, given: dict[str, str]) -> dict[str, str]:
    """The variables with the region made explicit, so `infra down` acts where `infra up` created, whatever the environment says then."""
    stored = terraform.variables().get("region")
    region = given.get("region") or stored or boto3.session.Session().region_name
    if not region:
        raise SpecError("no AWS region: pass --var region=us-east-1, or set AWS_DEFAULT_REGION")
    if stored and region != stored and terraform.outputs_file.exists():
        raise SpecError(
            f"--var region={region}: the infrastructure is in {stored}; `spotrun infra down` before moving it, "
            f"or set SPOTRUN_HOME to another directory for a second region"
        )
    return {**given, "region": region}


def _running_wheel(terraform: TerraformModule) -> dict[str, str]:
    """The module variable naming the wheel instances install: a wheel of this very spotrun, built now.

    Instances must run what the controller runs, and never what an index serves as "spotrun"
    (terraform/README.md, "Which spotrun an instance runs"). Built in the working directory, the
    wheel stays for `infra down`, which needs the variable's file to exist.
    """
    wheel = build_running_wheel(terraform.workdir / WHEEL_DIR)
    err.print(
        f"instances will install {wheel.name} (sha256 {sha256_of(wheel)}), built from this spotrun",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    return {WHEEL_VARIABLE: str(wheel)}


def _outputs_table(outputs: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    table.add_column("output")
    table.add_column("value", overflow="fold")  # an ARN cut short is no use
    for name, value in sorted(outputs.items()):
        table.add_row(Text(name), Text(", ".join(map(str, value)) if isinstance(value, list) else str(value)))
    return table


@_command
def up(
    variables: VarOption = None,
    module: Annotated[
        Path | None,
        typer.Option(
            exists=True, file_okay=False, help="Apply this module (a customised copy of spotrun's terraform/) instead of the shipped one."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create or update the checkpoint bucket, instance role, security group and launch template, and the spotrun wheel instances install (terraform apply)."""
    terraform = _terraform(module.resolve() if module else MODULE_DIR)
    given = _pin_region(terraform, parse_variables(variables or []))
    if WHEEL_VARIABLE not in given:  # a wheel given with --var is the user's choice
        given = {**given, **_running_wheel(terraform)}
    err.print(
        f"applying {terraform.source} in {given['region']} (state in {terraform.workdir})", markup=False, highlight=False, soft_wrap=True
    )
    terraform.init(_progress)
    outputs = terraform.apply(given, _progress)
    if as_json:
        print(json.dumps(outputs))
        return
    out.print(_outputs_table(outputs, "spotrun infrastructure"))
    out.print(
        f"jobs on it: resources.provider aws, checkpoint.url {outputs['checkpoint_url_prefix']}/JOB-NAME "
        f"(outputs stored in {terraform.outputs_file})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@_command
def down(yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False) -> None:
    """Destroy what `infra up` created (terraform destroy); a bucket that still holds checkpoints stays unless force_destroy=true."""
    terraform = _terraform()
    if not terraform.has_state():
        raise SpecError(f"nothing to destroy: no Terraform state in {terraform.workdir} (`spotrun infra up` creates it)")
    region = terraform.variables().get("region", "its region")
    if not yes:
        typer.confirm(
            f"Destroy the spotrun infrastructure in {region}: launch template, role, security group, and the bucket if it is empty?",
            abort=True,
        )
    stored_wheel = terraform.variables().get(WHEEL_VARIABLE)
    # The module checks that the wheel exists even to destroy: one deleted since `up` is built again.
    replaced = _running_wheel(terraform) if stored_wheel and not Path(stored_wheel).is_file() else {}
    try:
        terraform.destroy(_progress, replaced)
    except TerraformError as error:
        if "BucketNotEmpty" not in str(error):
            raise
        raise TerraformError(
            f"{error}. The bucket still holds checkpoints: empty it (every version), or let Terraform delete them with it: "
            f"`spotrun infra up --var force_destroy=true`, then `spotrun infra down` again"
        ) from error
    out.print(
        f"spotrun infrastructure in {region} destroyed (state kept in {terraform.workdir})", markup=False, highlight=False, soft_wrap=True
    )


@_command
def show(as_json: JsonOption = False) -> None:
    """What `infra up` created, as jobs launch from it: bucket, region, launch template, subnets."""
    outputs = stored_infra_outputs(spotrun_home())
    if as_json:
        print(json.dumps(outputs))
        return
    out.print(_outputs_table(outputs, f"spotrun infrastructure ({escape(str(infra_outputs_file(spotrun_home())))})"))
    variables = _terraform().variables()
    if variables:
        out.print(
            "variables: " + ", ".join(f"{key}={value}" for key, value in sorted(variables.items())),
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
