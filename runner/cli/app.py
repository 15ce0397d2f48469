"""The ``spotrun`` command line: thin commands over the store, the controller and the checkpoint store.

Known errors become one line on stderr and an exit code (0 ok, 1 a known failure, 2 bad input,
130 Ctrl-C, and 128 + the signal when SIGTERM or SIGHUP stops a controller as Ctrl-C would); ``SPOTRUN_DEBUG=1`` shows
the traceback instead.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from checkpoints.durations import format_duration, parse_duration
from cloud.provider import NODE_ENV, RENDEZVOUS_ENV, TAG_ATTEMPT, TAG_URL
from runner.cli.commands import command_for
from runner.errors import JobStateError, SpecError
from runner.state.infra_outputs import stored_infra_outputs
from runner.state.paths import infra_outputs_file, spotrun_home

# Every command, and the agent on every instance, starts by importing this module, so it imports
# only what all of them need; the rest is imported inside the commands that use it. Together,
# boto3 (AWS), numpy (simulate), the spec's pydantic models, fsspec and aiohttp (checkpoints),
# SQLAlchemy and Alembic (the store) took a second to import, longer than most commands then run.
if TYPE_CHECKING:
    from rich.live import Live
    from typer._click import Command, Context  # typer vendors click: the types its TyperGroup is declared with

    from cloud.aws import AwsProvider
    from runner.control.jobs import Note
    from runner.state.store import StateStore

# Commands defined in other modules, imported when one of them runs (or `--help` lists them):
# name -> (module, attribute), a command function or a Typer app of subcommands.
_ELSEWHERE = {
    "cost": ("runner.cli.cost", "cost"),
    "simulate": ("runner.cli.simulate", "simulate"),
    "infra": ("runner.cli.infra", "infra_app"),
    "db": ("runner.cli.db", "db_app"),
}


class _SpotrunCommands(TyperGroup):
    """spotrun's commands: those named in _ELSEWHERE are built from their modules when first asked for."""

    def list_commands(self, ctx: Context) -> list[str]:
        return [*super().list_commands(ctx), *(name for name in _ELSEWHERE if name not in self.commands)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        if cmd_name in _ELSEWHERE and cmd_name not in self.commands:
            self.add_command(_command_from_elsewhere(cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: Context, args: list[str]) -> tuple[str | None, Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in _ELSEWHERE:  # a typo: suggest from every command
            for name in _ELSEWHERE:
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)


def _command_from_elsewhere(name: str) -> Command:
    module, attribute = _ELSEWHERE[name]
    found = getattr(importlib.import_module(module), attribute)
    built: Command
    if isinstance(found, typer.Typer):
        built = typer.main.get_group(found)
    else:  # a command function, registered like this module's own
        single = typer.Typer(add_completion=False)
        command_for(single)(found)
        built = typer.main.get_command(single)
    built.name = name
    return built


app = typer.Typer(
    cls=_SpotrunCommands,
    help="Train PyTorch Lightning models on spot instances without losing work, and know what each run cost.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]


def _json_text(value: Any) -> str:
    """``value`` as strict JSON for scripts: NaN and infinities (a diverged loss, say) become null, since JSON has no such
    numbers and strict parsers (``jq``, JavaScript) refuse the ``NaN`` that Python's json writes."""

    def finite(item: Any) -> Any:
        if isinstance(item, float):
            return item if math.isfinite(item) else None
        if isinstance(item, dict):
            return {key: finite(inner) for key, inner in item.items()}
        if isinstance(item, (list, tuple)):
            return [finite(inner) for inner in item]
        return item

    return json.dumps(finite(value), allow_nan=False)


JobArgument = Annotated[str, typer.Argument(help="Job name (the spec's `name`).")]
_FOLLOW_INTERVAL_S = 1.0
command = command_for(app)


def _store() -> StateStore:
    from runner.state.store import open_store
    from runner.state.user_config import current_user

    home = spotrun_home()
    return open_store(home, actor=current_user(home))


ForceOption = Annotated[bool, typer.Option("--force", help="Go ahead even when the forecast cost to finish exceeds the budget.")]


@command
def run(
    spec_file: Annotated[Path, typer.Argument(help="Job spec (YAML).")],
    detach: Annotated[bool, typer.Option("--detach", help="Return at once; a background controller drives the job.")] = False,
    force: ForceOption = False,
) -> None:
    """Submit a job and drive it to the end: provision, train, survive preemptions, stay within the budget."""
    store, name = _submit(spec_file, force=force)
    _drive_or_detach(store, name, detach)


@command
def submit(spec_file: Annotated[Path, typer.Argument(help="Job spec (YAML).")], force: ForceOption = False) -> None:
    """Record a job for a running `spotrun controller` to drive (a team's shared store); nothing runs here."""
    _, name = _submit(spec_file, force=force)
    out.print(f"job {name} submitted; `spotrun controller` (running anywhere on this store) picks it up on its next cycle", soft_wrap=True)


def _submit(spec_file: Path, *, force: bool) -> tuple[StateStore, str]:
    """Check the spec, submit the job, and say what the submission found.

    The spec is checked before the store is opened: a bad spec writes nothing, not even a new store.
    """
    from runner.control import jobs as job_requests
    from runner.spec.job_spec import load_spec
    from runner.state.user_config import current_user

    spec = load_spec(spec_file)
    submitted = job_requests.submit(
        spec, spec_path=spec_file, open_store=_store, home=spotrun_home(), launched_by=current_user(spotrun_home()), force=force
    )
    _print_notes(submitted.notes)
    if submitted.resumes_from_step is not None:
        url = submitted.job.checkpoint_url
        err.print(f"[yellow]{url} already holds checkpoints (newest: step {submitted.resumes_from_step}); the job resumes from them[/]")
    return submitted.store, submitted.job.name


@command
def resume(
    job: JobArgument,
    detach: Annotated[bool, typer.Option("--detach", help="Return at once; a background controller drives the job.")] = False,
    budget: Annotated[
        float | None, typer.Option("--budget", help="New total budget in USD (budget.max_usd), e.g. after BUDGET_EXHAUSTED.")
    ] = None,
    force: ForceOption = False,
) -> None:
    """Drive an unfinished job again: after its controller stopped or was killed, or with more budget."""
    from runner.control import jobs as job_requests

    if budget is not None:
        job_requests.checked_budget(budget)  # before the store is opened: a bad --budget writes nothing
    store = _store()
    resumed = job_requests.resume(store, job, home=spotrun_home(), budget=budget, force=force)
    _print_notes(resumed.notes)
    if resumed.should_drive:
        _drive_or_detach(store, job, detach)


def _print_notes(notes: Sequence[Note]) -> None:
    """Notes with the results on stdout, warnings on stderr; their text quotes figures and names, never markup."""
    from runner.control.jobs import NoteLevel

    for note in notes:
        if note.level is NoteLevel.INFO:
            out.print(note.text, highlight=False, soft_wrap=True)
        else:
            err.print(note.text, markup=False, soft_wrap=True)


def _drive_or_detach(store: StateStore, name: str, detach: bool) -> None:
    if detach:
        log_file = spotrun_home() / "controllers" / f"{name}.log"
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(log_file, "ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "runner", "resume", name],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        out.print(f"job {name} submitted; controller pid {process.pid} (log: {log_file})")
        out.print(f"follow it with `spotrun status {name}` or `spotrun logs {name} --follow`")
        return
    _drive(store, name)


def _drive(store: StateStore, name: str) -> None:
    from rich.live import Live
    from rich.spinner import Spinner
    from rich.text import Text

    from checkpoints.store import CheckpointStore
    from runner.cli import views
    from runner.cli.summaries import job_summary
    from runner.control.controller import Controller
    from runner.control.providers import agent_command, controller_settings, provider_for
    from runner.state.store import JobState

    job = store.job(name)
    spec = job.spec
    controller = Controller(
        store, provider_for(spec, spotrun_home(), store), agent_command=agent_command, settings=controller_settings(spec)
    )
    seen_event = 0
    last_plain_line = 0.0
    followed: str | None = None

    def render(live: Live | None, current: Any) -> None:
        nonlocal seen_event, last_plain_line, followed
        if current.lease_owner not in (None, controller.owner) and current.lease_owner != followed:
            followed = current.lease_owner  # a team's service, or a `spotrun run` elsewhere: watch until it stops
            line = f"job {name} is driven by controller {followed}; following it (this one takes over if that one stops)"
            (live.console if live else err).print(line, markup=False, highlight=False, soft_wrap=True)
        for event_id, event in store.events(name, after_id=seen_event):
            seen_event = event_id
            line = f"{time.strftime('%H:%M:%S', time.localtime(event.time))}  {event.message}"
            (live.console if live else out).print(line, highlight=False, soft_wrap=True)
        summary = job_summary(current, store.attempts(name), store.intervals(name))
        if live is not None:
            live.update(Spinner("dots", text=Text(views.status_line(summary))))
        elif time.monotonic() - last_plain_line > 10:
            last_plain_line = time.monotonic()
            out.print(views.status_line(summary), highlight=False, soft_wrap=True)

    def shown(run: Callable[[Callable[[Any], None]], Any]) -> Any:
        """``run(on_cycle)`` with every cycle rendered: a live line on a terminal, plain lines otherwise."""
        if not out.is_terminal:
            return run(lambda job: render(None, job))
        with Live("", console=out, refresh_per_second=4, transient=True) as live:
            return run(lambda job: render(live, job))

    received: list[signal.Signals] = []
    try:
        with _interrupting(received):
            final = shown(lambda on_cycle: controller.drive(name, on_cycle=on_cycle))
    except KeyboardInterrupt:
        stopped_by = received[0] if received else signal.SIGINT
        err.print(
            f"controller stopped ({stopped_by.name}); job {name}'s instance keeps running. "
            f"`spotrun resume {name}` picks it up again, `spotrun cancel {name}` stops it.",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(128 + stopped_by) from None
    summary = job_summary(final, store.attempts(name), store.intervals(name))
    for line in views.final_report(summary, store.attempts(name), CheckpointStore(final.checkpoint_url)):
        out.print(line, highlight=False, soft_wrap=True)
    if final.state is not JobState.SUCCEEDED:
        raise typer.Exit(1)


_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _interrupting(received: list[signal.Signals]) -> Iterator[None]:
    """SIGTERM and SIGHUP stop a foreground controller as Ctrl-C does: a KeyboardInterrupt, the signal noted in ``received``.

    Their default is to end the process on the spot, and the job's lease then blocks every other
    controller until it lapses (without a word to the user). As a KeyboardInterrupt they unwind
    through ``Controller.drive``, which releases the lease. Once one has come, more are ignored:
    the release must not be cut short.
    """

    def interrupt(signum: int, frame: object) -> None:
        for each in _STOP_SIGNALS:
            signal.signal(each, signal.SIG_IGN)
        received.append(signal.Signals(signum))
        raise KeyboardInterrupt

    previous = {each: signal.signal(each, interrupt) for each in _STOP_SIGNALS}
    try:
        yield
    finally:
        for each, handler in previous.items():
            signal.signal(each, handler)


AllUsersOption = Annotated[bool, typer.Option("--all-users", help="Everyone's jobs in a shared store, not only yours.")]


@command
def status(
    job: Annotated[str | None, typer.Argument(help="Job name; your jobs when left out.")] = None,
    as_json: JsonOption = False,
    all_users: AllUsersOption = False,
) -> None:
    """State, progress, spend and preemptions of one job (or of your jobs)."""
    from checkpoints.errors import CheckpointError
    from runner.cli import views
    from runner.cli.summaries import job_summary, node_summaries
    from runner.instance.mailbox import Mailbox
    from runner.instance.protocol import JobChannel

    store = _store()
    if job is None:
        jobs(as_json=as_json, all_users=all_users)
        return
    found = store.job(job)
    attempts = store.attempts(job)
    intervals = store.intervals(job)
    summary = job_summary(found, attempts, intervals)
    try:
        nodes = node_summaries(intervals, JobChannel(Mailbox.at(found.checkpoint_url), found.name, found.key_bytes)) if attempts else []
    except CheckpointError as error:  # the checkpoint URL became unreachable: what the store knows is still worth showing
        err.print(f"warning: no heartbeats, {error}", markup=False, highlight=False, soft_wrap=True)
        nodes = []
    if as_json:
        print(_json_text({**summary.to_json(), "nodes": [node.to_json() for node in nodes]}))
        return
    out.print(views.status_line(summary), highlight=False, soft_wrap=True)
    if summary.message:
        out.print(f"  {summary.message}", highlight=False)
    if not found.state.is_final:
        lease = store.lease(job)
        driver = (
            f"controller {lease.owner} (lease {lease.expires_in_s:.0f}s left)"
            if lease
            else f"no controller; `spotrun resume {job}` drives it"
        )
        out.print(f"  driven by: {driver}", highlight=False, soft_wrap=True)
    if attempts:
        out.print(views.attempts_table(attempts))
    if len(nodes) > 1:
        out.print(views.nodes_table(nodes))


@command
def jobs(as_json: JsonOption = False, all_users: AllUsersOption = False) -> None:
    """Your jobs in the state store (everyone's with --all-users), newest first."""
    from runner.cli import views
    from runner.cli.summaries import job_summary
    from runner.state.user_config import current_user

    store = _store()
    user = None if all_users else current_user(spotrun_home())
    attempts, intervals = defaultdict(list), defaultdict(list)  # every job's, read once: a team's store holds thousands
    for attempt in store.attempts(None):
        attempts[attempt.job].append(attempt)
    for interval in store.intervals(None):
        intervals[interval.job].append(interval)
    summaries = [job_summary(job, attempts[job.name], intervals[job.name]) for job in store.jobs(launched_by=user)]
    if as_json:
        print(_json_text([summary.to_json() for summary in summaries]))
    elif summaries:
        out.print(views.jobs_table(summaries, show_user=all_users))
    elif user is not None and store.jobs():
        out.print(f"no jobs launched by {user}; `spotrun jobs --all-users` lists everyone's")
    else:
        out.print("no jobs yet: `spotrun run JOB.yaml` submits one")


@command
def logs(
    job: JobArgument,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new output until the job ends.")] = False,
    attempt: Annotated[int | None, typer.Option(help="Only this attempt.")] = None,
    node: Annotated[int, typer.Option("--node", help="Which node of a multi-node job (its rank).")] = 0,
) -> None:
    """Every attempt's agent and training output, in order, attempt boundaries marked."""
    from checkpoints.errors import CheckpointError
    from checkpoints.retry import STORAGE_ERRORS
    from checkpoints.store import CheckpointStore
    from runner.cli.logs import print_logs

    store = _store()
    found = store.job(job)
    try:
        print_logs(
            CheckpointStore(found.checkpoint_url),
            out,
            only_attempt=attempt,
            node=node,
            keep_following=(lambda: not store.job(job).state.is_final) if follow else None,
            interval_s=_FOLLOW_INTERVAL_S,
        )
    except STORAGE_ERRORS as error:  # logs are read from the checkpoint URL, which may have become unreachable
        raise CheckpointError(f"cannot read the logs of job {job!r} at {found.checkpoint_url}: {' '.join(repr(error).split())}") from None


@command
def cancel(job: JobArgument) -> None:
    """Stop a job for good: its instance is terminated and it ends CANCELLED."""
    from runner.control import jobs as job_requests

    after = job_requests.cancel(_store(), job, home=spotrun_home())
    if not after.state.is_final:
        out.print(f"job {job} is driven by controller {after.lease_owner}; it terminates the instance on its next cycle", soft_wrap=True)
        return
    out.print(f"job {job}: {after.state.value}")


@command
def checkpoints(job: JobArgument, as_json: JsonOption = False) -> None:
    """Committed checkpoints of a job, newest first."""
    from checkpoints.store import CheckpointStore

    found = _store().job(job)
    infos = CheckpointStore(found.checkpoint_url, key=found.key_bytes).list()  # a forged manifest is not listed
    if as_json:
        print(_json_text([info.to_json() for info in infos]))  # manifests from older spotruns hold NaN losses
        return
    if not infos:
        out.print(f"no committed checkpoint at {found.checkpoint_url} yet")
        return
    table = Table(title=f"checkpoints of {job}")
    for column in ("step", "epoch", "time", "size", "reason", "url"):
        table.add_column(column)
    for info in infos:
        table.add_row(
            str(info.step),
            str(info.epoch),
            time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.time)),
            f"{info.size_bytes / 1e6:.2f} MB",
            info.reason + (" (final)" if info.final else ""),
            info.url,
        )
    out.print(table)


@command
def interrupt(
    job: JobArgument,
    notice: Annotated[str | None, typer.Option(help="Notice before the kill, e.g. 10s (default: the spec's local.notice).")] = None,
    no_notice: Annotated[bool, typer.Option("--no-notice", help="Kill at once, like a crashed host.")] = False,
    node: Annotated[int, typer.Option("--node", help="Which node of a multi-node job (its rank).")] = 0,
) -> None:
    """Inject a spot interruption into a job on the local provider, to prove it survives one."""
    from runner.control.providers import provider_for

    store = _store()
    found = store.job(job)
    spec = found.spec
    provider = provider_for(spec, spotrun_home(), store)
    # A property of the provider, not of the job's state: a real cloud takes instances back when it likes.
    interruptible = provider.interruptible()
    if interruptible is None:
        raise SpecError(f"interrupt works on the local provider only; job {job!r} runs on {provider.name!r}")
    running = [attempt for attempt in store.attempts(job) if attempt.is_open and attempt.instance_id]
    if not running:
        raise JobStateError(f"job {job!r} has no running instance to interrupt ({found.state.value})")
    nodes = {row.node: row.instance_id for row in store.intervals(job) if row.attempt == running[-1].number and row.end is None}
    if node not in nodes:
        raise SpecError(f"--node: job {job!r} has no running node {node} (running: {sorted(nodes)})")
    instance_id = nodes[node]
    if no_notice:
        interruptible.kill_without_notice(instance_id)
        out.print(f"killed instance {instance_id} of {job} without notice")
    else:
        notice_s = parse_duration(notice) if notice is not None else None
        interruptible.interrupt(instance_id, notice_s)
        out.print(f"interruption notice served to instance {instance_id} of {job}")


@dataclasses.dataclass(frozen=True)
class _PriceRow:
    """One line of `spotrun prices`: an instance type's spot price in one zone against its on-demand price."""

    instance_type: str
    zone: str
    spot_usd_per_hour: float
    on_demand_usd_per_hour: float

    @property
    def discount_pct(self) -> float | None:
        """How much cheaper spot is, in percent (one decimal); None without an on-demand price."""
        return round(100 * (1 - self.spot_usd_per_hour / self.on_demand_usd_per_hour), 1) if self.on_demand_usd_per_hour else None


@command
def prices(
    instance_types: Annotated[str, typer.Option("--instance-types", help="Comma-separated EC2 instance types, e.g. g5.xlarge,g6.xlarge.")],
    region: Annotated[str | None, typer.Option(help="AWS region; default: the infra's region, else AWS_DEFAULT_REGION.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Spot price per zone, the on-demand price and the discount, for each instance type."""
    types = [name.strip() for name in instance_types.split(",") if name.strip()]
    if not types:
        raise SpecError("--instance-types: expected a comma-separated list such as g5.xlarge,g6.xlarge")
    provider = _aws_provider(region)
    rows = [
        _PriceRow(instance_type, zone, spot, provider.on_demand_price(instance_type))
        for (instance_type, zone), spot in sorted(provider.spot_prices(types).items())
    ]
    if as_json:
        print(json.dumps([{**dataclasses.asdict(row), "discount_pct": row.discount_pct} for row in rows]))
        return
    table = Table(title=f"EC2 prices in {provider.settings.region} (Linux, USD/h)")
    for column in ("instance type", "zone", "spot", "on-demand", "discount"):
        table.add_column(column, justify="right" if column in ("spot", "on-demand", "discount") else "left")
    for row in rows:
        discount = "" if row.discount_pct is None else f"{row.discount_pct:.0f}%"
        table.add_row(row.instance_type, row.zone, f"{row.spot_usd_per_hour:.4f}", f"{row.on_demand_usd_per_hour:.4f}", discount)
    out.print(table)


@command
def gc(
    yes: Annotated[bool, typer.Option("--yes", help="Terminate what is listed (without it, only list).")] = False,
    all_stores: Annotated[
        bool, typer.Option("--all", help="Also instances launched from other state stores (safe with a shared team store).")
    ] = False,
    region: Annotated[str | None, typer.Option(help="AWS region; default: the infra's region, else AWS_DEFAULT_REGION.")] = None,
    as_json: JsonOption = False,
) -> None:
    """Find spotrun instances that cost money for nothing (no live job needs them) and terminate them with --yes."""
    from runner.control.gc import find_orphans

    store = _store()
    provider = _aws_provider(region, store.store_id())
    found = find_orphans(provider, store, all_stores=all_stores)
    if yes and found:
        provider.terminate([instance.instance_id for instance in found])
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "instance_id": i.instance_id,
                        "state": i.state,
                        "instance_type": i.instance_type,
                        "zone": i.zone,
                        "job": i.job,
                        "store": i.store,
                        "launched_at": i.launched_at,
                        "terminated": yes,
                    }
                    for i in found
                ]
            )
        )
        return
    if not found:
        out.print("no orphaned spotrun instances" + ("" if all_stores else " from this state store (--all looks at every store's)"))
        return
    table = Table(title="terminated" if yes else "orphaned spotrun instances (run with --yes to terminate)")
    for column in ("instance", "state", "type", "zone", "job", "store", "running for"):
        table.add_column(column)
    for i in found:
        table.add_row(
            i.instance_id, i.state, i.instance_type, i.zone, i.job or "", i.store or "", format_duration(time.time() - i.launched_at)
        )
    out.print(table)


def _aws_provider(region: str | None, store_id: str = "") -> AwsProvider:
    """A provider for looking and cleaning up; it needs no launch template."""
    from cloud.aws import AwsProvider, AwsSettings

    infra_region = stored_infra_outputs(spotrun_home()).get("region") if infra_outputs_file(spotrun_home()).exists() else None
    chosen = region or infra_region or os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if not chosen:
        raise SpecError("--region: no region given, none in the infra outputs and AWS_DEFAULT_REGION is not set")
    return AwsProvider(AwsSettings(region=chosen, store_id=store_id))


@command
def agent(
    checkpoint_url: Annotated[str | None, typer.Option(help="The job's checkpoint URL (holds _spotrun/job.json).")] = None,
    attempt: Annotated[int | None, typer.Option(help="Attempt number of this instance.")] = None,
    node: Annotated[int, typer.Option(envvar=NODE_ENV, help="Rank of this instance in its gang (0 for a single instance).")] = 0,
    rendezvous: Annotated[str | None, typer.Option(envvar=RENDEZVOUS_ENV, help="A gang's rank 0 private address:port.")] = None,
    from_instance_tags: Annotated[
        bool, typer.Option(help=f"Read the checkpoint URL and attempt from this instance's tags ({TAG_URL}, {TAG_ATTEMPT}) in metadata.")
    ] = False,
    metadata_endpoint: Annotated[
        str, typer.Option(envvar="SPOTRUN_IMDS_ENDPOINT", help="Instance metadata service.")
    ] = "http://169.254.169.254",
    poll_interval: Annotated[float, typer.Option(help="Seconds between metadata polls.")] = 5.0,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between heartbeats.")] = 5.0,
) -> None:
    """Run on an instance: train, watch for the interruption notice, report through object storage."""
    from runner.instance import bootstrap

    options = bootstrap.AgentOptions(
        checkpoint_url=checkpoint_url,
        attempt=attempt,
        node=node,
        rendezvous=rendezvous,
        from_instance_tags=from_instance_tags,
        metadata_endpoint=metadata_endpoint,
        poll_interval_s=poll_interval,
        heartbeat_interval_s=heartbeat_interval,
    )
    raise typer.Exit(bootstrap.run_agent(bootstrap.agent_settings(options, os.environ)))


@command
def controller(
    once: Annotated[bool, typer.Option("--once", help="One cycle over every live job, then exit (e.g. from cron).")] = False,
) -> None:
    """Drive every live job in the state store, adopting those whose controller died: what a team runs on one always-on machine."""
    from runner.control.service import ControllerService
    from runner.state.database import shown_url

    store = _store()
    service = ControllerService(store, spotrun_home(), report=lambda line: out.print(line, highlight=False, soft_wrap=True))
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    out.print(f"controller {service.owner} driving the live jobs of {shown_url(store.engine.url)}", highlight=False, soft_wrap=True)
    try:
        service.run(once=once)
    except KeyboardInterrupt:
        err.print("controller stopped; its jobs' instances keep running, and another controller adopts them", markup=False)
        raise typer.Exit(130) from None


def main() -> None:
    """Console entry point."""
    app()
