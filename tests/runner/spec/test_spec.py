"""The job spec: the examples load, and every bad input is one SpecError line naming file, field and expectation."""

from __future__ import annotations

import copy
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fsspec
import pytest
import yaml

from runner.errors import SpecError
from runner.spec.job_spec import DEFAULT_CHECKPOINT_EVERY_S, JobSpec, load_spec
from runner.state.paths import spotrun_home

REPO = Path(__file__).resolve().parents[3]
DIGITS = REPO / "examples" / "digits.py"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)

COMMAND_JOB: dict[str, Any] = {"name": "job", "train": {"command": "python train.py --epochs 5"}}
MODEL_JOB: dict[str, Any] = {
    "name": "job",
    "train": {
        "model": f"{DIGITS}:DigitsClassifier",
        "model_args": {"lr": 0.1},
        "data": f"{DIGITS}:DigitsData",
        "data_args": {"batch_size": 32},
        "trainer": {"max_epochs": 2},
    },
}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """A SPOTRUN_HOME of the test's own."""
    monkeypatch.setenv("SPOTRUN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def job(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """``base`` with sections merged in one level deep; a value of None removes the key."""
    data = copy.deepcopy(base)
    for key, value in sections.items():
        if value is None:
            data.pop(key, None)
        elif isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
            data[key] = {k: v for k, v in data[key].items() if v is not None}
        else:
            data[key] = value
    return data


def write(tmp_path: Path, data: Any, name: str = "job.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def load(tmp_path: Path, data: Any) -> JobSpec:
    return load_spec(write(tmp_path, data), workdir=tmp_path, now=NOW)


def problem(tmp_path: Path, data: Any, *expected: str) -> str:
    """The one-line message loading ``data`` fails with; checks that it names the file and each of ``expected``."""
    path = write(tmp_path, data)
    with pytest.raises(SpecError) as caught:
        load_spec(path, workdir=tmp_path, now=NOW)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for text in expected:
        assert text in message
    assert caught.value.exit_code == 2
    return message


# ------------------------------------------------------------------ examples


def test_demo_spec_loads_resolved(home):
    spec = load_spec(REPO / "examples" / "digits.yaml", workdir=REPO, now=NOW)
    assert spec.name == "digits"
    assert spec.train.model == f"{DIGITS}:DigitsClassifier"
    assert spec.train.data == f"{DIGITS}:DigitsData"
    assert spec.train.seed == 0
    assert spec.workdir == str(REPO)
    assert spec.checkpoint.url == f"file://{home}/checkpoints/digits"
    assert spec.checkpoint.every_s == 15.0 and spec.checkpoint.every_steps is None
    assert spec.resources.provider == "local"
    assert spec.local is not None and spec.local.preempt_every_s == 120.0 and spec.local.notice_s == 5.0 and spec.local.cpus == 1
    assert spec.budget.deadline_at == NOW + timedelta(hours=1)


def test_command_example_loads():
    spec = load_spec(REPO / "examples" / "custom_script" / "job.yaml", workdir=REPO, now=NOW)
    assert spec.train.command is not None and spec.train.command.startswith("python examples/custom_script/train.py")
    assert spec.train.model is None and spec.train.seed is None
    assert spec.checkpoint.every_steps == 500 and spec.checkpoint.every_s is None


def test_defaults(tmp_path, home):
    spec = load(tmp_path, COMMAND_JOB)
    assert spec.checkpoint.url == f"file://{home}/checkpoints/job"
    assert spec.checkpoint.every_s == DEFAULT_CHECKPOINT_EVERY_S and spec.checkpoint.keep == 3
    assert spec.resources.market == "spot" and spec.resources.nodes == 1
    assert spec.local is not None and spec.local.preempt_every_s == 0.0
    assert spec.budget.max_usd is None and spec.budget.deadline_at is None


def test_spotrun_home_defaults_to_dot_spotrun(monkeypatch, tmp_path):
    monkeypatch.delenv("SPOTRUN_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert spotrun_home() == tmp_path / ".spotrun"


# ------------------------------------------------------------ JSON round trip


def test_json_round_trip_needs_no_import_checks(tmp_path):
    model_file = tmp_path / "model.py"
    shutil.copy(DIGITS, model_file)
    relative = {"model": "model.py:DigitsClassifier", "data": "model.py:DigitsData"}
    spec = load(tmp_path, job(MODEL_JOB, train=relative, budget={"deadline": "2h"}))
    model_file.unlink()  # reading back must not look at the file again

    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
    assert JobSpec.model_validate_json(spec.model_dump_json()) == spec
    assert spec.train.model == f"{model_file}:DigitsClassifier" and spec.train.data == f"{model_file}:DigitsData"
    assert spec.budget.deadline_at == NOW + timedelta(hours=2)


def test_json_keeps_seconds(tmp_path):
    spec = load(tmp_path, job(COMMAND_JOB, checkpoint={"every": "90s"}, local={"preempt_every": "2m", "notice": "5s"}))
    dumped = spec.model_dump(mode="json")
    assert dumped["checkpoint"]["every_s"] == 90.0
    assert dumped["local"] == dumped["local"] | {"preempt_every_s": 120.0, "notice_s": 5.0}


# ------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90.0), ("5m", 300.0), ("2h", 7200.0), ("1.5m", 90.0), ("250ms", 0.25), ("1d", 86400.0)]
)
def test_durations(tmp_path, text, seconds):
    assert load(tmp_path, job(COMMAND_JOB, checkpoint={"every": text})).checkpoint.every_s == seconds


@pytest.mark.parametrize("value", [5, 5.0, "5", 1e20])
def test_a_duration_written_without_its_unit_is_refused_unless_zero(tmp_path, value):
    """`every: 5` could mean seconds or minutes; zero is zero in any unit, and stored ``*_s`` fields are seconds by name."""
    problem(
        tmp_path,
        job(COMMAND_JOB, checkpoint={"every": value}),
        "checkpoint.every: expected a duration such as 90s, 5m or 2h",
        f"got {value!r}",
    )
    assert (
        load(
            tmp_path, job(COMMAND_JOB, local={"preempt_every": type(value)(0) if not isinstance(value, str) else "0"})
        ).local.preempt_every_s
        == 0.0
    )
    stored = load(tmp_path, job(COMMAND_JOB, checkpoint={"every": "90s"})).model_dump(mode="json")
    assert JobSpec.model_validate(stored).checkpoint.every_s == 90.0


@pytest.mark.parametrize("text", ["5 minutes", "-3s", "soon", True])
def test_bad_duration(tmp_path, text):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"every": text}), "checkpoint.every: expected a duration such as 90s, 5m or 2h, got")


def test_zero_checkpoint_interval(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"every": "0s"}), "checkpoint.every: expected a positive duration")


def test_deadline_as_iso_time(tmp_path):
    spec = load(tmp_path, job(COMMAND_JOB, budget={"deadline": "2030-01-02T08:00:00+02:00"}))
    assert spec.budget.deadline_at == datetime(2030, 1, 2, 6, 0, tzinfo=UTC)


def test_deadline_as_yaml_timestamp(tmp_path):
    spec = load(tmp_path, "name: job\ntrain: {command: python x.py}\nbudget: {deadline: 2030-01-02T06:00:00Z}\n")
    assert spec.budget.deadline_at == datetime(2030, 1, 2, 6, 0, tzinfo=UTC)


def test_deadline_without_timezone(tmp_path):
    problem(
        tmp_path,
        job(COMMAND_JOB, budget={"deadline": "2030-01-02T08:00:00"}),
        "budget.deadline: expected a timezone",
        "2030-01-02T08:00:00",
    )


def test_deadline_as_bare_date(tmp_path):
    problem(
        tmp_path,
        "name: job\ntrain: {command: python x.py}\nbudget: {deadline: 2030-01-02}\n",
        "budget.deadline: expected a duration such as 12h or an ISO-8601 time",
    )


def test_deadline_in_the_past(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, budget={"deadline": "2029-12-31T00:00:00Z"}), "budget.deadline: expected a deadline in the future")


# ---------------------------------------------------------- checkpoint URLs


def test_default_checkpoint_url_follows_spotrun_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPOTRUN_HOME", str(tmp_path / "elsewhere"))
    assert load(tmp_path, COMMAND_JOB).checkpoint.url == f"file://{tmp_path}/elsewhere/checkpoints/job"


@pytest.mark.parametrize(
    ("url", "resolved"),
    [
        ("ckpts/run1", "file://{tmp}/ckpts/run1"),
        ("/data/ckpts/", "file:///data/ckpts"),
        ("file:///data/x", "file:///data/x"),
        ("file:/data/x", "file:///data/x"),
        ("file://localhost/data/x/", "file:///data/x"),  # RFC 8089's other spellings of one path
    ],
)
def test_plain_paths_become_absolute_file_urls(tmp_path, url, resolved):
    spec = load(tmp_path, job(COMMAND_JOB, checkpoint={"url": url}))
    assert spec.checkpoint.url == resolved.format(tmp=tmp_path)


def test_a_file_url_naming_another_host_is_refused(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"url": "file://fileserver/data/x"}), "checkpoint.url: expected a path on this machine")


def test_s3_url_on_aws(tmp_path):
    spec = load(
        tmp_path, job(COMMAND_JOB, checkpoint={"url": "s3://bucket/runs/"}, resources={"provider": "aws", "instance_types": ["g5.xlarge"]})
    )
    assert spec.checkpoint.url == "s3://bucket/runs"
    assert spec.local is None


def test_unknown_protocol(tmp_path):
    problem(
        tmp_path,
        job(COMMAND_JOB, checkpoint={"url": "ftps3://bucket/x"}),
        "checkpoint.url: expected a URL with a protocol fsspec knows",
        "s3://bucket/prefix",
        "'ftps3://bucket/x'",
    )


def test_protocol_whose_backend_is_missing(tmp_path, monkeypatch):
    def missing(protocol: str):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec, "get_filesystem_class", missing)
    problem(
        tmp_path,
        job(COMMAND_JOB, checkpoint={"url": "s3://bucket/x"}),
        "checkpoint.url: expected a protocol whose fsspec backend is installed (Install s3fs",
    )


def test_memory_url_is_not_shared(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, checkpoint={"url": "memory://x"}), "checkpoint.url: expected storage shared between processes")


def test_aws_needs_an_object_store_url(tmp_path):
    aws = {"provider": "aws", "instance_types": ["g5.xlarge"]}
    problem(tmp_path, job(COMMAND_JOB, resources=aws), "checkpoint.url: expected a URL the instances can reach", "got nothing")
    problem(
        tmp_path,
        job(COMMAND_JOB, resources=aws, checkpoint={"url": "/data/x"}),
        "checkpoint.url: expected a URL the aws instances can reach",
    )


# ------------------------------------------------------------- bad sections


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        (
            {"nmae": "x"},
            ["nmae: expected one of the keys budget, checkpoint, local, name,", "(did you mean name?)", "got unknown key 'nmae'"],
        ),
        ({"train": {"modle": "x.py:M"}}, ["train.modle: expected one of the keys", "(did you mean model?)"]),
        ({"checkpoint": {"every_step": 5}}, ["checkpoint.every_step:", "(did you mean every_steps?)"]),
        ({"name": None}, ["name: expected a value (required), got nothing"]),
        ({"name": "Digits_1"}, ["name: expected lowercase letters, digits and '-'", "got 'Digits_1'"]),
        ({"name": "x" * 64}, ["name: expected lowercase letters"]),
        ({"name": 7}, ["name: expected a valid string, got 7"]),
        ({"tags": {"cost-center": 1234}}, ["tags.cost-center: expected a valid string, got 1234"]),
        ({"checkpoint": {"keep": "3"}}, ["checkpoint.keep: expected a valid integer, got '3'"]),
        ({"checkpoint": {"keep": 0}}, ["checkpoint.keep: expected greater than or equal to 1, got 0"]),
        ({"checkpoint": {"keep_every": 0}}, ["checkpoint.keep_every: expected greater than or equal to 1, got 0"]),
        ({"checkpoint": {"every": "5m", "every_steps": 200}}, ["checkpoint: expected every or every_steps, not both, got both"]),
        ({"checkpoint": ["every", "5m"]}, ["checkpoint: expected a mapping of keys to values, got ['every', '5m']"]),
        ({"resources": {"market": "cheap"}}, ["resources.market: expected 'spot', 'on-demand' or 'auto', got 'cheap'"]),
        ({"resources": {"provider": "gcp"}}, ["resources.provider: expected 'local' or 'aws', got 'gcp'"]),
        ({"resources": {"nodes": 0}}, ["resources.nodes: expected", "greater than or equal to 1", "got 0"]),
        ({"resources": {"max_restarts_on_errors": -1}}, ["resources.max_restarts_on_errors: expected greater than or equal to 0"]),
        ({"resources": {"instance_types": "g5.xlarge"}}, ["resources.instance_types: expected a valid list, got 'g5.xlarge'"]),
        (
            {"resources": {"provider": "aws"}, "checkpoint": {"url": "s3://b/x"}},
            ["resources.instance_types: expected at least one EC2 instance type"],
        ),
        (
            {"resources": {"provider": "aws", "instance_types": ["g5.xlarge", "big gpu"]}, "checkpoint": {"url": "s3://b/x"}},
            ["resources.instance_types[1]: expected an EC2 instance type such as g5.xlarge, got 'big gpu'"],
        ),
        (
            {
                "resources": {"provider": "aws", "instance_types": ["g5.xlarge"]},
                "checkpoint": {"url": "s3://b/x"},
                "local": {"notice": "5s"},
            },
            ["local: expected no local section with provider aws"],
        ),
        ({"local": {"spot_price": -0.1}}, ["local.spot_price: expected greater than or equal to 0, got -0.1"]),
        ({"local": {"on_demand_price": "1.0"}}, ["local.on_demand_price: expected a valid number, got '1.0'"]),
        ({"local": {"spot_price": 2.0, "on_demand_price": 1.0}}, ["local.spot_price: expected at most on_demand_price (1.0), got 2.0"]),
        ({"local": {"seed": True}}, ["local.seed: expected a valid integer, got True"]),
        ({"local": {"cpus": 0}}, ["local.cpus: expected greater than or equal to 1, got 0"]),
        ({"budget": {"max_usd": -5}}, ["budget.max_usd: expected a budget in US dollars above 0 and at most 1,000,000,000, got -5"]),
        ({"budget": {"deadline": "tomorrow"}}, ["budget.deadline: expected a duration such as 12h or an ISO-8601 time"]),
        (
            {"train": {"command": None}},
            ["train: expected exactly one of model (a LightningModule class) or command (your own script), got neither"],
        ),
        ({"train": {"model": "m.py:M"}}, ["train: expected exactly one of model", "got both"]),
        ({"train": {"data": "d.py:D"}}, ["train.data: expected no data with train.command", "got 'd.py:D'"]),
        ({"train": {"model_args": {"lr": 1}}}, ["train.model_args: expected no model_args with train.command"]),
        ({"train": {"trainer": {"max_epochs": 1}}}, ["train.trainer: expected no trainer with train.command"]),
        ({"train": {"seed": 1}}, ["train.seed: expected no seed with train.command"]),
        ({"train": {"command": "python 'unclosed"}}, ["train.command: expected a shell command line (No closing quotation)"]),
        ({"train": {"command": "   "}}, ["train.command: expected a command line such as"]),
        ({"workdir": "/elsewhere"}, ["workdir: expected no workdir (spotrun records the directory it runs from)"]),
    ],
)
def test_bad_input_is_one_line_naming_file_field_and_expectation(tmp_path, sections, expected):
    problem(tmp_path, job(COMMAND_JOB, **sections), *expected)


def test_several_problems_report_the_first_and_count_the_rest(tmp_path):
    message = problem(tmp_path, job(COMMAND_JOB, checkpoint={"keep": "x", "every_steps": "y"}, resources={"nodes": "z"}))
    assert message.endswith("(+2 more)")


# ----------------------------------------------------------------- the file


def test_missing_file(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.yaml: expected a readable job spec file, got No such file or directory"):
        load_spec(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(SpecError, match="expected a readable job spec file, got Is a directory"):
        load_spec(tmp_path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [unclosed\n", "expected valid YAML, got"),
        ("name: a\nname: b\ntrain: {command: x}\n", "line 2: expected valid YAML, got duplicate key 'name'"),
        ("train:\n  command: x\n  command: y\nname: a\n", "line 3: expected valid YAML, got duplicate key 'command'"),
        ("", "expected a mapping of job fields (name:, train:, ...), got an empty file"),
        ("- name: a\n", "expected a mapping of job fields (name:, train:, ...), got a list [{'name': 'a'}]"),
        ("just words\n", "got a str 'just words'"),
    ],
)
def test_not_a_yaml_mapping(tmp_path, text, expected):
    problem(tmp_path, text, expected)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    spec = load(tmp_path, "name: job\ntrain: {command: python x.py}\ncheckpoint:\n  <<: {keep: 2, every: 1m}\n  keep: 5\n")
    assert spec.checkpoint.keep == 5 and spec.checkpoint.every_s == 60.0


# ------------------------------------------------ model references and imports


def test_relative_reference_prefers_the_current_directory(tmp_path):
    (tmp_path / "jobs").mkdir()
    shutil.copy(DIGITS, tmp_path / "model.py")
    shutil.copy(DIGITS, tmp_path / "jobs" / "model.py")
    path = write(tmp_path, job(MODEL_JOB, train={"model": "model.py:DigitsClassifier"}), name="jobs/job.yaml")
    assert load_spec(path, workdir=tmp_path, now=NOW).train.model == f"{tmp_path}/model.py:DigitsClassifier"


def test_relative_reference_falls_back_to_the_spec_directory(tmp_path):
    (tmp_path / "jobs").mkdir()
    shutil.copy(DIGITS, tmp_path / "jobs" / "model.py")
    path = write(tmp_path, job(MODEL_JOB, train={"model": "model.py:DigitsClassifier"}), name="jobs/job.yaml")
    assert load_spec(path, workdir=tmp_path, now=NOW).train.model == f"{tmp_path}/jobs/model.py:DigitsClassifier"


def test_reference_found_nowhere_says_where_it_looked(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"model": "missing.py:Model"}),
        "train.model: expected an existing Python file relative to the current directory",
        f"({tmp_path}) or to the spec's ({tmp_path})",
        "got 'missing.py:Model'",
    )


def test_malformed_reference(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"data": "digits.DigitsData"}),
        "train.data: expected 'path/to/file.py:Class' or 'package.module:Class', got 'digits.DigitsData'",
    )


def test_class_missing_from_the_file(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"model": f"{DIGITS}:Classifier"}),
        "train.model: expected a class Classifier",
        "its LightningModule subclasses: DigitsClassifier",
    )


def test_data_module_given_as_model(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"model": f"{DIGITS}:DigitsData"}),
        "train.model: expected a LightningModule subclass",
        "deriving from LightningDataModule",
    )


def test_model_given_as_data_module(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": f"{DIGITS}:DigitsClassifier"}), "train.data: expected a LightningDataModule subclass")


def test_model_without_data_needs_its_own_loader(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"data": None, "data_args": None}),
        "train.data: expected a LightningDataModule, since DigitsClassifier defines no train_dataloader(), got nothing",
    )


def test_data_args_without_data(tmp_path):
    problem(tmp_path, job(MODEL_JOB, train={"data": None}), "train.data_args: expected no data_args without train.data")


def test_unknown_model_argument(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"model_args": {"learning_rate": 0.1}}),
        "train.model_args: expected arguments accepted by DigitsClassifier(",
        "unexpected keyword argument 'learning_rate'",
    )


def test_unknown_trainer_argument(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"trainer": {"max_epoch": 3}}),
        "train.trainer.max_epoch: expected a lightning.Trainer argument (did you mean max_epochs?), got unknown argument 'max_epoch'",
    )


@pytest.mark.parametrize("value", [0, -2, "three", 2.5, True])
def test_accumulate_grad_batches_is_a_whole_number_of_batches(tmp_path, value):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"trainer": {"accumulate_grad_batches": value}}),
        "train.trainer.accumulate_grad_batches: expected a whole number of batches, 1 or more, got",
    )


def test_trainer_callbacks_come_from_the_model(tmp_path):
    problem(
        tmp_path,
        job(MODEL_JOB, train={"trainer": {"callbacks": ["EarlyStopping"]}}),
        "train.trainer.callbacks: expected callbacks from the model's configure_callbacks()",
    )


def test_valid_model_job(tmp_path):
    spec = load(tmp_path, MODEL_JOB)
    assert spec.train.model_args == {"lr": 0.1} and spec.train.trainer == {"max_epochs": 2}
    assert spec.train.seed == 0


# ------------------------------------------- numbers, durations and times in range

COMMAND_YAML = "name: job\ntrain: {command: python x.py}\n"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("checkpoint: {every: .inf}", "checkpoint.every: expected a duration"),
        ("checkpoint: {every: .nan}", "checkpoint.every: expected a duration"),
        ("checkpoint: {every: 99999999999d}", "checkpoint.every: expected a duration of at most 3650d"),
        ("budget: {deadline: .inf}", "budget.deadline: expected a duration"),
        ("budget: {deadline: 99999999999d}", "budget.deadline: expected a duration of at most 3650d, got '99999999999d'"),
        ("budget: {deadline: '9999-12-31T23:59:59-23:00'}", "budget.deadline: expected a time at most 3650 days from now"),
        ("budget: {expected_runtime: .inf}", "budget.expected_runtime: expected a duration"),
        ("budget: {max_usd: .inf}", "budget.max_usd: expected a finite number, got inf"),
        ("budget: {max_usd: .nan}", "budget.max_usd: expected a finite number, got nan"),
        ("budget: {max_usd: 1.0e+12}", "budget.max_usd: expected a budget in US dollars above 0 and at most 1,000,000,000"),
        ("local: {spot_trace_start: .inf}", "local.spot_trace_start: expected a duration"),
        ("local: {spot_trace_start: 0001-01-01T00:00:00+01:00}", "local.spot_trace_start: expected a time at most 3650 days from now"),
        ("local: {notice: " + "9" * 400 + "s}", "local.notice: expected a duration of at most 3650d"),
        ("local: {on_demand_price: .inf}", "local.on_demand_price: expected a finite number, got inf"),
        ("local: {on_demand_price: 5000.0}", "local.on_demand_price: expected less than or equal to 1000"),
        ("local: {cpus: 100000}", "local.cpus: expected less than or equal to 1024"),
        ("local: {capacity: {g5.xlarge: -1}}", "local.capacity.g5.xlarge: expected greater than or equal to 0, got -1"),
        ("local: {seed: 99999999999999999999}", "local.seed: expected less than or equal to 9223372036854775807"),
        ("resources: {nodes: 100000}", "resources.nodes: expected less than or equal to 1024"),
        ("resources: {collective_timeout: 0s}", "resources.collective_timeout: expected a positive duration"),
        ("checkpoint: {every_steps: 99999999999999999999}", "checkpoint.every_steps: expected less than or equal to 9223372036854775807"),
        ("team: '" + "x" * 65 + "'", "team: expected 1 to 64 printable characters"),
        ('team: "ml\\0research"', "team: expected 1 to 64 printable characters, got 'ml\\x00research'"),
        ('team: "ml\\Lresearch"', "team: expected 1 to 64 printable characters"),
        ("tags: {" + "k" * 129 + ": v}", "expected 1 to 128 printable characters"),
        ("tags: {k: '" + "v" * 257 + "'}", "tags.k: expected 0 to 256 printable characters"),
    ],
)
def test_every_number_duration_and_time_is_finite_and_in_range(tmp_path, section, expected):
    problem(tmp_path, COMMAND_YAML + section + "\n", expected)


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_the_training_seed_is_one_seed_everything_takes(tmp_path, seed):
    problem(tmp_path, job(MODEL_JOB, train={"seed": seed}), "train.seed: expected")


def test_too_many_tags_for_an_instance(tmp_path):
    problem(tmp_path, job(COMMAND_JOB, tags={f"k{index}": "v" for index in range(36)}), "tags: expected at most 35 tags", "got 36 tags")


@pytest.mark.parametrize(
    ("arguments", "where"),
    [
        ("{x: !!binary /w==}", "train.model_args.x"),
        ("{x: [1, {day: 2020-01-01}]}", "train.model_args.x[1].day"),
        ("{x: !!set {a: null}}", "train.model_args.x"),
    ],
)
def test_model_arguments_are_plain_data_the_instance_can_receive(tmp_path, arguments, where):
    text = f"name: job\ntrain: {{model: {DIGITS}:DigitsClassifier, data: {DIGITS}:DigitsData, model_args: {arguments}}}\n"
    problem(tmp_path, text, f"{where}: expected plain data")


# --------------------------------------------------------- YAML that is not a job spec's size

BILLION_LAUGHS = "".join(f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 9)}]\n" for level in range(8))


def test_a_billion_laughs_alias_bomb_is_refused_at_once_and_aliases_within_reason_still_work(tmp_path):
    text = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + BILLION_LAUGHS + COMMAND_YAML
    assert len(text) < 800  # expands to 9**9 values
    problem(tmp_path, text, "line 6: expected at most 100000 values with aliases expanded, got more")
    spec = load(tmp_path, COMMAND_YAML + "checkpoint: {<<: &c {keep: 2, every: 1m}, keep: 4}\ntags: {a: &v x, b: *v}\n")
    assert spec.checkpoint.keep == 4 and spec.checkpoint.every_s == 60.0 and spec.tags == {"a": "x", "b": "x"}


def test_an_alias_inside_what_it_names_is_refused(tmp_path):
    problem(tmp_path, COMMAND_YAML + "tags: &loop [*loop]\n", "line 3: expected a tree of values, got an alias inside the node it names")


@pytest.mark.parametrize("depth", [65, 100_000])
def test_deep_nesting_is_refused(tmp_path, depth):
    problem(
        tmp_path, COMMAND_YAML + "tags: " + "[" * depth + "]" * depth + "\n", "line 3: expected lists and mappings nested at most 64 deep"
    )


def test_a_spec_file_larger_than_any_spec_is_refused(tmp_path):
    problem(tmp_path, COMMAND_YAML + "#" * (1 << 20) + "\n", "expected a job spec of at most 1048576 bytes, got a larger file")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9" * 5000, "line 3: expected valid YAML, got '999"),
        ("2030-13-45T00:00:00Z", "line 3: expected valid YAML, got '2030-13-45T00:00:00Z' is no timestamp"),
    ],
)
def test_a_scalar_its_type_cannot_hold_is_a_yaml_error(tmp_path, value, expected):
    problem(tmp_path, COMMAND_YAML + f"local: {{seed: {value}}}\n", expected)


@pytest.mark.parametrize("target", ["~nosuchuser-spotrun/model.py", "a" * 5000 + ".py"])
def test_a_reference_no_file_can_have_is_a_missing_file(tmp_path, target):
    problem(tmp_path, f'name: job\ntrain: {{model: "{target}:Model"}}\n', "train.model: expected an existing Python file")
