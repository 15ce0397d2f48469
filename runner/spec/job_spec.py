"""The job spec: one YAML file per job, validated completely before anything is launched.

``load_spec`` reads the YAML and resolves everything that depends on where and when it was
loaded: relative file references become absolute, the working directory is recorded, the
checkpoint URL gets its default and a relative deadline becomes a time. It then imports the model
and data classes to check them. The result is self-contained: on an instance,
``JobSpec.model_validate(spec.model_dump(mode="json"))`` (or ``model_validate_json``) reads it back
without the YAML file, its directory, or the import checks: ``stored_form`` / ``from_stored`` are the one
serialised form everything else (state store, ``job.json``, the train worker) uses.

Durations are written for people (``every: 5m``) and kept in seconds (``checkpoint.every_s``).
Every invalid input becomes one ``SpecError`` line:
``<file>: <dotted.field>: <what was expected>, got <value>``.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
import re
import shlex
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import fsspec
import yaml
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from checkpoints.durations import MAX_DURATION_S, DurationError, parse_duration
from cloud.provider import Market
from runner.errors import SpecError
from runner.spec.loading import is_file_target, load_object, split_ref
from runner.state.paths import spotrun_home

DEFAULT_CHECKPOINT_EVERY_S = 300.0
MAX_BUDGET_USD = 1e9  # beyond any one job: a larger budget is a typo, or a way to switch the limit off (leave max_usd out for that)
MAX_PRICE_USD_PER_HOUR = 1000.0  # the dearest cloud GPU instances cost ~$100/h
MAX_MACHINES = 1024  # instances in a gang, processes, CPUs or GPUs per instance: the local provider starts as many as asked
MAX_INT = 2**63 - 1  # counts reach torch, numpy and SQL integers, which hold no more
MAX_SEED = 2**32 - 1  # numpy's seed range, which lightning's seed_everything enforces (on the instance)
MAX_TAGS = 35  # EC2 allows 50 tags per instance; spotrun's own take up to 15
MAX_SPEC_BYTES = 1 << 20  # a job spec is a few kB; model_args with long lists fit many times over
MAX_YAML_NODES = 100_000  # values in the document with every alias expanded: a "billion laughs" alias bomb stops here
MAX_YAML_DEPTH = 64  # nested lists and mappings, aliases expanded: deeper is not a job spec, and recursion has limits
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_EC2_INSTANCE_TYPE = re.compile(r"^[a-z0-9-]+\.[a-z0-9-]+$")
MarketChoice = Literal["spot", "on-demand", "auto"]  # a market, or "auto": the deadline policy chooses
_URL_EXAMPLES = "e.g. file:///abs/path or s3://bucket/prefix"


class _Problem(ValueError):
    """A failed check with the value to show; ``field`` extends the location pydantic reports."""

    def __init__(self, expected: str, got: str, *field: str | int) -> None:
        super().__init__(f"{expected}, got {got}")
        self.expected = expected
        self.got = got
        self.field = field


def _show(value: Any) -> str:
    """A value as it appears in messages: its repr, shortened to stay on one line."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _seconds(value: Any) -> float:
    """Seconds in a duration as stored (``every_s: 300.0``) or as text with its unit."""
    return _written_seconds(value, written=False)


def _written_seconds(value: Any, *, written: bool = True) -> float:
    """Seconds in a duration; ``written`` by a person in YAML, a bare number is text without its unit (``every: 5``)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    try:
        return parse_duration(str(value) if written and number else value)
    except DurationError as error:
        raise _Problem(error.expected, _show(value)) from None


def check_budget(value: float) -> float:
    """``value`` as a budget in USD, or a ValueError saying what a budget is.

    The one rule for every way a budget enters (``budget.max_usd``, ``spotrun resume --budget``):
    finite, above zero, at most ``MAX_BUDGET_USD``. NaN compares false with everything, so a NaN
    budget once switched enforcement off, and infinity did the same openly.
    """
    if not (math.isfinite(value) and 0 < value <= MAX_BUDGET_USD):
        raise _Problem(f"expected a budget in US dollars above 0 and at most {MAX_BUDGET_USD:,.0f}", _show(value))
    return value


_Seconds = Annotated[float, BeforeValidator(_seconds)]


def _human(name: str) -> AliasChoices:
    """A duration's names: the YAML one people write (``every: 5m``) and the stored one in seconds (``every_s: 300.0``), so dumps read back."""
    return AliasChoices(name, f"{name}_s")


def _written_duration_key(section: type[BaseModel], name: str) -> str | None:
    """The YAML name of field ``name`` if it is a duration (see ``_human``), else None."""
    keys = _keys(section, name)
    return keys[0] if len(keys) == 2 and keys[1] == f"{keys[0]}_s" else None


class _Section(BaseModel):
    """A spec section: exact types, finite numbers, and unknown keys are errors that suggest the closest known key."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)
    _set_by_spotrun: ClassVar[frozenset[str]] = frozenset()  # filled in by load_spec: never suggested as a key

    @model_validator(mode="before")
    @classmethod
    def _no_unknown_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        accepted = {key for name in cls.model_fields for key in _keys(cls, name)}
        for key in data:
            if key not in accepted:
                yaml_keys = sorted(_keys(cls, name)[0] for name in cls.model_fields if name not in cls._set_by_spotrun)
                close = difflib.get_close_matches(str(key), yaml_keys, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise _Problem(f"expected one of the keys {', '.join(yaml_keys)}{hint}", f"unknown key {key!r}", str(key))
        return data

    @model_validator(mode="before")
    @classmethod
    def _durations_with_units(cls, data: Any) -> Any:
        """Durations under their YAML names in seconds: there a bare number is a person's text without its unit."""
        if not isinstance(data, dict):
            return data
        converted = {}
        for name in cls.model_fields:
            key = _written_duration_key(cls, name)
            if key is None or data.get(key) is None:
                continue
            try:
                converted[key] = _written_seconds(data[key])
            except _Problem as problem:
                raise _Problem(problem.expected, problem.got, key) from None
        return {**data, **converted}


def _keys(section: type[BaseModel], name: str) -> list[str]:
    """The keys a field accepts, the one people write in YAML first."""
    alias = section.model_fields[name].validation_alias
    return [str(choice) for choice in alias.choices] if isinstance(alias, AliasChoices) else [name]


def _plain_data(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` if it holds only what JSON holds: the instance receives these arguments as JSON, so a YAML date
    would arrive there as text, and bytes or a set not at all (they stopped the submission with a traceback)."""
    expected = "expected plain data (text, numbers, true/false, null, lists, and mappings with text keys)"

    def check(value: Any, where: tuple[str | int, ...]) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise _Problem(expected, f"the key {_show(key)}", *where)
                check(item, (*where, key))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                check(item, (*where, index))
        elif value is not None and not isinstance(value, (str, int, float)):  # bool is an int
            raise _Problem(expected, _show(value), *where)

    check(data, ())
    return data


_PlainData = Annotated[dict[str, Any], AfterValidator(_plain_data)]


class TrainSpec(_Section):
    """What to train: a LightningModule (with an optional DataModule) by reference, or the user's own command."""

    model: str | None = None
    model_args: _PlainData = {}
    data: str | None = None
    data_args: _PlainData = {}
    trainer: _PlainData = {}
    seed: int | None = Field(None, ge=0, le=MAX_SEED)  # given to seed_everything; 0 in model mode when not set
    command: str | None = None  # a shell command line, run in the job's workdir

    @field_validator("model", "data")
    @classmethod
    def _reference(cls, ref: str | None) -> str | None:
        if ref is not None:
            try:
                split_ref(ref)
            except ValueError as error:
                raise _Problem(str(error), _show(ref)) from None
        return ref

    @field_validator("command")
    @classmethod
    def _command_line(cls, command: str | None) -> str | None:
        if command is None:
            return None
        try:
            words = shlex.split(command)
        except ValueError as error:
            raise _Problem(f"expected a shell command line ({error})", _show(command)) from None
        if not words:
            raise _Problem("expected a command line such as 'python train.py --epochs 5'", _show(command))
        return command

    @model_validator(mode="after")
    def _mode(self, info: ValidationInfo) -> TrainSpec:
        """Exactly one of model or command, nothing that mode ignores, and absolute file references."""
        if (self.model is None) == (self.command is None):
            got = "neither" if self.model is None else "both"
            raise _Problem("expected exactly one of model (a LightningModule class) or command (your own script)", got)
        if self.command is not None:
            for name in ("model_args", "data", "data_args", "trainer", "seed"):
                value = getattr(self, name)
                if value not in (None, {}):
                    raise _Problem(
                        f"expected no {name} with train.command (your script builds its own model and Trainer: "
                        "pass settings as its arguments)",
                        _show(value),
                        name,
                    )
            return self
        if self.data is None and self.data_args:
            raise _Problem("expected no data_args without train.data", _show(self.data_args), "data_args")
        if self.seed is None:
            self.seed = 0
        if info.context is not None:  # loading a YAML file: make file references absolute
            self.model = _absolute_ref(self.model, "model", info.context["workdir"], info.context["spec_dir"])
            self.data = _absolute_ref(self.data, "data", info.context["workdir"], info.context["spec_dir"])
        return self


def _absolute_ref(ref: str | None, field: str, workdir: Path, spec_dir: Path) -> str | None:
    """``ref`` with its file made absolute: relative paths are tried in ``workdir``, then the spec's directory."""
    if ref is None:
        return None
    target, name = split_ref(ref)
    if not is_file_target(target):
        return ref
    path, found = _find_file(target, workdir, spec_dir)
    if found is not None:
        return f"{found.resolve()}:{name}"
    if path.is_absolute():
        raise _Problem("expected an existing Python file", _show(ref), field)
    raise _Problem(
        f"expected an existing Python file relative to the current directory ({workdir}) or to the spec's ({spec_dir})",
        _show(ref),
        field,
    )


def _expand(text: str) -> Path:
    """``text`` as a path with ``~`` expanded, or as written when it cannot be (``~user`` of no such user)."""
    try:
        return Path(text).expanduser()
    except RuntimeError:
        return Path(text)


def _find_file(text: str, workdir: Path, spec_dir: Path) -> tuple[Path, Path | None]:
    """``text`` as a path, and the first existing file it names: itself if absolute, else in ``workdir``, then in ``spec_dir``.

    None when there is none, or when the text cannot name one (too long for the filesystem, a NUL in it).
    """
    path = _expand(text)
    for candidate in [path] if path.is_absolute() else [workdir / path, spec_dir / path]:
        try:
            if candidate.is_file():
                return path, candidate
        except (OSError, ValueError):
            continue
    return path, None


class CheckpointSpec(_Section):
    """Where and how often training state is saved; ``url`` is resolved by ``JobSpec``."""

    url: str | None = None
    every_s: _Seconds | None = Field(None, validation_alias=_human("every"))
    every_steps: int | None = Field(None, ge=1, le=MAX_INT)
    keep: int = Field(3, ge=1, le=MAX_INT)
    keep_every: int | None = Field(None, ge=1, le=MAX_INT)  # steps: also keep the first checkpoint of every such interval

    @model_validator(mode="after")
    def _one_trigger(self) -> CheckpointSpec:
        if self.every_s is not None and self.every_steps is not None:
            raise _Problem("expected every or every_steps, not both", "both")
        if self.every_s is None and self.every_steps is None:
            self.every_s = DEFAULT_CHECKPOINT_EVERY_S
        if self.every_s is not None and self.every_s <= 0:
            raise _Problem("expected a positive duration", _show(self.every_s), "every")
        return self


class ResourcesSpec(_Section):
    """What to run on and how it is bought."""

    provider: Literal["local", "aws"] = "local"
    instance_types: list[str] = []  # empty: the provider's default (local only)
    nodes: int = Field(1, ge=1, le=MAX_MACHINES)  # instances in the gang; training runs DDP across them
    devices: int = Field(1, ge=1, le=MAX_MACHINES)  # training processes per instance
    gang_timeout_s: _Seconds = Field(600.0, validation_alias=_human("gang_timeout"))  # how long a partial gang waits for the rest
    collective_timeout_s: _Seconds = Field(300.0, validation_alias=_human("collective_timeout"))  # a lost peer ends training after this
    placement_group: str | None = None  # aws: an existing cluster placement group for the gang's instances
    market: MarketChoice = "spot"
    max_restarts_on_errors: int = Field(0, ge=0, le=MAX_INT)

    @property
    def fixed_market(self) -> Market | None:
        """The market every instance is bought in; None with ``auto``, where the deadline policy chooses each time."""
        return None if self.market == "auto" else Market(self.market)

    @field_validator("collective_timeout_s")
    @classmethod
    def _some_patience(cls, value: float) -> float:
        if value <= 0:  # torch would time out every collective at once
            raise _Problem("expected a positive duration such as 5m", _show(value))
        return value

    @model_validator(mode="after")
    def _aws_instance_types(self) -> ResourcesSpec:
        if self.provider == "aws":
            if not self.instance_types:
                raise _Problem("expected at least one EC2 instance type for provider aws, e.g. [g5.xlarge]", "[]", "instance_types")
            for index, instance_type in enumerate(self.instance_types):
                if not _EC2_INSTANCE_TYPE.match(instance_type):
                    raise _Problem("expected an EC2 instance type such as g5.xlarge", _show(instance_type), "instance_types", index)
        return self


class BudgetSpec(_Section):
    """Spend and time limits the controller enforces, and what it needs to forecast before it has measured anything.

    ``expected_runtime`` is how long the training takes uninterrupted on one instance: forecasts
    and the deadline policy use it until the job's own throughput has been measured.
    ``restart_overhead`` is the billed time from an instance's launch to training progress; the
    job's own measurements replace it once an instance has started.
    ``horizon`` is how long a budgeted job's instances keep running when no controller renews
    their spending horizon (a closed laptop): what a job can spend unwatched is one horizon at
    its price, plus the time to checkpoint and stop.
    """

    max_usd: Annotated[float, AfterValidator(check_budget)] | None = None
    horizon_s: _Seconds = Field(300.0, validation_alias=_human("horizon"))
    deadline_at: datetime | None = Field(None, validation_alias=AliasChoices("deadline", "deadline_at"))
    expected_runtime_s: _Seconds | None = Field(None, validation_alias=_human("expected_runtime"))
    restart_overhead_s: _Seconds | None = Field(None, validation_alias=_human("restart_overhead"))

    @field_validator("expected_runtime_s", "horizon_s")
    @classmethod
    def _positive(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise _Problem("expected a positive duration such as 3h", _show(value))
        return value

    @field_validator("deadline_at", mode="before")
    @classmethod
    def _deadline(cls, value: Any, info: ValidationInfo) -> datetime | None:
        if value is None:
            return None
        now = info.context["now"] if info.context is not None else datetime.now(UTC)
        deadline = _deadline_time(value, now)
        if info.context is not None and deadline <= now:
            raise _Problem("expected a deadline in the future", _show(value))
        return deadline


def _deadline_time(value: Any, now: datetime) -> datetime:
    """A time as an aware UTC time: a duration counts from ``now``; an ISO-8601 time needs its timezone and, like a
    duration, lies at most ``MAX_DURATION_S`` from ``now`` (year 9999 is no deadline, and overflows arithmetic)."""
    expected = "expected a duration such as 12h or an ISO-8601 time with a timezone such as 2026-05-01T18:00:00Z"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            try:
                return now + timedelta(seconds=_written_seconds(value))
            except _Problem:
                if not value.strip()[:1].isdigit():  # neither a time nor a duration
                    raise _Problem(expected, _show(value)) from None
                raise
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return now + timedelta(seconds=_written_seconds(value))
    if not isinstance(value, datetime):
        raise _Problem(expected, _show(value.isoformat() if isinstance(value, date) else value))
    if value.utcoffset() is None:
        raise _Problem("expected a timezone on the time, such as Z or +02:00", _show(value.isoformat()))
    if abs(value - now) > timedelta(seconds=MAX_DURATION_S):
        raise _Problem(f"expected a time at most {MAX_DURATION_S / 86400:.0f} days from now", _show(value.isoformat()))
    return value.astimezone(UTC)


class LocalSpec(_Section):
    """The local provider's emulated cloud: injected interruptions and the prices it bills."""

    preempt_every_s: _Seconds = Field(0.0, validation_alias=_human("preempt_every"))  # mean, exponential; 0: never
    notice_s: _Seconds = Field(120.0, validation_alias=_human("notice"))  # EC2 gives two minutes
    seed: int = Field(0, ge=-MAX_INT, le=MAX_INT)
    spot_price: float = Field(0.45, ge=0, le=MAX_PRICE_USD_PER_HOUR)  # USD per hour
    on_demand_price: float = Field(1.006, ge=0, le=MAX_PRICE_USD_PER_HOUR)  # USD per hour
    gpus: int = Field(1, ge=0, le=MAX_MACHINES)  # per emulated instance: what GPU-hours are counted in
    cpus: int = Field(
        1, ge=1, le=MAX_MACHINES
    )  # per emulated instance: its training's torch intra-op threads (instances share this machine)
    # instance type -> how many can run at once; launches beyond get a capacity error
    capacity: dict[str, Annotated[int, Field(ge=0, le=MAX_MACHINES)]] = {}
    spot_trace: str | None = None  # a spot availability trace (`spotrun simulate`'s format): no spot capacity in its 0 ticks
    spot_trace_start: datetime | None = Field(None, validate_default=True)  # when the trace's first tick begins; default: at submission

    @field_validator("spot_trace")
    @classmethod
    def _trace_file(cls, trace: str | None, info: ValidationInfo) -> str | None:
        if trace is None or info.context is None:
            return trace
        _, found = _find_file(trace, info.context["workdir"], info.context["spec_dir"])
        if found is None:
            raise _Problem("expected an existing trace file (relative to the current directory or the spec's)", _show(trace))
        from runner.control.simulate import load_trace  # numpy: only when a spec names a trace

        try:
            load_trace(found)
        except SpecError as error:
            raise _Problem("expected a valid spot availability trace", str(error)) from None
        return str(found.resolve())

    @field_validator("spot_trace_start", mode="before")
    @classmethod
    def _trace_start(cls, value: Any, info: ValidationInfo) -> datetime | None:
        if value is None:
            return info.context["now"] if info.context is not None and info.data.get("spot_trace") else None
        return _deadline_time(value, info.context["now"] if info.context is not None else datetime.now(UTC))

    @model_validator(mode="after")
    def _spot_not_dearer(self) -> LocalSpec:
        if self.spot_price > self.on_demand_price:
            raise _Problem(f"expected at most on_demand_price ({self.on_demand_price})", _show(self.spot_price), "spot_price")
        return self


def _label(longest: int, *, shortest: int = 1) -> AfterValidator:
    """A check of free text that is stored, tagged and printed in tables: its length, and only printable characters
    (PostgreSQL refuses NUL, and a line break or escape code would garble every report that shows it)."""

    def check(text: str) -> str:
        if not shortest <= len(text) <= longest or not text.isprintable():
            raise _Problem(f"expected {shortest} to {longest} printable characters", _show(text))
        return text

    return AfterValidator(check)


class JobSpec(_Section):
    """One job, resolved and self-contained: what the controller schedules and the agent runs."""

    _set_by_spotrun: ClassVar[frozenset[str]] = frozenset({"workdir"})

    name: str
    team: Annotated[str, _label(64)] | None = None  # the ledger's team column holds 64 characters
    tags: dict[Annotated[str, _label(128)], Annotated[str, _label(256, shortest=0)]] = {}  # EC2's limits: every instance carries them
    train: TrainSpec
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    local: LocalSpec | None = None  # always set when provider is local
    workdir: str  # absolute: where `spotrun run` was called; commands run and module references import here

    @field_validator("name")
    @classmethod
    def _dns_label(cls, name: str) -> str:
        if not _NAME.match(name):
            raise _Problem("expected lowercase letters, digits and '-' (not first or last), at most 63 characters", _show(name))
        return name

    @field_validator("tags")
    @classmethod
    def _few_enough(cls, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) > MAX_TAGS:
            raise _Problem(f"expected at most {MAX_TAGS} tags (an EC2 instance carries 50, spotrun's own among them)", f"{len(tags)} tags")
        return tags

    @field_validator("workdir")
    @classmethod
    def _absolute(cls, workdir: str) -> str:
        if not Path(workdir).is_absolute():
            raise _Problem("expected an absolute directory", _show(workdir))
        return workdir

    @model_validator(mode="after")
    def _resolve(self) -> JobSpec:
        if self.resources.provider == "local":
            self.local = self.local or LocalSpec()
        elif self.local is not None:
            raise _Problem(
                f"expected no local section with provider {self.resources.provider} (it configures the local provider only)",
                _show(self.local.model_dump()),
                "local",
            )
        self.checkpoint.url = _checkpoint_url(self.checkpoint.url, self.name, self.resources.provider, Path(self.workdir))
        if "num_nodes" in self.train.trainer:
            raise _Problem(
                "expected resources.nodes (spotrun launches the gang and sets num_nodes)",
                _show(self.train.trainer["num_nodes"]),
                "train",
                "trainer",
                "num_nodes",
            )
        if "devices" in self.train.trainer and self.resources.devices > 1:
            raise _Problem(
                "expected devices in resources.devices only", _show(self.train.trainer["devices"]), "train", "trainer", "devices"
            )
        if self.resources.market == "auto" and self.budget.deadline_at is None:
            raise _Problem(
                "expected budget.deadline with market auto (it chooses spot or on-demand to finish by the deadline)",
                "no deadline",
                "resources",
                "market",
            )
        return self


def stored_form(spec: JobSpec) -> dict[str, Any]:
    """The one serialised form of a spec: what the state store keeps, ``job.json`` holds, launches digest and the train worker reads.

    Every field is written, defaults included, so a reader never depends on this spotrun's defaults.
    """
    return spec.model_dump(mode="json")


def from_stored(data: Any, *, where: str) -> JobSpec:
    """A spec read back from its stored form (no YAML file, no import checks); SpecError naming ``where`` when it is not one."""
    try:
        return JobSpec.model_validate(data)
    except ValidationError as error:
        raise SpecError(f"{where}: the stored job spec does not validate: {_first_problem(error)}") from None


def _checkpoint_url(url: str | None, name: str, provider: str, workdir: Path) -> str:
    """The absolute fsspec URL checkpoints go to; plain paths become ``file://`` URLs relative to ``workdir``."""
    if url is None:
        if provider != "local":
            raise _Problem(f"expected a URL the instances can reach, such as s3://bucket/spotrun/{name}", "nothing", "checkpoint", "url")
        return f"file://{spotrun_home() / 'checkpoints' / name}"
    protocol, separator, rest = url.partition("://")
    if not separator and url.startswith("file:"):  # RFC 8089's file:/abs/path
        protocol, rest = "file", url.removeprefix("file:")
    elif not separator:
        protocol, rest = "file", url
    if protocol == "file":
        host, slash, local = rest.partition("/")
        if separator and host not in ("", "localhost"):  # file://HOST/path: a path on another machine
            raise _Problem("expected a path on this machine, file:///path or file://localhost/path", _show(url), "checkpoint", "url")
        path = _expand("/" + local if separator else rest)
        if provider != "local":
            raise _Problem(
                f"expected a URL the {provider} instances can reach, such as s3://bucket/prefix", _show(url), "checkpoint", "url"
            )
        return f"file://{os.path.normpath(workdir / path)}"
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise _Problem(f"expected a URL with a protocol fsspec knows, {_URL_EXAMPLES}", _show(url), "checkpoint", "url") from None
    except ImportError as error:
        raise _Problem(f"expected a protocol whose fsspec backend is installed ({error})", _show(url), "checkpoint", "url") from None
    if protocol == "memory":
        raise _Problem(
            f"expected storage shared between processes (memory:// lives in one), {_URL_EXAMPLES}", _show(url), "checkpoint", "url"
        )
    if not rest.strip("/"):
        raise _Problem("expected a bucket (and prefix) after the protocol", _show(url), "checkpoint", "url")
    return f"{protocol}://{rest.rstrip('/')}"


def load_spec(path: str | Path, *, workdir: Path | None = None, now: datetime | None = None) -> JobSpec:
    """The validated, resolved job in the YAML file at ``path``; a one-line SpecError on any problem.

    ``workdir`` (default: the current directory) and ``now`` (default: the clock) are what the
    spec is resolved against; tests pass them instead of changing directory or waiting.
    Messages quote what the file says (keys, values, Python's own errors about them), so every
    character that would break the line or control the terminal is shown escaped.
    """
    try:
        return _load_spec(path, workdir=workdir, now=now)
    except SpecError as error:
        text = str(error)
        if text.isprintable():
            raise
        raise SpecError("".join(char if char.isprintable() else repr(char)[1:-1] for char in text)) from error


def _load_spec(path: str | Path, *, workdir: Path | None, now: datetime | None) -> JobSpec:
    source = str(path)
    raw = _read_mapping(Path(path), source)
    if "workdir" in raw:
        raise SpecError(f"{source}: workdir: expected no workdir (spotrun records the directory it runs from), got {_show(raw['workdir'])}")
    workdir = (workdir or Path.cwd()).absolute()
    context = {"workdir": workdir, "spec_dir": Path(path).absolute().parent, "now": now or datetime.now(UTC)}
    try:
        spec = JobSpec.model_validate({**raw, "workdir": str(workdir)}, context=context)
    except ValidationError as error:
        raise SpecError(f"{source}: {_first_problem(error)}") from error
    try:
        _check_code(spec.train, workdir)
    except SpecError as error:
        raise SpecError(f"{source}: {error}") from error
    return spec


def _first_problem(error: ValidationError) -> str:
    """``dotted.field: expected ..., got ...`` for the first error pydantic found, counting the rest."""
    errors = error.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    problem = (first.get("ctx") or {}).get("error")
    if isinstance(problem, _Problem):
        loc += problem.field
        text = f"{problem.expected}, got {problem.got}"
    else:
        text = _pydantic_text(first)
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    where = _dotted(loc)
    return f"{where}: {text}{more}" if where else f"{text}{more}"


def _pydantic_text(error: Any) -> str:
    if error["type"] == "missing":
        return "expected a value (required), got nothing"
    got = _show(error["input"])
    if error["type"] in ("model_type", "dict_type"):
        return f"expected a mapping of keys to values, got {got}"
    message = error["msg"]
    expected = "expected " + message.removeprefix("Input should be ") if message.startswith("Input should be ") else message
    return f"{expected}, got {got}"


def _dotted(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _read_mapping(path: Path, source: str) -> dict[str, Any]:
    """The YAML document at ``path`` as a mapping, with a one-line SpecError for each way that fails."""
    try:
        with path.open("rb") as handle:
            content = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as error:
        raise SpecError(f"{source}: expected a readable job spec file, got {error.strerror or error}") from error
    if len(content) > MAX_SPEC_BYTES:
        raise SpecError(f"{source}: expected a job spec of at most {MAX_SPEC_BYTES} bytes, got a larger file")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as error:
        raise SpecError(f"{source}: expected a UTF-8 YAML file, got undecodable bytes ({error.reason})") from error
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # a SafeLoader subclass
    except _Refused as error:
        raise SpecError(f"{source}: line {error.line}: {error.problem}") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(error, "problem", None) or error
        raise SpecError(f"{source}: {where}expected valid YAML, got {' '.join(str(problem).split())}") from error
    if not isinstance(data, dict):
        got = "an empty file" if data is None else f"a {type(data).__name__} {_show(data)}"
        raise SpecError(f"{source}: expected a mapping of job fields (name:, train:, ...), got {got}")
    return data


class _Refused(yaml.composer.ComposerError):
    """A YAML document too large or too deep to be a job spec; ``problem`` reads ``expected ..., got ...``."""

    def __init__(self, problem: str, mark: yaml.Mark) -> None:
        super().__init__(None, None, problem, mark)
        self.line = mark.line + 1


class _SpecLoader(yaml.SafeLoader):
    """A SafeLoader that rejects duplicate keys (plain YAML keeps the last), and documents that are not a job spec's size.

    Aliases are allowed (``<<: *defaults`` is a common idiom), but counted as what they expand to:
    PyYAML shares the aliased objects, and every later copy (validation, the JSON dump stored and
    sent to the instance) expands them, so a 700-byte "billion laughs" document took gigabytes.
    Each node's expanded size and depth are known once it is composed, so a document is refused
    at the first node past ``MAX_YAML_NODES`` or ``MAX_YAML_DEPTH``, before anything is built.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nesting = 0
        self._expanded: dict[int, tuple[int, int]] = {}  # id of a composed node -> (nodes, depth) with aliases expanded

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]  # untyped in PyYAML's stubs
        if self.check_event(yaml.AliasEvent):
            node = super().compose_node(parent, index)
            if id(node) not in self._expanded:  # still being composed: the alias is inside what it names
                raise _Refused("expected a tree of values, got an alias inside the node it names (a structure that contains itself)", mark)
            return node
        self._nesting += 1
        if self._nesting > MAX_YAML_DEPTH:
            raise _Refused(f"expected lists and mappings nested at most {MAX_YAML_DEPTH} deep, got deeper", mark)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._nesting -= 1
        if node is None:
            return None
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        nodes = 1 + sum(self._expanded[id(child)][0] for child in children)
        depth = 1 + max((self._expanded[id(child)][1] for child in children), default=0)
        if nodes > MAX_YAML_NODES:
            raise _Refused(f"expected at most {MAX_YAML_NODES} values with aliases expanded, got more (an alias bomb?)", mark)
        if depth > MAX_YAML_DEPTH:
            raise _Refused(f"expected lists and mappings nested at most {MAX_YAML_DEPTH} deep with aliases expanded, got deeper", mark)
        self._expanded[id(node)] = (nodes, depth)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's construction, with a scalar its tag cannot hold a YAML error at its line, not a traceback.

        PyYAML's scalar constructors raise what Python does: ValueError for ``2030-13-45T00:00:00Z``
        or an int of 5000 digits, AttributeError for a timestamp its resolver took but its parser
        does not (an offset with seconds, ``+04:27:53``).
        """
        try:
            return super().construct_object(node, deep=deep)
        except yaml.YAMLError:
            raise
        except (ValueError, TypeError, AttributeError, OverflowError) as error:
            kind = node.tag.rsplit(":", 1)[-1]
            raise yaml.constructor.ConstructorError(None, None, f"{_show(node.value)} is no {kind} ({error})", node.start_mark) from None


def _construct_unique_mapping(loader: _SpecLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[str] = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key_node.value!r} (each key may appear once)", key_node.start_mark
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node, deep=deep)


_SpecLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _check_code(train: TrainSpec, workdir: Path) -> None:
    """Import the model and data classes and check every argument the agent will pass them and the Trainer."""
    if train.model is None:
        return  # command mode: the user's script is theirs to run
    import lightning.pytorch as pl  # seconds to import: only when a spec is checked, not for `import runner.spec.job_spec`

    model = load_object(train.model, base=pl.LightningModule, field="train.model", workdir=workdir)
    _check_arguments(model, train.model_args, "train.model_args")
    if train.data is not None:
        data = load_object(train.data, base=pl.LightningDataModule, field="train.data", workdir=workdir)
        _check_arguments(data, train.data_args, "train.data_args")
    elif model.train_dataloader is pl.LightningModule.train_dataloader:
        raise SpecError(f"train.data: expected a LightningDataModule, since {model.__name__} defines no train_dataloader(), got nothing")
    accepted = [name for name in inspect.signature(pl.Trainer.__init__).parameters if name != "self"]
    for key, value in train.trainer.items():
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise SpecError(f"train.trainer.{key}: expected a lightning.Trainer argument{hint}, got unknown argument {key!r}")
        if key == "accumulate_grad_batches" and (type(value) is not int or value < 1):
            # Lightning takes any value here and fails only in the first training step, on the instance.
            raise SpecError(f"train.trainer.accumulate_grad_batches: expected a whole number of batches, 1 or more, got {_show(value)}")
        if key == "callbacks":
            raise SpecError(
                "train.trainer.callbacks: expected callbacks from the model's configure_callbacks() "
                f"(YAML cannot build them; spotrun adds its checkpoint callback), got {_show(value)}"
            )


def _check_arguments(cls: type, arguments: dict[str, Any], field: str) -> None:
    signature = inspect.signature(cls)
    try:
        signature.bind(**arguments)
    except TypeError as error:
        bare = signature.replace(
            parameters=[parameter.replace(annotation=inspect.Parameter.empty) for parameter in signature.parameters.values()],
            return_annotation=inspect.Signature.empty,
        )
        raise SpecError(f"{field}: expected arguments accepted by {cls.__name__}{bare}; {error}") from error
